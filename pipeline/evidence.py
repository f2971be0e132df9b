"""Evidence files of flagged frames: the original JPEG and a heat-map overlay with region boxes."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

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


def overlay(frame: np.ndarray, heatmap: np.ndarray | None, regions: list[dict[str, Any]]) -> np.ndarray:
    """The frame with the heat map blended in (JET colours) and each region boxed and named."""
    out = frame.copy()
    if heatmap is not None:
        hm = cv2.resize(heatmap, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(hm, cv2.COLORMAP_JET)
        alpha = hm.astype(np.float32) * (0.6 / 255.0)
        # one C pass with per-pixel weights: the numpy float64 blend was most of the recorder's CPU
        out = cv2.blendLinear(out, colour, 1.0 - alpha, alpha)
    for r in regions:
        x, y, w, h = (int(r[k]) for k in ("x", "y", "w", "h"))
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


def write_evidence(
    data_dir: Path,
    station_id: str,
    seq: int,
    frame_jpeg: bytes,
    heatmap_png: bytes,
    regions: list[dict[str, Any]],
) -> tuple[str, str]:
    """Write ``evidence/{station}/{day}/{seq}.jpg`` and ``…-overlay.jpg``; paths relative to data_dir."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    rel = Path("evidence") / station_id / day
    folder = data_dir / rel
    frame = cv2.imdecode(np.frombuffer(frame_jpeg, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise EvidenceError(f"{station_id}:{seq}: evidence frame is not a decodable JPEG")
    ok, over = cv2.imencode(
        ".jpg", overlay(frame, decode_heatmap(heatmap_png), regions), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        raise EvidenceError(f"{station_id}:{seq}: overlay could not be encoded")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / f"{seq}.jpg", frame_jpeg)
        _atomic_write(folder / f"{seq}-overlay.jpg", over.tobytes())
    except OSError as e:
        raise EvidenceError(f"{station_id}:{seq}: cannot write evidence under {folder}: {e}") from e
    return str(rel / f"{seq}.jpg"), str(rel / f"{seq}-overlay.jpg")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
