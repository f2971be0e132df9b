"""The zero-shot map: per level, patch tokens projected into the text space and compared with the states."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from workers.backbones.openclip import OpenClipBackbone

#: AnomalyGPT's (and CLIP's) logit scale τ
TEMPERATURE = 100.0


def anomaly_probability(patches: torch.Tensor, text: torch.Tensor, tau: float = TEMPERATURE) -> torch.Tensor:
    """``softmax(τ · patch · [t_normal, t_abnormal]ᵀ)[abnormal]`` per patch.

    ``patches`` (..., D) are projected patch tokens (normalised here), ``text`` (2, D) the
    normalised state features. Computed in float32: fp16 logits of ±100 lose the small
    differences that decide the probability.
    """
    logits = tau * F.normalize(patches.float(), dim=-1) @ text.float().T
    return logits.softmax(dim=-1)[..., 1]


class PatchProjection(nn.Module):
    """One level's map from backbone width C into the joint space D: layer norm, then a linear map.

    Initialised from CLIP's own ``ln_post`` and ``proj`` (MaskCLIP/WinCLIP's zero-shot trick), so
    an untrained projection already works and training only has to improve on it.
    """

    def __init__(self, width: int, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, dim))
        nn.init.normal_(self.proj, std=width**-0.5)

    @classmethod
    def from_clip(cls, backbone: OpenClipBackbone) -> PatchProjection:
        visual: Any = backbone.clip.visual
        if visual.proj is None:
            raise ValueError(f"{backbone.spec}: this CLIP model has no image projection")
        width, dim = visual.proj.shape
        out = cls(int(width), int(dim))
        with torch.no_grad():
            out.norm.load_state_dict({k: v.float() for k, v in visual.ln_post.state_dict().items()})
            out.proj.copy_(visual.proj.float())
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens) @ self.proj


class ZeroShotDecoder(nn.Module):
    """Per-level projections plus a station's (2, D) text features: level features in, maps out."""

    def __init__(self, projections: list[PatchProjection], text: torch.Tensor) -> None:
        super().__init__()
        if text.ndim != 2 or text.shape[0] != 2:
            raise ValueError(f"text features must be (2, D) [normal, abnormal], got {tuple(text.shape)}")
        dims = {p.proj.shape[1] for p in projections}
        if dims != {text.shape[1]}:
            raise ValueError(f"projections map into {sorted(dims)} dimensions, the text has {text.shape[1]}")
        self.projections = nn.ModuleList(projections)
        self.text: torch.Tensor
        self.register_buffer("text", F.normalize(text.float(), dim=-1))

    def placed(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ZeroShotDecoder:
        """Projections on ``device`` in ``dtype``; the text stays float32 (fp16 text features err by
        ~1e-3, which τ = 100 turns into a visible shift of the probabilities)."""
        self.projections.to(device=device, dtype=dtype)
        self.text = self.text.to(device=device, dtype=torch.float32)
        return self

    def level_maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Abnormal-state probabilities (B, 1, h, w) per level, from raw (B, C, h, w) backbone maps."""
        if len(feats) != len(self.projections):
            raise ValueError(f"decoder has {len(self.projections)} levels, features have {len(feats)}")
        maps = []
        for level, projection in zip(feats, self.projections, strict=True):
            b, _, h, w = level.shape
            weight = cast(PatchProjection, projection).proj
            tokens = level.flatten(2).transpose(1, 2).to(weight.dtype)  # (B, h*w, C)
            maps.append(anomaly_probability(projection(tokens), self.text).view(b, 1, h, w))
        return maps

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.level_maps(feats)


def default_projections(backbone: OpenClipBackbone) -> list[PatchProjection]:
    """CLIP's final layer norm and projection, one copy per tapped level."""
    return [PatchProjection.from_clip(backbone) for _ in backbone.levels]
