"""AnomalyGPT's decoder losses on abnormal-state probability maps: focal (γ = 2) plus dice."""

from __future__ import annotations

import torch

EPS = 1e-6


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean two-class focal loss; ``prob`` is P(abnormal) per pixel, ``target`` 0/1 of the same shape.

    Down-weights the many easy normal pixels so the few anomalous ones drive the projections.
    """
    p = prob.clamp(EPS, 1 - EPS)
    t = target.to(p.dtype)
    loss = -(t * (1 - p) ** gamma * torch.log(p) + (1 - t) * p**gamma * torch.log(1 - p))
    return loss.mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − Dice over the whole batch (as AnomalyGPT's BinaryDiceLoss): rewards overlap, not pixel counts."""
    t = target.to(prob.dtype)
    inter = (prob * t).sum()
    return 1 - (2 * inter + 1) / (prob.sum() + t.sum() + 1)
