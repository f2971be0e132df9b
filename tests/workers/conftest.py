"""Shared fixtures for model-side tests: synthetic parts with and without defects."""

import numpy as np
import pytest

from workers.evaluation.synthetic import make_part as _make_part


def make_part(seed: int, size: tuple[int, int] = (96, 128), defect: str | None = None) -> np.ndarray:
    return _make_part(seed, size, defect)[0]


@pytest.fixture
def part():
    return make_part
