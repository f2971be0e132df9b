"""Evidence overlays: the heat map blended in proportion to the score, boxes drawn, frame kept."""

import cv2
import numpy as np

from pipeline.evidence import overlay


def test_overlay_blends_the_heat_map_by_its_value_and_leaves_cold_pixels_alone():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    before = frame.copy()
    heat = np.zeros((12, 16), np.uint8)
    heat[:, 8:] = 255  # right half hot, left half cold
    out = overlay(frame, heat, [])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, :28], frame[:, :28])  # cold: untouched (away from the ramp)
    hot = cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_JET)[0, 0].astype(float)
    expected = 0.4 * frame[:, 36:].astype(float) + 0.6 * hot
    assert np.abs(out[:, 36:].astype(float) - expected).max() <= 1.0
    assert np.array_equal(frame, before)


def test_overlay_draws_region_boxes_on_a_copy():
    frame = np.zeros((60, 80, 3), np.uint8)
    out = overlay(frame, None, [{"x": 10, "y": 20, "w": 30, "h": 15, "position": "left"}])
    assert not frame.any()  # the caller's frame is not drawn on
    assert tuple(out[20, 25]) == (0, 0, 255)  # the box's top edge, red in BGR
    assert not out[28, 25].any()  # inside the box stays as it was
