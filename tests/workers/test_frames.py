"""Worker-side frame decoding: full-size JPEGs decoded reduced, never below twice the inspection size."""

import cv2
import numpy as np
import pytest

from workers.frames import decode_frame, reduction


@pytest.mark.parametrize(
    ("width", "height", "size", "factor"),
    [
        (1280, 960, 320, 2),
        (1279, 960, 320, 1),  # 639 px after halving: below twice the size, decode in full
        (2560, 1920, 320, 4),
        (4000, 3000, 224, 8),
        (640, 480, 320, 1),
        (300, 200, 320, 1),  # smaller than the inspection size already
        (960, 1280, 320, 2),  # portrait: the longer side counts
    ],
)
def test_reduction_keeps_the_longer_side_at_least_twice_the_inspection_size(
    width: int, height: int, size: int, factor: int
) -> None:
    assert reduction(width, height, size)[0] == factor


def test_decode_frame_reduces_in_the_decoder() -> None:
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    assert decode_frame(jpeg.tobytes(), 640, 480, 160).shape == (240, 320, 3)
    assert decode_frame(jpeg.tobytes(), 640, 480, 320).shape == (480, 640, 3)


@pytest.mark.parametrize("payload", [b"", b"not a jpeg", b"\xff\xd8\xff\xe0 truncated"])
def test_decode_frame_of_bad_bytes_is_none(payload: bytes) -> None:
    assert decode_frame(payload, 640, 480, 320) is None
