"""Evidence files of flagged frames: the original JPEG and a heat-map overlay with region boxes."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.messages import FrameMessage, ResultMessage

logger = logging.getLogger(__name__)


class EvidenceError(OSError):
    """Evidence could not be written (disk full, permissions); inspection rows are stored regardless."""


def decode_heatmap(png: bytes) -> np.ndarray | None:
    if not png:
        return None
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)


def encode_heatmap(heatmap: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", heatmap)
    if not ok:
        raise ValueError("heat map could not be PNG-encoded")
    return buf.tobytes()


def overlay(
    frame: np.ndarray,
    heatmap: np.ndarray | None,
    regions: list[dict[str, Any]],
    regions_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The frame with the heat map blended in (JET colours) and each region boxed and named.

    ``regions_size`` is the (width, height) the region boxes are given in (the camera's frame
    size) when the frame drawn on is smaller or larger; None: the frame's own size.
    """
    out = frame.copy()
    if heatmap is not None:
        hm = cv2.resize(heatmap, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(hm, cv2.COLORMAP_JET)
        alpha = hm.astype(np.float32) * (0.6 / 255.0)
        # one C pass with per-pixel weights: the numpy float64 blend was most of the recorder's CPU
        out = cv2.blendLinear(out, colour, 1.0 - alpha, alpha)
    sx = frame.shape[1] / regions_size[0] if regions_size and regions_size[0] else 1.0
    sy = frame.shape[0] / regions_size[1] if regions_size and regions_size[1] else 1.0
    for r in regions:
        x, y, w, h = round(r["x"] * sx), round(r["y"] * sy), round(r["w"] * sx), round(r["h"] * sy)
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 0, 255), 2)
        cv2.putText(
            out,
            str(r.get("position", "")),
            (x, max(12, y - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 255),
            1,
            cv2.LINE_AA,
        )
    return out


def evidence_path(station_id: str, seq: int, captured_at: float) -> Path:
    """``evidence/{station}/{capture day}/{seq}.jpg``, relative to the data dir; the overlay sits
    beside it as ``{seq}-overlay.jpg``. The day is the capture's, so every writer agrees on it."""
    day = time.strftime("%Y-%m-%d", time.gmtime(captured_at))
    return Path("evidence") / station_id / day / f"{seq}.jpg"


def write_evidence(data_dir: Path, result: ResultMessage, frame_jpeg: bytes | None = None) -> tuple[str, str]:
    """Write a flagged result's frame (``frame_jpeg``, default the one it carries) and its overlay;
    returns both paths relative to ``data_dir``.

    The frame file is only created, never replaced: capture's original-size copy of the frame
    (``write_original``) may have arrived first, and it is the better evidence.
    """
    jpeg = result.frame_jpeg if frame_jpeg is None else frame_jpeg
    rel = evidence_path(result.station_id, result.seq, result.captured_at)
    over_rel = rel.with_name(f"{result.seq}-overlay.jpg")
    frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise EvidenceError(f"{result.id}: evidence frame is not a decodable JPEG")
    size = (result.width, result.height) if result.width else None
    drawn = overlay(frame, decode_heatmap(result.heatmap_png), result.regions, size)
    ok, over = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise EvidenceError(f"{result.id}: overlay could not be encoded")
    path = data_dir / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _atomic_write(path, jpeg)
        _atomic_write(data_dir / over_rel, over.tobytes())
    except OSError as e:
        raise EvidenceError(f"{result.id}: cannot write evidence under {path.parent}: {e}") from e
    return str(rel), str(over_rel)


def write_original(data_dir: Path, frame: FrameMessage) -> str:
    """Write (or replace) a flagged frame's evidence with capture's original-size copy."""
    rel = evidence_path(frame.station_id, frame.seq, frame.captured_at)
    path = data_dir / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, frame.jpeg)
    except OSError as e:
        raise EvidenceError(f"{frame.id}: cannot write evidence under {path.parent}: {e}") from e
    return str(rel)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a half-written file on a full disk keeps it full
        raise
