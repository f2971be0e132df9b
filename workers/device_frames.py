"""JPEGs decoded on the inspection device: nvJPEG on a GPU (torchvision), libjpeg on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg


def decode_jpegs(jpegs: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """RGB uint8 (3, H, W) tensors of JPEGs decoded on ``device``: nvJPEG in one batched call on a
    GPU (only the compressed bytes cross to it), libjpeg on a CPU. None for bytes that do not decode.

    A batched call fails as a whole when one JPEG is bad; then each is decoded alone to find it.
    (torchvision 0.29 deprecates its image decoders for TorchCodec's; the CUDA images linewatch
    targets have torchvision and no TorchCodec, so this stays until torchvision drops them.)
    """
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) if j else None for j in jpegs]
    if not data:
        return []
    if all(d is not None for d in data):
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
    out: list[torch.Tensor | None] = []
    for d in data:
        try:
            out.append(None if d is None else decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    return out
