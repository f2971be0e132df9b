"""The one interface every backbone implements: a batch of images in, multi-level patch features out."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """A frozen image encoder that returns patch features at several levels (depths).

    ``forward`` takes RGB images as float tensors in [0, 1], shape (B, 3, H, W), and returns one
    feature map per tapped level, each (B, C_i, h_i, w_i). Normalisation to the encoder's own input
    statistics happens inside, so callers never need to know them.
    """

    spec: str = ""
    #: names of the tapped levels, in the order ``forward`` returns them
    levels: tuple[str, ...] = ()
    #: total stride of each level where they differ (CNNs); empty where all share one grid (ViTs)
    level_strides: tuple[int, ...] = ()
    #: the input size the encoder was trained at (square side in pixels)
    default_size: int = 224
    #: H and W must be multiples of this (patch size for ViTs, total stride for CNNs)
    size_multiple: int = 1
    #: True when the encoder only accepts ``default_size`` (ViTs with fixed position embeddings)
    fixed_size: bool = False

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, images: torch.Tensor) -> None:
        """Raise a clear ValueError for input the encoder cannot take."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.spec}: expected (B, 3, H, W) images, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if self.fixed_size and (h, w) != (self.default_size, self.default_size):
            raise ValueError(
                f"{self.spec}: input must be {self.default_size}x{self.default_size}, got {h}x{w}"
            )
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"{self.spec}: input {h}x{w} is not a multiple of {self.size_multiple} pixels")
