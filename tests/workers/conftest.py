"""Shared fixtures for model-side tests: synthetic parts with and without defects."""

import numpy as np
import pytest


def make_part(seed: int, size: tuple[int, int] = (96, 128), defect: str | None = None) -> np.ndarray:
    """A brushed-metal-like BGR image (vertical striations + noise); optionally with a defect."""
    rng = np.random.default_rng(seed)
    h, w = size
    stripes = 120 + 25 * np.sin(np.arange(w) / 2.5 + rng.uniform(0, 6.28))
    img = np.tile(stripes, (h, 1)) + rng.normal(0, 6, (h, w))
    if defect == "hole":  # a dark round blob in the bottom right
        yy, xx = np.mgrid[:h, :w]
        img[(yy - int(h * 0.8)) ** 2 + (xx - int(w * 0.8)) ** 2 < (h // 10) ** 2] = 20
    elif defect == "scratch":  # a bright diagonal line in the top left
        for t in range(h // 3):
            img[5 + t, 5 + t : 8 + t] = 250
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


@pytest.fixture
def part():
    return make_part
