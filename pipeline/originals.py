"""Recent camera frames at their original size, kept in capture's memory for flagged frames' evidence.

Frames travel to the workers at the inspection size (a fraction of the encode and decode work of
a full-size JPEG); the original of a frame is encoded only if a worker flags it. The buffer is
bounded in bytes, oldest out first; a flag that arrives after its frame left gets the
inspection-size evidence instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np


def inspection_size(width: int, height: int, longer_side: int) -> tuple[int, int]:
    """(width, height) with the longer side at most ``longer_side``, aspect kept; never enlarged."""
    longer = max(width, height)
    if longer <= longer_side:
        return width, height
    scale = longer_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def downsize(frame: np.ndarray, longer_side: int) -> np.ndarray:
    """The frame area-resized to ``inspection_size`` (the frame itself when small enough)."""
    h, w = frame.shape[:2]
    size = inspection_size(w, h, longer_side)
    if size == (w, h):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


Original = np.ndarray | bytes  # the decoded frame, or the camera's own JPEG of it (MJPEG sources)


def _size(original: Original) -> int:
    return len(original) if isinstance(original, bytes) else original.nbytes


class OriginalFrames:
    """seq -> original frame for the most recent frames, at most ``max_bytes`` in all (thread-safe:
    the capture's reader thread adds, its evidence task on the event loop takes). An original is
    the decoded frame or, from an MJPEG camera, its JPEG: some 30 times smaller, and sent as it is."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: OrderedDict[int, Original] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, seq: int, frame: Original) -> None:
        with self._lock:
            self._frames[seq] = frame
            self._bytes += _size(frame)
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                _, old = self._frames.popitem(last=False)
                self._bytes -= _size(old)

    def get(self, seq: int) -> Original | None:
        with self._lock:
            return self._frames.get(seq)

    @property
    def oldest(self) -> int | None:
        with self._lock:
            return next(iter(self._frames), None)
