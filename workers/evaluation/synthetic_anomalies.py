"""Synthetic anomalies on normal images, for validation without test labels (and decoder training).

Three kinds, all drawn on a copy of a normal image with a soft alpha edge: a patch cut from another
normal image at another place and scale, brightened or darkened (in the spirit of the NSA /
cut-paste anomalies AnomalyGPT trains on); a dark or bright blob (hole, inclusion, stain); a thin
crooked line (scratch, crack). The mask is where the defect's shape (its alpha
before opacity) is at least one half; blobs and lines are then drawn at an opacity of 0.3 to 0.9.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

KINDS = ("patch", "blob", "line")


def synthesize(
    image: np.ndarray,
    donors: Sequence[np.ndarray],
    rng: np.random.Generator,
    kind: str | None = None,
    unit: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One anomaly of ``kind`` (random when None) on a copy of BGR uint8 ``image``.

    Sizes are fractions of ``unit`` pixels (default: the image's shorter side); pass one unit for a
    whole data set whose images are crops of different sizes at one camera scale.
    """
    kind = kind or str(rng.choice(KINDS))
    h, w = image.shape[:2]
    unit = float(unit or min(h, w))
    for _ in range(20):  # a line may leave the image: draw again until the anomaly is visible
        out, mask = _draw(image, donors, rng, kind, unit)
        if mask.any():
            return out, mask
    raise ValueError(f"could not place a visible {kind} anomaly on a {w}x{h} image")


def _draw(
    image: np.ndarray, donors: Sequence[np.ndarray], rng: np.random.Generator, kind: str, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    if kind == "patch":
        layer, alpha = _patch(image, donors[int(rng.integers(len(donors)))], rng, unit)
    elif kind == "blob":
        layer, alpha = _blob(h, w, rng, unit)
    elif kind == "line":
        layer, alpha = _line(h, w, rng, unit)
    else:
        raise ValueError(f"unknown synthetic anomaly {kind!r}; known: {', '.join(KINDS)}")
    mask = alpha >= 0.5  # where the defect is, however faint it is drawn
    if kind != "patch":  # faint to clear: real defects are often only a little darker than the surface
        alpha = alpha * float(rng.uniform(0.3, 0.9))
    a = alpha[..., None]
    out = np.clip(image.astype(np.float32) * (1 - a) + layer * a, 0, 255).astype(np.uint8)
    return out, mask


def _tone(rng: np.random.Generator) -> float:
    """Grey level of a blob or line: mostly dark (holes, cracks), sometimes bright (glare, chips)."""
    return float(rng.uniform(0, 40) if rng.random() < 0.7 else rng.uniform(200, 255))


def _patch(
    image: np.ndarray, donor: np.ndarray, rng: np.random.Generator, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """A feathered ellipse cut from ``donor`` at another place and scale, brightened or darkened:
    from a small spot to a region half the image wide (a differently finished area)."""
    h, w = image.shape[:2]
    rh = min(h, max(6, int(unit * rng.uniform(0.08, 0.5))))
    rw = min(w, max(6, int(unit * rng.uniform(0.08, 0.5))))
    y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    zoom = rng.uniform(0.5, 2.0)
    dh, dw = donor.shape[:2]
    sh, sw = min(dh, max(2, int(rh * zoom))), min(dw, max(2, int(rw * zoom)))
    sy, sx = int(rng.integers(0, dh - sh + 1)), int(rng.integers(0, dw - sw + 1))
    patch = cv2.resize(donor[sy : sy + sh, sx : sx + sw], (rw, rh)).astype(np.float32)
    if rng.random() < 0.5:
        patch = patch[::-1].transpose(1, 0, 2) if rh == rw else patch[::-1]
    shift = float(rng.choice([-1, 1]) * rng.uniform(20, 50))
    layer = np.zeros_like(image, dtype=np.float32)
    layer[y : y + rh, x : x + rw] = patch * rng.uniform(0.8, 1.2) + shift
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (x + rw // 2, y + rh // 2), (max(1, rw // 2), max(1, rh // 2)), 0, 0, 360, 1.0, -1)
    return layer, cv2.GaussianBlur(alpha, (0, 0), max(1.0, min(rh, rw) / 10))


def _blob(h: int, w: int, rng: np.random.Generator, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged dark or bright ellipse (hole, inclusion, stain)."""
    radius = min(max(2.0, unit * rng.uniform(0.02, 0.08)), min(h, w) / 3)
    cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
    yy, xx = np.mgrid[:h, :w]
    d = ((yy - cy) / radius) ** 2 + ((xx - cx) / (radius * rng.uniform(0.5, 2.0))) ** 2
    return np.full((h, w, 3), _tone(rng), np.float32), np.clip(1.5 - d, 0, 1).astype(np.float32)


def _line(h: int, w: int, rng: np.random.Generator, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """A thin crooked dark or bright line (scratch, crack)."""
    length = unit * rng.uniform(0.15, 0.5)
    angle = rng.uniform(0, np.pi)
    y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
    t = np.linspace(0, 1, 6)
    ys = y0 + np.sin(angle) * length * t + rng.normal(0, length * 0.05, t.size)
    xs = x0 + np.cos(angle) * length * t + rng.normal(0, length * 0.05, t.size)
    alpha = np.zeros((h, w), np.float32)
    pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(alpha, [pts], False, 1.0, thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_AA)
    return np.full((h, w, 3), _tone(rng), np.float32), alpha
