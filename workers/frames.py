"""Frames as the worker receives them: JPEGs, decoded on the host no larger than inspection needs.

OpenCV only: the dashboard draws its live view with this too and must not load torch (the device
decoder is ``workers.device_frames``)."""

from __future__ import annotations

import cv2
import numpy as np

# libjpeg decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, far cheaper than decoding in full
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def reduction(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(factor, imread flag): the largest JPEG reduction that keeps the longer side at least twice
    ``image_size``. The last step down is the Inspector's area resize: a frame decoded straight to
    the inspection size keeps the decoder's aliasing, which raised normal frames' scores on the
    demo from 0.25-0.32 to 0.34-0.44 of the 0.5 threshold."""
    longer = max(width, height)
    for factor, flag in _REDUCED:
        if longer // factor >= 2 * image_size:
            return factor, flag
    return 1, cv2.IMREAD_COLOR


def decode_frame(jpeg: bytes, width: int, height: int, image_size: int) -> np.ndarray | None:
    """BGR frame of a ``width`` x ``height`` JPEG, reduced while its longer side stays at least
    twice ``image_size``; None when the bytes do not decode."""
    _, flag = reduction(width, height, image_size)
    try:
        return cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
    except cv2.error:  # e.g. an empty payload: OpenCV asserts instead of returning None
        return None
