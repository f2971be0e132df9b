"""Threshold calibration from normal references alone, and score normalisation (threshold -> 0.5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Statistics of normal references, kept with the memory bank so a saved bank carries its threshold.

    ``threshold`` is a raw map value: a frame whose map maximum reaches it is flagged, and a pixel
    that reaches it belongs to a region. ``normal_level`` is the median raw value of normal pixels;
    it anchors 0 of the normalised scale.
    """

    threshold: float
    normal_level: float
    normal_scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.threshold > self.normal_level:
            raise ValueError(
                f"calibration threshold {self.threshold:.4g} must exceed the normal level "
                f"{self.normal_level:.4g}; are the references all identical?"
            )

    @property
    def spread(self) -> float:
        return 2.0 * (self.threshold - self.normal_level)

    def normalize(self, raw: np.ndarray | float, clip: bool = True) -> np.ndarray:
        """Map raw scores linearly so that normal_level -> 0, threshold -> 0.5; clipped to [0, 1].

        Unclipped values (``clip=False``) keep the shape of strong defects for region finding.
        """
        out = 0.5 + (np.asarray(raw, dtype=np.float64) - self.threshold) / self.spread
        return np.clip(out, 0.0, 1.0) if clip else out

    def as_dict(self) -> dict[str, float | list[float]]:
        return {
            "threshold": self.threshold,
            "normal_level": self.normal_level,
            "normal_scores": list(self.normal_scores),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(
            threshold=float(data["threshold"]),
            normal_level=float(data["normal_level"]),
            normal_scores=tuple(float(s) for s in data["normal_scores"]),
        )


#: widening of the threshold beyond the highest leave-one-out score, in units of that score's
#: distance from the normal level: a normal frame may lie as far again from the references as the
#: most unusual reference lies from the others. Few references under-sample normal variation
#: (position jitter, lighting, compression); with 0.25 the demo flagged clean parts whose JPEG
#: differed slightly from the references' (docs/benchmarks.md)
DEFAULT_MARGIN = 1.0
#: where between the highest normal and the median synthetic-defect score the threshold sits
DEFAULT_BETWEEN = 0.5


def calibrate(
    loo_scores: np.ndarray,
    loo_pixel_median: float,
    margin: float = DEFAULT_MARGIN,
    anomaly_scores: np.ndarray | None = None,
    between: float = DEFAULT_BETWEEN,
) -> Calibration:
    """Derive the threshold from leave-one-out scores of the references.

    Each reference was scored against a bank built without it, so its score is what a normal
    frame scores against a slightly smaller bank. Without ``anomaly_scores`` the threshold is the
    highest such score (no reference would be flagged), widened by ``margin`` times the score
    spread to leave room for normal variation the few references do not show.

    With ``anomaly_scores`` (the same held-out references with synthetic defects drawn on them)
    the threshold sits ``between`` of the way from the highest normal score to the median
    defect score: normal frames vary more than a few references show, defects are mostly fainter
    than drawn ones, and the threshold is placed in the gap between the two. It never drops below
    the (typical) highest normal score; with no gap (defects score no higher) the margin rule
    applies.

    "Highest" is ``typical_top``: with three or more scores the single highest is set aside, so
    one reference unlike the others (another lighting, a part that is not good) cannot lift the
    threshold above every defect; ``suspect_references`` names such a reference.
    """
    scores = np.asarray(loo_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("calibration needs at least one leave-one-out score")
    top = typical_top(scores)
    spread = float(top - loo_pixel_median)
    threshold = top + margin * spread
    defects = np.asarray(anomaly_scores if anomaly_scores is not None else [], dtype=np.float64)
    if defects.size and float(np.median(defects)) > top:
        threshold = top + between * (float(np.median(defects)) - top)
    return Calibration(
        threshold=threshold,
        normal_level=float(loo_pixel_median),
        normal_scores=tuple(float(s) for s in scores),
    )


def typical_top(scores: np.ndarray) -> float:
    """The highest leave-one-out score that another reference nearly reaches: the second highest
    of three or more, else the highest. On Magnetic-Tile (k = 4, four references drawn from six
    lighting setups) one reference scored 0.396 against the others' 0.27-0.29; taken as the
    highest, it put the threshold above every test image (docs/benchmarks.md)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    return float(ordered[-2] if ordered.size >= 3 else ordered[-1])


def suspect_references(calibration: Calibration) -> list[int]:
    """Indices of references whose leave-one-out score reaches the threshold: the others do not
    explain them, so they would be flagged as frames. None with a single score (one reference: its
    held-out score compares the halves of one image, not references)."""
    scores = calibration.normal_scores
    return [i for i, s in enumerate(scores) if s >= calibration.threshold] if len(scores) > 1 else []


def suspect_warning(station_id: str, suspects: list[int]) -> str:
    """What the station log and ``linewatch status`` say about ``suspect_references``."""
    return (
        f"station {station_id}: reference(s) {', '.join(str(i + 1) for i in suspects)} (in file-name "
        "order) score at or above the threshold against the others and would be flagged: check that "
        "they show good parts under the station's lighting"
    )


#: the rule for zero-shot stations without references, where nothing normal can be scored: flag
#: where the decoder's own decision says "abnormal", i.e. where the abnormal-state probability
#: (averaged over levels, smoothed, maximum over the frame) reaches one half. With the normal level
#: at 0 the normalised score is that probability itself.
PROBABILITY_CALIBRATION = Calibration(threshold=0.5, normal_level=0.0, normal_scores=())
