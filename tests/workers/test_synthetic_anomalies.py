"""Synthetic anomalies: the mask is where the image changed, and only there."""

import cv2
import numpy as np
import pytest

from workers.evaluation.surface_defects import SURFACE_KINDS
from workers.evaluation.synthetic import make_part
from workers.evaluation.synthetic_anomalies import (
    KINDS,
    TRAINING_KINDS,
    poisson_patch,
    synthesize,
    synthesize_training,
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_mask_covers_the_change(kind: str, seed: int) -> None:
    image, _ = make_part(seed, size=(120, 160))
    donor, _ = make_part(seed + 100, size=(120, 160))
    out, mask = synthesize(image, [donor], np.random.default_rng(seed), kind)
    assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert 0 < mask.mean() < 0.5
    diff = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert diff[mask].mean() > 5  # inside: visibly changed
    # only the soft edge around the mask changes besides: nothing farther than 25 px
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    assert diff[distance > 25].max(initial=0) <= 1


def test_sizes_follow_the_unit_not_the_image() -> None:
    image, _ = make_part(1, size=(200, 200))
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    _, small = synthesize(image, [image], rng_a, "blob", unit=50)
    _, large = synthesize(image, [image], rng_b, "blob", unit=200)
    assert large.sum() > 4 * small.sum()


def test_unknown_kind_is_named() -> None:
    image, _ = make_part(1)
    with pytest.raises(ValueError, match="unknown synthetic anomaly 'dent'"):
        synthesize(image, [image], np.random.default_rng(0), "dent")


@pytest.mark.parametrize("kind", TRAINING_KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_training_anomaly_masks_are_the_pasted_change(kind: str, seed: int) -> None:
    image, _ = make_part(seed, size=(96, 96))
    donor, _ = make_part(seed + 100, size=(96, 96))
    out, mask = synthesize_training(image, [donor], np.random.default_rng(seed), kind)
    assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert 0 < mask.mean() < 0.3
    diff = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert (diff[~mask] == 0).all()  # nothing changed outside the mask
    assert mask.sum() >= 16 and diff[mask].mean() > 8  # inside: visibly changed
    ys, xs = np.nonzero(mask)  # one pasted place, not scattered specks
    assert np.ptp(ys) < 0.5 * 96 and np.ptp(xs) < 0.5 * 96


def test_poisson_blend_keeps_the_targets_brightness_at_the_border() -> None:
    image = np.full((96, 96, 3), 100, np.uint8)
    donor = np.random.default_rng(0).integers(150, 255, (96, 96, 3)).astype(np.uint8)
    out, mask = poisson_patch(image, donor, np.random.default_rng(1), 96.0)
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    # a cut-paste would put the donor's ~200 next to the target's 100; Poisson matches the edge
    assert abs(float(out[ring].mean()) - 100) < 1 and float(out[mask].mean()) < 150


def test_validation_kinds_are_unchanged_by_the_training_kinds() -> None:
    assert KINDS == ("patch", "blob", "line")
    with pytest.raises(ValueError, match="unknown synthetic anomaly 'poisson'"):
        synthesize(make_part(1)[0], [make_part(2)[0]], np.random.default_rng(0), "poisson")
    with pytest.raises(ValueError, match="unknown training anomaly 'blob'"):
        synthesize_training(make_part(1)[0], [make_part(2)[0]], np.random.default_rng(0), "blob")


@pytest.mark.parametrize("kind", SURFACE_KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_surface_defects_change_the_image_where_the_mask_says(kind: str, seed: int) -> None:
    image, _ = make_part(seed, size=(160, 200))
    out, mask = synthesize(image, [image], np.random.default_rng(seed), kind, unit=150)
    assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert 0 < mask.mean() < 0.6
    diff = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert diff[mask].mean() > 5
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    far = diff[distance > 40]
    # an uneven area's ragged soft outline may leave faint islands; nothing else changes far away
    assert far.max(initial=0) <= (20 if kind == "uneven" else 1)
    assert (far.mean() if far.size else 0) < 1


def test_a_break_reaches_the_border() -> None:
    image, _ = make_part(3, size=(160, 200))
    for seed in range(8):
        _, mask = synthesize(image, [image], np.random.default_rng(seed), "break", unit=150)
        assert mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()


def test_uneven_areas_are_large_and_cracks_thin() -> None:
    image, _ = make_part(4, size=(300, 300))
    _, area = synthesize(image, [image], np.random.default_rng(1), "uneven", unit=300)
    _, line = synthesize(image, [image], np.random.default_rng(1), "crack", unit=300)
    assert area.sum() > 20 * line.sum()
    assert cv2.erode(line.astype(np.uint8), np.ones((5, 5), np.uint8)).sum() == 0
