"""Synthetic surface defects after the defect types of ground and pressed parts (magnetic tiles:
blowhole, break, crack, fray, uneven), drawn from what those words describe, not from any test image.

- ``uneven``: a large, soft-edged area of another brightness (a ground surface done unevenly),
  its fine texture partly smoothed away;
- ``break``: a piece missing at an edge or corner, a jagged outline with the dark background behind;
- ``crack``: a long, thin, dark crack that wanders and may branch.

Each returns the drawn image and its mask; sizes are fractions of ``unit`` pixels, as in
``workers/evaluation/synthetic_anomalies.py``.
"""

from __future__ import annotations

import cv2
import numpy as np

SURFACE_KINDS = ("uneven", "break", "crack")


def draw_surface_defect(
    image: np.ndarray, rng: np.random.Generator, kind: str, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    if kind == "uneven":
        return uneven(image, rng, unit)
    if kind == "break":
        return broken_edge(image, rng, unit)
    if kind == "crack":
        return crack(image, rng, unit)
    raise ValueError(f"unknown surface defect {kind!r}; known: {', '.join(SURFACE_KINDS)}")


def _smooth_field(h: int, w: int, rng: np.random.Generator, grain: float) -> np.ndarray:
    """Zero-mean noise smoothed over ``grain`` pixels, scaled to unit standard deviation."""
    small = max(4.0, grain / 4)  # smooth at a quarter of the resolution: large grains stay cheap
    sh, sw = max(2, round(h / small * 4)), max(2, round(w / small * 4))
    field = cv2.GaussianBlur(rng.normal(0, 1, (sh, sw)).astype(np.float32), (0, 0), 4.0)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def uneven(image: np.ndarray, rng: np.random.Generator, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """A large low-frequency area 15-40 % darker or brighter, where the striations also fade."""
    h, w = image.shape[:2]
    radius = unit * rng.uniform(0.15, 0.4)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    stretch = rng.uniform(0.5, 2.0)
    d = np.sqrt(((yy - cy) / radius) ** 2 + ((xx - cx) / (radius * stretch)) ** 2)
    d += 0.35 * _smooth_field(h, w, rng, grain=radius / 2)  # an irregular outline
    alpha = np.clip((1.3 - d) / 0.6, 0, 1)  # 1 inside, a wide soft rim
    gain = rng.uniform(0.6, 0.85) if rng.random() < 0.6 else rng.uniform(1.15, 1.4)
    img = image.astype(np.float32)
    smooth = cv2.GaussianBlur(img, (0, 0), max(1.0, unit * 0.01))
    fade = rng.uniform(0.0, 0.7)  # how much of the fine texture goes
    changed = (img * (1 - fade) + smooth * fade) * gain
    a = alpha[..., None]
    out = np.clip(img * (1 - a) + changed * a, 0, 255).astype(np.uint8)
    return out, alpha >= 0.5


def broken_edge(image: np.ndarray, rng: np.random.Generator, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """A chip out of one side or corner: a jagged polygon filled with dark background."""
    h, w = image.shape[:2]
    depth = unit * rng.uniform(0.05, 0.25)
    span = unit * rng.uniform(0.15, 0.5)
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.4:  # a corner: a jagged triangle
        n = 7
        t = np.linspace(0, 1, n)
        a, b = span * rng.uniform(0.6, 1.0), depth * rng.uniform(1.0, 2.0)
        xs = a * (1 - t) + rng.normal(0, 0.08 * a, n) * (t > 0) * (t < 1)
        ys = b * t + rng.normal(0, 0.08 * b, n) * (t > 0) * (t < 1)
        pts = np.concatenate([[[0, 0]], np.stack([xs, ys], 1)])
        if rng.random() < 0.5:
            pts[:, 0] = w - 1 - pts[:, 0]
        if rng.random() < 0.5:
            pts[:, 1] = h - 1 - pts[:, 1]
    else:  # a bite out of a side: along the side, a jagged inner outline
        n = 9
        t = np.linspace(0, 1, n)
        along = rng.uniform(0, max(1.0, (h if rng.random() < 0.5 else w) - span)) + span * t
        inward = depth * np.sin(np.pi * t) ** rng.uniform(0.5, 1.5) * rng.uniform(0.7, 1.3, n)
        side = int(rng.integers(4))
        if side == 0:
            pts = np.stack([along, inward], 1)
        elif side == 1:
            pts = np.stack([along, h - 1 - inward], 1)
        elif side == 2:
            pts = np.stack([inward, along], 1)
        else:
            pts = np.stack([w - 1 - inward, along], 1)
    cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    out = image.astype(np.float32)
    background = rng.uniform(0, 35) + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - mask  # a thin bright or dark fracture rim
    rim_tone = rng.uniform(150, 255) if rng.random() < 0.5 else rng.uniform(0, 60)
    m = mask.astype(bool)
    out[m] = np.broadcast_to(background, out.shape)[m]
    out[rim.astype(bool)] = 0.5 * out[rim.astype(bool)] + 0.5 * rim_tone
    return np.clip(out, 0, 255).astype(np.uint8), m | rim.astype(bool)


def crack(image: np.ndarray, rng: np.random.Generator, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """A dark crack: a random walk of small steps with a drifting direction, sometimes a branch."""
    h, w = image.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    heading = rng.uniform(0, 2 * np.pi)
    paths: list[tuple[np.ndarray | None, float, float]] = [(start, heading, unit * rng.uniform(0.2, 0.6))]
    if rng.random() < 0.5:  # one branch from somewhere along the way
        paths.append(
            (None, heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), unit * rng.uniform(0.08, 0.25))
        )
    trunk: list[np.ndarray] = []
    for origin, angle, length in paths:
        p = trunk[int(rng.integers(len(trunk)))] if origin is None else origin
        step = max(1.5, unit * 0.01)
        pts = [p]
        for _ in range(max(2, int(length / step))):
            angle += rng.normal(0, 0.35)
            p = p + step * np.array([np.cos(angle), np.sin(angle)])
            pts.append(p)
        if origin is not None:
            trunk = pts
        cv2.polylines(
            alpha,
            [np.array(pts).round().astype(np.int32)],
            False,
            1.0,
            thickness=int(rng.integers(1, 3)),
            lineType=cv2.LINE_AA,
        )
    mask = alpha >= 0.5
    a = (alpha * rng.uniform(0.5, 0.95))[..., None]
    out = image.astype(np.float32) * (1 - a) + rng.uniform(0, 30) * a
    return np.clip(out, 0, 255).astype(np.uint8), mask
