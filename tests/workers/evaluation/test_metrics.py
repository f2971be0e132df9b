"""Metrics against hand-computed values and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.evaluation import metrics
from workers.evaluation.metrics import accuracy_at, aupro, auroc, compute_metrics, f1_max

KNOWN_SCORES = [0.1, 0.4, 0.35, 0.8]
KNOWN_LABELS = [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        (KNOWN_SCORES, KNOWN_LABELS, 0.75),
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfect
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # inverted
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied
        ([0.5, 0.5, 0.2, 0.9], [0, 1, 0, 1], 0.875),  # one tied pair of four counts 1/2
        ([1, 2, 2, 3, 3], [False, True, False, True, True], 5.5 / 6),  # ints, bool labels
        ([[0.1, 0.9], [0.2, 0.3]], [[0, 1], [0, 0]], 1.0),  # maps are flattened
    ],
)
def test_auroc_hand_computed(scores: list, labels: list, expected: float) -> None:
    assert auroc(scores, labels) == pytest.approx(expected)


def _pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    diff = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_auroc_matches_pairwise_definition_with_many_ties(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_CHUNK", chunk)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = rng.integers(0, 12, 400) + 3 * labels  # coarse integers: many ties within and across
    assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)


def test_auroc_with_shared_sorted_negatives_equals_the_whole_set() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 10, 300) + 2 * labels  # ties across both parts
    background = rng.integers(0, 10, 500)
    whole = auroc(np.concatenate([scores, background]), np.concatenate([labels, np.zeros(500, int)]))
    assert auroc(scores, labels, np.sort(background)) == pytest.approx(whole, abs=1e-12)
    positives = labels == 1  # only positives of its own: the shared negatives are all there are
    assert auroc(scores[positives], labels[positives], np.sort(background)) == pytest.approx(
        _pairwise_auroc(
            np.concatenate([scores[positives], background]),
            np.concatenate([labels[positives], np.zeros(500, int)]),
        ),
        abs=1e-12,
    )


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [1, 1], "both classes"),
        ([0.1, 0.2], [0, 0], "both classes"),
        ([0.1, math.nan], [0, 1], "NaN"),
        ([0.1, 0.2, 0.3], [0, 1], "differ in size"),
        ([0.1, 0.2], [0, 2], "0 .normal. or 1"),
    ],
)
def test_auroc_rejects_bad_input(scores: list, labels: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auroc(scores, labels)


@pytest.mark.parametrize(
    ("scores", "labels", "expected_f1", "expected_threshold"),
    [
        (KNOWN_SCORES, KNOWN_LABELS, 0.8, 0.35),  # TP 2, FP 1 (0.4), FN 0
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0, 0.8),
        ([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.8, 0.5),  # splitting the tie would give 1.0
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 2 / 3, 0.5),
        ([0.3, 0.6], [1, 1], 1.0, 0.3),  # no negatives: flag everything
        ([0.9, 0.5, 0.4, 0.3, 0.1], [1, 0, 0, 1, 0], 2 / 3, 0.9),  # equal F1: higher threshold
    ],
)
def test_f1_max_hand_computed(
    scores: list, labels: list, expected_f1: float, expected_threshold: float
) -> None:
    best, threshold = f1_max(scores, labels)
    assert best == pytest.approx(expected_f1)
    assert threshold == expected_threshold


def test_f1_max_matches_brute_force_over_every_threshold() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounded: ties
    brute = 0.0
    for t in np.unique(scores):
        predicted = scores >= t
        tp = np.sum(predicted & (labels == 1))
        brute = max(brute, 2 * tp / (predicted.sum() + labels.sum()))
    best, threshold = f1_max(scores, labels)
    assert best == pytest.approx(brute)
    tp = np.sum((scores >= threshold) & (labels == 1))
    assert 2 * tp / (np.sum(scores >= threshold) + labels.sum()) == pytest.approx(best)


def test_f1_max_needs_a_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        f1_max([0.1, 0.2], [0, 0])


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(0.35, 0.75), (0.5, 0.75), (0.9, 0.5), (0.0, 0.5), (0.8, 0.75)],
)
def test_accuracy_at(threshold: float, expected: float) -> None:
    assert accuracy_at(KNOWN_SCORES, KNOWN_LABELS, threshold) == pytest.approx(expected)


def test_accuracy_counts_a_score_equal_to_the_threshold_as_anomalous() -> None:
    assert accuracy_at([0.5, 0.2], [1, 0], 0.5) == 1.0


def _region(shape: tuple[int, int], *cells: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for cell in cells:
        mask[cell] = True
    return mask


def _case_perfect() -> tuple[list[np.ndarray], list[np.ndarray]]:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True
    return [mask.astype(np.float32)], [mask]


def _case_inverted() -> tuple[list[np.ndarray], list[np.ndarray]]:
    maps, masks = _case_perfect()
    return [1 - maps[0]], masks


def _case_half_region() -> tuple[list[np.ndarray], list[np.ndarray]]:
    # curve (0, 0) -> (0, 0.5) -> (1, 1)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True
    score = np.zeros((10, 10))
    score[2, 2:4] = 1.0
    return [score], [mask]


def _case_constant() -> tuple[list[np.ndarray], list[np.ndarray]]:
    _, masks = _case_perfect()
    return [np.full((10, 10), 0.3)], masks


def _case_graded() -> tuple[list[np.ndarray], list[np.ndarray]]:
    # region A (4 px) at 0.9; region B (6 px) half at 0.7; 18 of 90 normal px at 0.5.
    # curve (0,0) (0,.5) (0,.75) (.2,.75) (1,1)
    mask = np.zeros((10, 10), dtype=bool)
    score = np.zeros((10, 10))
    mask[0:2, 0:2] = True
    score[0:2, 0:2] = 0.9
    mask[7, 2:8] = True
    score[7, 2:5] = 0.7
    score[9, :] = 0.5
    score[5, 0:8] = 0.5
    return [score], [mask]


def _case_regions_weigh_equally() -> tuple[list[np.ndarray], list[np.ndarray]]:
    # a found 4-px region and a missed 16-px one in images of different sizes: PRO 0.5 at t=1
    # (pixel-weighted recall would be 0.2)
    small = _region((8, 8), (0, 0), (0, 1), (1, 0), (1, 1))
    large = np.zeros((6, 10), dtype=bool)
    large[1:5, 3:7] = True
    return [small.astype(float), np.zeros((6, 10))], [small, large]


def _case_eight_connected() -> tuple[list[np.ndarray], list[np.ndarray]]:
    # diagonal neighbours form one 3-px region, so finding (0, 0) gives PRO 1/3 (4-conn: 1/2)
    mask = _region((5, 5), (0, 0), (1, 1), (1, 2))
    return [_region((5, 5), (0, 0)).astype(float)], [mask]


@pytest.mark.parametrize("num_thresholds", [metrics.DEFAULT_PRO_THRESHOLDS, None])
@pytest.mark.parametrize(
    ("case", "fpr_limit", "expected"),
    [
        (_case_perfect, 0.3, 1.0),
        (_case_inverted, 0.3, 0.0),
        (_case_half_region, 0.3, (0.5 + 0.65) / 2),  # interpolated at the limit: 0.65
        (_case_half_region, 1.0, 0.75),
        (_case_constant, 0.3, 0.15),
        (_case_constant, 1.0, 0.5),
        (_case_graded, 0.2, 0.75),
        (_case_graded, 0.3, (0.15 + 0.1 * (0.75 + 0.78125) / 2) / 0.3),
        (_case_graded, 1.0, 0.15 + 0.8 * (0.75 + 1) / 2),
        (_case_regions_weigh_equally, 1.0, 0.75),
        (_case_regions_weigh_equally, 0.3, 0.575),
        (_case_eight_connected, 1.0, (1 / 3 + 1) / 2),
    ],
)
def test_aupro_hand_computed(case, fpr_limit: float, expected: float, num_thresholds: int | None) -> None:
    maps, masks = case()
    result = aupro(maps, masks, fpr_limit=fpr_limit, num_thresholds=num_thresholds)
    assert result == pytest.approx(expected, abs=1e-9)


def test_aupro_binned_is_close_to_exact_on_random_maps() -> None:
    rng = np.random.default_rng(2)
    masks = [rng.random((40, 60)) > 0.97 for _ in range(6)] + [np.zeros((30, 30), dtype=bool)]
    maps = [rng.random(m.shape).astype(np.float32) + 0.5 * m for m in masks]
    exact = aupro(maps, masks, num_thresholds=None)
    assert 0.2 < exact < 0.9  # a non-trivial case
    assert aupro(maps, masks) == pytest.approx(exact, abs=2e-3)


def test_aupro_is_nan_without_defect_regions() -> None:
    assert math.isnan(aupro([np.random.default_rng(3).random((8, 8))], [np.zeros((8, 8))]))


@pytest.mark.parametrize(
    ("maps", "masks", "kwargs", "message"),
    [
        ([np.ones((4, 4))], [np.ones((4, 4))], {}, "normal"),
        ([np.ones((4, 4))], [np.zeros((4, 5))], {}, "same size"),
        ([np.ones((4, 4))], [], {}, "as many maps"),
        ([np.full((4, 4), np.nan)], [np.eye(4)], {}, "NaN"),
        ([np.ones((4, 4))], [np.eye(4)], {"fpr_limit": 0.0}, "fpr_limit"),
        ([np.ones((4, 4))], [np.eye(4)], {"num_thresholds": 1}, "num_thresholds"),
    ],
)
def test_aupro_rejects_bad_input(maps: list, masks: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aupro(maps, masks, **kwargs)


def test_compute_metrics_collects_every_number() -> None:
    maps, masks = _case_half_region()
    good_map = np.zeros((5, 5))
    result = compute_metrics(
        KNOWN_SCORES, KNOWN_LABELS, [*maps, good_map], [*masks, np.zeros((5, 5), dtype=bool)]
    )
    assert result.image_auroc == pytest.approx(0.75)
    assert result.f1_max == pytest.approx(0.8)
    assert result.accuracy == pytest.approx(0.75)  # at the F1-max threshold 0.35
    # 2 of 4 defect pixels at 1, the other 2 tied with all 121 normal pixels at 0
    assert result.pixel_auroc == pytest.approx((2 * 121 + 2 * 121 * 0.5) / (4 * 121))
    assert result.aupro == pytest.approx(0.575)
    assert compute_metrics(KNOWN_SCORES, KNOWN_LABELS, maps, masks, threshold=0.9).accuracy == 0.5
