"""Flagged areas of a normalised anomaly map as regions with boxes and AnomalyGPT's position words."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

#: AnomalyGPT's 3x3 grid words, indexed [row][column]
POSITION_WORDS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)


@dataclass(frozen=True)
class Region:
    """One connected anomalous area, in the coordinates of the original frame."""

    x: int
    y: int
    w: int
    h: int
    area: float  # fraction of the frame
    peak: float  # highest normalised score inside (0.5 = threshold)
    position: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def scaled(self, sx: float, sy: float, frame_size: tuple[int, int] | None = None) -> Region:
        """The same region on a frame ``sx`` times wider and ``sy`` times taller (e.g. the original),
        kept inside ``frame_size`` = (H, W) when given."""
        height, width = frame_size if frame_size is not None else (None, None)
        x, w = span(self.x, self.w, sx, width)
        y, h = span(self.y, self.h, sy, height)
        return replace(self, x=x, y=y, w=w, h=h)


def span(start: float, length: float, scale: float, limit: int | None = None) -> tuple[int, int]:
    """(start, length) of ``[start, start + length)`` scaled by ``scale`` in whole pixels: the box's
    outer edges, rounded outwards and kept within ``[0, limit)``. Rounding the start and the length
    separately (half to even) let a box end a pixel past the frame (row 428 of a 427-row frame)."""
    a = max(0, math.floor(start * scale + 1e-9))
    b = math.ceil((start + length) * scale - 1e-9)
    if limit is not None:
        a, b = min(a, limit - 1), min(b, limit)
    return a, max(1, b - a)


def position_word(cx: float, cy: float) -> str:
    """The 3x3-grid word for a point given as fractions of width (cx) and height (cy)."""
    col = min(2, max(0, int(cx * 3)))
    row = min(2, max(0, int(cy * 3)))
    return POSITION_WORDS[row][col]


def find_regions(
    norm_map: np.ndarray, frame_size: tuple[int, int], min_area: float, level: float = 0.5
) -> list[Region]:
    """Connected components of ``norm_map >= level`` covering at least ``min_area`` of the frame.

    ``norm_map`` is (h, w) at any resolution; boxes are scaled to ``frame_size`` = (H, W).
    Regions come sorted by peak score, highest first.
    """
    h, w = norm_map.shape
    mask = (norm_map >= level).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sy, sx = frame_size[0] / h, frame_size[1] / w
    ranked: list[tuple[float, Region]] = []
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] / float(h * w) < min_area:
            continue
        component = labels == i
        peak = float(norm_map[component].max())
        # the box hugs the core of the component (above half-way from the threshold to its
        # peak): smoothing and coarse feature levels spread a strong defect's halo wide
        core = component & (norm_map >= (level + peak) / 2)
        ys, xs = np.nonzero(core)
        fx, fw = span(xs.min(), xs.max() - xs.min() + 1, sx, frame_size[1])
        fy, fh = span(ys.min(), ys.max() - ys.min() + 1, sy, frame_size[0])
        ranked.append(
            (
                peak,
                Region(
                    x=fx,
                    y=fy,
                    w=fw,
                    h=fh,
                    area=round(float(core.sum()) / (h * w), 6),
                    peak=round(min(peak, 1.0), 4),
                    position=position_word((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h),
                ),
            )
        )
    # ranked on the unclipped peak: strong defects all reach 1.0 once clipped
    return [r for _, r in sorted(ranked, key=lambda pr: pr[0], reverse=True)]


def describe(regions: list[Region]) -> str:
    """Words for the explainer and the dashboard, e.g. 'top left (2.1% of the image)'."""
    if not regions:
        return "no anomalous region"
    return "; ".join(f"{r.position} ({r.area * 100:.1f}% of the image)" for r in regions)
