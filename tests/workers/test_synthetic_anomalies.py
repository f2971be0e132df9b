"""Synthetic anomalies: the mask is where the image changed, and only there."""

import cv2
import numpy as np
import pytest

from workers.evaluation.synthetic import make_part
from workers.evaluation.synthetic_anomalies import KINDS, synthesize


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
