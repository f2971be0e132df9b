"""Fixtures of the explainer tests: the loopback chat server, flagged results with their frames."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.evidence import encode_heatmap
from pipeline.messages import ResultMessage
from tests.workers.explain.chat_server import ChatServer, running_chat_server

FRAME_W, FRAME_H = 320, 240


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with running_chat_server() as server:
        yield server


def frame_jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 110, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
    cv2.circle(image, (60, 50), 12, (20, 20, 20), -1)  # the "defect", top left
    return cv2.imencode(".jpg", image)[1].tobytes()


def region(x: int = 40, y: int = 30, w: int = 40, h: int = 40, position: str = "top left") -> dict[str, Any]:
    return {
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "area": w * h / (FRAME_W * FRAME_H),
        "peak": 0.93,
        "position": position,
    }


def flagged_result(
    station_id: str = "line-1", seq: int = 1, regions: list[dict[str, Any]] | None = None
) -> ResultMessage:
    heat = np.zeros((30, 40), np.uint8)
    heat[3:10, 4:11] = 255
    return ResultMessage(
        station_id=station_id,
        seq=seq,
        captured_at=1_750_000_000.0 + seq,
        inspected_at=1_750_000_000.1 + seq,
        score=0.87,
        flagged=True,
        latency_ms=40.0,
        regions=[region()] if regions is None else regions,
        heatmap_png=encode_heatmap(heat),
        worker="w1",
    )
