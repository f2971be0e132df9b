"""Anomaly-map maths shared by every localization mode: fusing levels, smoothing, image score."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fuse_levels(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """AnomalyGPT's ``M = Upsample(mean_i M_i)``: (B, 1, h_i, w_i) maps upsampled to ``size``, averaged."""
    if not maps:
        raise ValueError("no level maps to fuse")
    total = torch.zeros((maps[0].shape[0], 1, *size), dtype=maps[0].dtype, device=maps[0].device)
    for m in maps:
        total += F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return total / len(maps)


def gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-(x**2) / (2 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, 1, H, W) maps with reflected borders; sigma in pixels."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel(sigma, maps.dtype, maps.device)
    r = k.numel() // 2
    # reflect padding needs pad < size; clamp the kernel for tiny maps rather than fail
    r = min(r, maps.shape[-1] - 1, maps.shape[-2] - 1)
    if r < 1:
        return maps
    k = k[k.numel() // 2 - r : k.numel() // 2 + r + 1]
    k = k / k.sum()
    out = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Image-level anomaly score = the map's maximum (the paper's rule), one per batch item."""
    return maps.flatten(1).amax(dim=1)


def self_similarity(feats: torch.Tensor, radius: float) -> torch.Tensor:
    """Per patch, the best cosine to patches of the same image outside a square window.

    ``feats`` are L2-normalised (B, C, h, w); ``radius`` is the window's half-size as a fraction
    of the longer side. A textured surface repeats itself, so a normal patch finds a twin
    elsewhere in its own frame even when the few references lack one; a local defect does not.
    """
    b, _, h, w = feats.shape
    r = max(1, round(radius * max(h, w)))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=feats.device), torch.arange(w, device=feats.device), indexing="ij"
    )
    ys, xs = ys.flatten(), xs.flatten()
    near = ((ys[:, None] - ys[None, :]).abs() <= r) & ((xs[:, None] - xs[None, :]).abs() <= r)
    q = feats.flatten(2)  # (B, C, N)
    sims = torch.bmm(q.transpose(1, 2), q)  # (B, N, N)
    sims.masked_fill_(near, -2.0)
    return sims.amax(dim=2).view(b, 1, h, w)
