"""Regions and AnomalyGPT's position words."""

import numpy as np
import pytest

from workers.regions import describe, find_regions, position_word


@pytest.mark.parametrize(
    ("cx", "cy", "word"),
    [
        (0.1, 0.1, "top left"),
        (0.5, 0.1, "top"),
        (0.9, 0.1, "top right"),
        (0.1, 0.5, "left"),
        (0.5, 0.5, "center"),
        (0.9, 0.5, "right"),
        (0.1, 0.9, "bottom left"),
        (0.5, 0.9, "bottom"),
        (0.9, 0.9, "bottom right"),
        (0.0, 0.0, "top left"),
        (1.0, 1.0, "bottom right"),
        (0.34, 0.66, "center"),
    ],
)
def test_position_words_on_a_3x3_grid(cx, cy, word):
    assert position_word(cx, cy) == word


def test_regions_boxes_scale_to_the_frame_and_small_ones_are_dropped():
    m = np.zeros((30, 60), dtype=np.float32)
    m[2:8, 4:10] = 0.9  # 36 px, top left
    m[20:22, 50:52] = 0.7  # 4 px, bottom right: below min_area
    m[14, 30] = 0.49  # under the level: never a region
    regions = find_regions(m, frame_size=(300, 600), min_area=10 / (30 * 60))
    assert len(regions) == 1
    r = regions[0]
    assert (r.x, r.y, r.w, r.h) == (40, 20, 60, 60)
    assert r.position == "top left"
    assert r.area == pytest.approx(36 / 1800, abs=1e-6)
    assert r.peak == pytest.approx(0.9)


def test_regions_sorted_by_peak_and_described_in_words():
    m = np.zeros((9, 9), dtype=np.float32)
    m[0:2, 0:2] = 0.6
    m[7:9, 7:9] = 0.95
    regions = find_regions(m, (9, 9), min_area=0.0)
    assert [r.position for r in regions] == ["bottom right", "top left"]
    assert describe(regions) == "bottom right (4.9% of the image); top left (4.9% of the image)"
    assert describe([]) == "no anomalous region"


def test_scaled_region_maps_boxes_to_the_original_frame():
    m = np.zeros((30, 40), dtype=np.float32)
    m[10:20, 20:30] = 0.9
    (r,) = find_regions(m, (30, 40), min_area=0.0)
    big = r.scaled(2.0, 3.0)
    assert (big.x, big.y, big.w, big.h) == (40, 30, 20, 30)
    assert (big.position, big.area, big.peak) == (r.position, r.area, r.peak)


@pytest.mark.parametrize(
    ("grid", "frame"), [((56, 80), (427, 640)), ((47, 63), (375, 500)), ((10, 3), (31, 10))]
)
def test_boxes_stay_inside_the_frame_and_cover_the_region(grid, frame):
    """A region reaching the map's bottom right corner ends at the frame's last pixel, not one past
    it (rounding start and length separately gave y + h = 428 in a 427-row frame)."""
    h, w = grid
    m = np.zeros(grid, dtype=np.float32)
    m[h // 2 :, w // 2 :] = 1.0
    (r,) = find_regions(m, frame, min_area=0.0)
    assert (r.x + r.w, r.y + r.h) == (frame[1], frame[0])
    # the box covers the cells' full extent in the frame
    assert r.x <= (w // 2) * frame[1] / w and r.y <= (h // 2) * frame[0] / h
    big = r.scaled(3.0, 3.0, (frame[0] * 3 - 1, frame[1] * 3 - 1))
    assert (big.x + big.w, big.y + big.h) == (frame[1] * 3 - 1, frame[0] * 3 - 1)
