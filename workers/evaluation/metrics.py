"""Anomaly-detection metrics (AUROC, F1-max, accuracy, AUPRO) in vectorised numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

#: positives per ``searchsorted`` call in ``auroc``: bounds its int64 temporaries to 2 x 8 MiB
_CHUNK = 1 << 20
#: default AUPRO threshold count; binning costs the same for any count, so more is only more exact
DEFAULT_PRO_THRESHOLDS = 1000


@dataclass(frozen=True)
class Metrics:
    """Headline numbers of one evaluation run; each in [0, 1], nan where undefined."""

    image_auroc: float
    pixel_auroc: float
    aupro: float
    #: image-level best F1 over all thresholds
    f1_max: float
    #: image-level accuracy at the given threshold, or at the F1-max threshold when none was given
    accuracy: float


def _validated(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flatten scores and labels; return (scores, labels as bool) or raise ValueError."""
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.size} vs {y.size}")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    if s.dtype.kind == "f" and np.isnan(s).any():
        # NaN sorts after every number, so it would silently count as the most anomalous score
        raise ValueError("scores contain NaN")
    if y.dtype != np.bool_:
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
        y = y.astype(bool)
    return s, y


def _sorted_by_class(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (sorted negative scores, sorted positive scores)."""
    s, y = _validated(scores, labels)
    neg, pos = s[~y], s[y]  # boolean indexing copies, so sorting in place leaves the caller's data
    neg.sort()
    pos.sort()
    return neg, pos


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike, sorted_negatives: np.ndarray | None = None) -> float:
    """Area under the ROC curve, exact, with ties counted as half (Mann-Whitney U, average ranks).

    Positive and negative scores are sorted separately and each positive is located among the
    negatives by binary search, so no argsort of the whole array is needed. Extra memory: one copy
    of the scores (n x itemsize, e.g. 200 MB for 50M float32), a few n-byte boolean temporaries
    for validation and 16 MiB of chunk temporaries. Raises ValueError with only one class present.

    ``sorted_negatives`` (ascending) are further negative scores counted with those of ``scores``:
    many comparisons against one shared background (e.g. every normal image's pixels) sort it once.
    """
    neg, pos = _sorted_by_class(scores, labels)
    shared = np.empty(0, neg.dtype) if sorted_negatives is None else np.asarray(sorted_negatives).ravel()
    n_neg = neg.size + shared.size
    if n_neg == 0 or pos.size == 0:
        raise ValueError(f"AUROC needs both classes; got {pos.size} positive, {n_neg} negative")
    twice_u = _twice_u(neg, pos) + _twice_u(shared, pos)
    return twice_u / (2 * pos.size * n_neg)


def _twice_u(neg: np.ndarray, pos: np.ndarray) -> int:
    """Twice the Mann-Whitney U of ``pos`` against sorted ``neg``: 'left' counts negatives strictly
    below a positive, 'right' those <= it; their sum is 2 per won pair and 1 per tied pair. Python
    ints cannot overflow."""
    twice_u = 0
    if neg.size == 0:
        return twice_u
    for start in range(0, pos.size, _CHUNK):
        chunk = pos[start : start + _CHUNK]
        twice_u += int(np.searchsorted(neg, chunk, "left").sum())
        twice_u += int(np.searchsorted(neg, chunk, "right").sum())
    return twice_u


def f1_max(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold giving it (anomalous means score >= threshold).

    Thresholds are distinct score values, so tied scores are never split between the classes.
    Among equally good thresholds the highest (fewest alarms) is returned. Raises ValueError when
    there are no positives (F1 is then 0 at every threshold).
    """
    neg, pos = _sorted_by_class(scores, labels)
    if pos.size == 0:
        raise ValueError("F1 needs at least one positive label")
    # The optimum is always at a positive's score: raising the threshold from just above one
    # positive score up to the next keeps the true positives and can only drop false positives.
    distinct = pos[np.concatenate(([True], pos[1:] != pos[:-1]))][::-1]  # descending
    tp = pos.size - np.searchsorted(pos, distinct, "left")
    fp = neg.size - np.searchsorted(neg, distinct, "left")
    f1 = 2 * tp / (tp + fp + pos.size)  # 2TP / (2TP + FP + FN), with TP + FN = all positives
    best = int(np.argmax(f1))
    return float(f1[best]), float(distinct[best])


def accuracy_at(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> float:
    """Fraction of samples classified correctly when anomalous means score >= threshold."""
    s, y = _validated(scores, labels)
    if s.size == 0:
        raise ValueError("accuracy needs at least one sample")
    return float(np.count_nonzero((s >= threshold) == y) / s.size)


def _checked_pairs(
    maps: Sequence[npt.ArrayLike], masks: Sequence[npt.ArrayLike]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (map, bool mask) pairs, or raise ValueError for mismatched or invalid input."""
    if len(maps) != len(masks) or not maps:
        raise ValueError(f"need as many maps as masks, at least one: got {len(maps)}, {len(masks)}")
    pairs = []
    for i, (m, g) in enumerate(zip(maps, masks, strict=True)):
        score_map, mask = np.asarray(m), np.asarray(g)
        if mask.dtype != np.bool_:  # bool masks are used as given: a copy of all would be n bytes
            mask = mask > 0
        if score_map.ndim != 2 or score_map.shape != mask.shape:
            raise ValueError(
                f"image {i}: map {score_map.shape} and mask {mask.shape} must be 2-D "
                "and the same size (resize the mask with nearest-neighbour)"
            )
        if score_map.dtype.kind == "f" and np.isnan(score_map).any():
            raise ValueError(f"image {i}: map contains NaN")
        pairs.append((score_map, mask))
    return pairs


def _region_weights(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """For each defect pixel (in ravel order) 1 / the area of its region; and the region count."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    # 1/area per pixel: a fully covered region adds 1 whatever its size, so small defects weigh
    # as much as large ones (the point of PRO over pixel-wise recall). The background (label 0)
    # may have area 0 but is never looked up, so clamping it only avoids a division warning.
    weight = 1.0 / np.maximum(stats[:, cv2.CC_STAT_AREA], 1).astype(np.float64)
    return weight[labels.ravel()[mask.ravel()]], count - 1


def _binned_counts(
    pairs: list[tuple[np.ndarray, np.ndarray]], num_thresholds: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Normal pixels and summed region weights at or above each threshold (highest threshold
    first) for evenly spaced thresholds over the score range; and the region count."""
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2 or None, got {num_thresholds}")
    lo = min(float(m.min()) for m, _ in pairs)
    hi = max(float(m.max()) for m, _ in pairs)
    # A pixel's bin (index of the highest threshold <= it) by arithmetic, ~10x faster than
    # searchsorted; rounding is monotone, so equal scores share a bin and order is kept.
    scale = (num_thresholds - 1) / (hi - lo) if hi > lo else 0.0
    normal = np.zeros(num_thresholds, dtype=np.int64)
    region = np.zeros(num_thresholds, dtype=np.float64)
    n_regions = 0
    for score_map, mask in pairs:
        bins = np.clip(((score_map - lo) * scale).astype(np.intp), 0, num_thresholds - 1).ravel()
        flat = mask.ravel()
        if not flat.any():
            normal += np.bincount(bins, minlength=num_thresholds)
            continue
        weights, count = _region_weights(mask)
        normal += np.bincount(bins[~flat], minlength=num_thresholds)
        region += np.bincount(bins[flat], weights=weights, minlength=num_thresholds)
        n_regions += count
    return np.cumsum(normal[::-1]), np.cumsum(region[::-1]), n_regions


def _exact_counts(
    pairs: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, int]:
    """As ``_binned_counts``, with every distinct score as a threshold."""
    normal_parts, region_parts, weight_parts, n_regions = [], [], [], 0
    for score_map, mask in pairs:
        flat, scores = mask.ravel(), score_map.ravel()
        normal_parts.append(scores[~flat])
        if flat.any():
            weights, count = _region_weights(mask)
            region_parts.append(scores[flat])
            weight_parts.append(weights)
            n_regions += count
    if n_regions == 0:
        return np.zeros(1), np.zeros(1), 0
    normal = np.concatenate(normal_parts)
    del normal_parts  # the per-image copies would otherwise double the peak memory
    normal.sort()
    region = np.concatenate(region_parts)
    order = np.argsort(region)
    region = region[order]
    cum_weight = np.concatenate(([0.0], np.cumsum(np.concatenate(weight_parts)[order])))
    distinct = np.concatenate((normal, region))
    distinct.sort()
    distinct = distinct[np.concatenate(([True], distinct[1:] != distinct[:-1]))]
    # queried in ascending order (searchsorted is fastest so), reversed to highest first
    normal_ge = normal.size - np.searchsorted(normal, distinct, "left")
    region_ge = cum_weight[-1] - cum_weight[np.searchsorted(region, distinct, "left")]
    return normal_ge[::-1], region_ge[::-1], n_regions


def _area_to(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoid area under pro(fpr) for fpr in [0, limit], interpolating linearly at the limit."""
    n = int(np.searchsorted(fpr, limit, "right"))  # points with fpr <= limit (fpr ascends)
    x, y = fpr[:n], pro[:n]
    if n < fpr.size and x[-1] < limit:
        t = (limit - fpr[n - 1]) / (fpr[n] - fpr[n - 1])
        x = np.append(x, limit)
        y = np.append(y, pro[n - 1] + t * (pro[n] - pro[n - 1]))
    # written out because np.trapezoid is numpy >= 2 and np.trapz is gone from it
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def aupro(
    maps: Sequence[npt.ArrayLike],
    masks: Sequence[npt.ArrayLike],
    fpr_limit: float = 0.3,
    num_thresholds: int | None = DEFAULT_PRO_THRESHOLDS,
) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec-AD AUPRO).

    Regions are the 8-connected components of each ground-truth mask. At each threshold, PRO is
    the mean over all regions of all images of (region pixels with score >= threshold) / (region
    area), and FPR is the fraction of all non-defect pixels (of every image) at or above it. The
    curve starts at (0, 0), is integrated by trapezoids over FPR in [0, fpr_limit], interpolated at
    the limit, and divided by fpr_limit: a perfect map scores 1.0, a constant one fpr_limit / 2.

    ``num_thresholds`` evenly spaced thresholds over the global score range are evaluated with one
    histogram per image (time linear in pixels, memory of one image at a time). ``None`` uses
    every distinct score, exactly as the MVTec evaluation script: it sorts all pixels at once and
    needs about 3 copies of all maps plus 16 bytes per distinct score (about 2 GB for 650 float32
    maps of 300x400). Maps may differ in size between images; each mask must match its map.

    Returns nan when the masks contain no defect pixels; raises ValueError when they contain no
    normal pixels or the input is malformed.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    pairs = _checked_pairs(maps, masks)
    if num_thresholds is None:
        normal_ge, region_ge, n_regions = _exact_counts(pairs)
    else:
        normal_ge, region_ge, n_regions = _binned_counts(pairs, num_thresholds)
    if n_regions == 0:
        return math.nan
    n_normal = int(normal_ge[-1])  # every pixel is at or above the lowest threshold
    if n_normal == 0:
        raise ValueError("AUPRO needs normal (non-defect) pixels to measure false positives")
    fpr = np.concatenate(([0.0], normal_ge / n_normal))
    pro = np.concatenate(([0.0], region_ge / n_regions))
    return _area_to(fpr, pro, fpr_limit) / fpr_limit


def compute_metrics(
    image_scores: npt.ArrayLike,
    image_labels: npt.ArrayLike,
    maps: Sequence[npt.ArrayLike],
    masks: Sequence[npt.ArrayLike],
    threshold: float | None = None,
) -> Metrics:
    """All headline metrics of one test set; maps and masks in the same order as the scores.

    Without ``threshold`` the accuracy is taken at the F1-max threshold, which is tuned on the test
    set itself and therefore optimistic; pass the calibrated threshold for an honest figure.
    """
    image_auc = auroc(image_scores, image_labels)
    best_f1, best_threshold = f1_max(image_scores, image_labels)
    accuracy = accuracy_at(image_scores, image_labels, best_threshold if threshold is None else threshold)
    pairs = _checked_pairs(maps, masks)
    has_defect_pixels = any(mask.any() for _, mask in pairs)
    pixel_auc = math.nan
    if has_defect_pixels:
        pixel_auc = auroc(
            np.concatenate([m.ravel() for m, _ in pairs]),
            np.concatenate([g.ravel() for _, g in pairs]),
        )
    return Metrics(
        image_auroc=image_auc,
        pixel_auroc=pixel_auc,
        aupro=aupro([m for m, _ in pairs], [g for _, g in pairs]),
        f1_max=best_f1,
        accuracy=accuracy,
    )
