"""Patch descriptors: backbone features with local neighbourhood aggregation, L2-normalised per level."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workers.backbones.base import Backbone


class PatchEmbedder(nn.Module):
    """Turns images into per-level patch descriptors ready for cosine comparison.

    A ``pool`` x ``pool`` average over each patch's neighbourhood (PatchCore's local aggregation)
    makes descriptors tolerant of small shifts between a frame and the references.
    """

    def __init__(self, backbone: Backbone, pool: int = 3) -> None:
        super().__init__()
        if pool < 1 or pool % 2 == 0:
            raise ValueError(f"pool must be an odd size >= 1, got {pool}")
        self.backbone = backbone
        self.pool = pool

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.describe(self.backbone(images))

    def describe(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Descriptors from raw backbone maps: lets one backbone pass feed the bank and the decoder."""
        out = []
        for feats in levels:
            if self.pool > 1:
                feats = F.avg_pool2d(
                    feats, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False
                )
            out.append(F.normalize(feats, dim=1))
        return out
