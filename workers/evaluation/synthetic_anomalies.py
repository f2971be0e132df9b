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

from workers.evaluation.surface_defects import SURFACE_KINDS, draw_surface_defect

KINDS = ("patch", "blob", "line")
#: the validation split's "surface" mix: the three kinds above and the surface defects of
#: workers/evaluation/surface_defects.py (uneven areas, broken edges, cracks)
SURFACE_MIX = KINDS + SURFACE_KINDS


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
    if kind in SURFACE_KINDS:
        return draw_surface_defect(image, rng, kind, unit)
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


#: kinds ``linewatch train-decoder`` learns from (NSA-style Poisson-blended patches, noise-shaped
#: textures); kept apart from KINDS so that the validation split stays as it was and measures
#: anomalies the decoder was not trained on
TRAINING_KINDS = ("poisson", "texture")
#: a pixel belongs to a blended anomaly when the blend changed its 5x5 neighbourhood by more than
#: this on average (0-255 scale, largest channel): NSA's rule that the label follows what the blend
#: actually altered, not the pasted shape
BLEND_CHANGE = 8
#: fewer changed pixels than a 4x4 square is no anomaly worth learning from: draw again
MIN_MASK_PIXELS = 16


def synthesize_training(
    image: np.ndarray,
    donors: Sequence[np.ndarray],
    rng: np.random.Generator,
    kind: str | None = None,
    unit: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One training anomaly of ``kind`` (random from TRAINING_KINDS when None) on a copy of ``image``."""
    kind = kind or str(rng.choice(TRAINING_KINDS))
    if kind not in TRAINING_KINDS:
        raise ValueError(f"unknown training anomaly {kind!r}; known: {', '.join(TRAINING_KINDS)}")
    h, w = image.shape[:2]
    unit = float(unit or min(h, w))
    for _ in range(50):  # a blend may come out invisible (donor like the target): draw again
        if kind == "poisson":
            out, mask = poisson_patch(image, donors[int(rng.integers(len(donors)))], rng, unit)
        else:
            out, mask = texture_patch(image, rng, unit)
        if mask.sum() >= MIN_MASK_PIXELS:
            return out, mask
    raise ValueError(f"could not place a visible {kind} anomaly on a {w}x{h} image")


def poisson_patch(
    image: np.ndarray, donor: np.ndarray, rng: np.random.Generator, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """NSA: a region of ``donor``, rescaled, maybe turned or mirrored, its contrast changed,
    Poisson-blended (``cv2.seamlessClone``) into ``image`` at another place. The blend keeps the
    donor's texture but matches the target's brightness at the border, so the anomaly has no easy
    edge; the mask is where the blend changed the image visibly, inside the pasted shape."""
    h, w = image.shape[:2]
    rh = min(h - 4, max(6, int(unit * rng.uniform(0.1, 0.4))))
    rw = min(w - 4, max(6, int(unit * rng.uniform(0.1, 0.4))))
    zoom = rng.uniform(0.4, 2.5)
    turn = rng.random() < 0.5  # a quarter turn: the donor's grain runs across the target's
    donor = donor.transpose(1, 0, 2) if turn else donor
    dh, dw = donor.shape[:2]
    sh, sw = min(dh, max(2, int(rh * zoom))), min(dw, max(2, int(rw * zoom)))
    sy, sx = int(rng.integers(0, dh - sh + 1)), int(rng.integers(0, dw - sw + 1))
    patch = cv2.resize(donor[sy : sy + sh, sx : sx + sw], (rw, rh), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    # contrast survives Poisson blending (a constant brightness shift would not): flatter or harsher
    gain = rng.uniform(0.2, 0.5) if rng.random() < 0.3 else rng.uniform(1.5, 3.0)
    mean = patch.mean(axis=(0, 1))
    patch = np.clip((patch.astype(np.float32) - mean) * gain + mean, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:rh, :rw]
    inside = ((yy - (rh - 1) / 2) / (rh / 2 - 1)) ** 2 + ((xx - (rw - 1) / 2) / (rw / 2 - 1)) ** 2 <= 1
    shape = inside.astype(np.uint8) * 255  # cv2.ellipse leaves holes in fills this small
    # seamlessClone puts the mask's bounding box at centre - size // 2 and needs it strictly inside
    bx, by, bw, bh = cv2.boundingRect(shape)
    cy = int(rng.integers(bh // 2 + 1, h - (bh - bh // 2)))
    cx = int(rng.integers(bw // 2 + 1, w - (bw - bw // 2)))
    out = cv2.seamlessClone(np.ascontiguousarray(patch), image, shape, (cx, cy), cv2.NORMAL_CLONE)
    pasted = np.zeros((h, w), bool)
    y0, x0 = cy - bh // 2, cx - bw // 2
    pasted[y0 : y0 + bh, x0 : x0 + bw] = inside[by : by + bh, bx : bx + bw]
    return _changed(image, out, pasted)


def texture_patch(image: np.ndarray, rng: np.random.Generator, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM-like: a shape cut from thresholded smooth noise, filled with a noise texture of its own
    grain, brightness and contrast, mixed in at an opacity of 0.5 to 1."""
    h, w = image.shape[:2]
    size = max(8, int(unit * rng.uniform(0.15, 0.45)))
    shape = _smooth_noise(size, size, rng, grain=rng.uniform(2, 5)) > rng.uniform(0.1, 0.4)
    texture = _smooth_noise(size, size, rng, grain=rng.uniform(1, 4))
    level, contrast = rng.uniform(20, 235), rng.uniform(20, 80)
    layer = np.clip(level + contrast * texture, 0, 255)[..., None]
    y, x = int(rng.integers(0, max(1, h - size))), int(rng.integers(0, max(1, w - size)))
    sh, sw = min(size, h - y), min(size, w - x)
    mask = np.zeros((h, w), bool)
    mask[y : y + sh, x : x + sw] = shape[:sh, :sw]
    out = image.astype(np.float32)
    beta = rng.uniform(0.5, 1.0)
    region = out[y : y + sh, x : x + sw]
    blended = region * (1 - beta) + layer[:sh, :sw] * beta
    region[shape[:sh, :sw]] = blended[shape[:sh, :sw]]
    return _changed(image, np.clip(out, 0, 255).astype(np.uint8), mask)


def _smooth_noise(h: int, w: int, rng: np.random.Generator, grain: float) -> np.ndarray:
    """Zero-mean, unit-ish noise smoothed over ``grain`` pixels (a cheap stand-in for Perlin noise)."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), grain)
    return noise / max(float(noise.std()), 1e-6)


def _changed(image: np.ndarray, out: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The anomaly mask from the blend itself: pixels inside ``where`` around which the blend changed
    the image visibly on average (a blended texture changes sign from stripe to stripe, so single
    pixels say little), holes closed. Pixels outside the mask are reset: the label is the change."""
    diff = np.abs(out.astype(np.float32) - image.astype(np.float32)).max(axis=2)
    local = cv2.blur(diff, (5, 5))
    mask = ((local > BLEND_CHANGE) & where).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel) > 0
    mask &= where
    result = image.copy()
    result[mask] = out[mask]
    return result, mask
