"""Test data for the store tests: results as workers publish them, and a port nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from pipeline.messages import ResultMessage

T0 = 1_750_000_000.0  # a fixed capture time (June 2025), unix seconds

ResultFactory = Callable[..., ResultMessage]


def make_result(station_id: str = "line-1", seq: int = 1, **overrides: Any) -> ResultMessage:
    """A result as a worker would publish it; flagged ones carry one region."""
    flagged = overrides.pop("flagged", False)
    fields: dict[str, Any] = {
        "captured_at": T0 + seq,
        "inspected_at": T0 + seq + 0.05,
        "score": 0.8 if flagged else 0.1,
        "flagged": flagged,
        "latency_ms": 50.0,
        "regions": [{"x": 1, "y": 2, "w": 3, "h": 4, "area": 0.01, "peak": 0.9, "position": "top left"}]
        if flagged
        else [],
        "worker": "gpu-0",
    }
    fields.update(overrides)
    return ResultMessage(station_id=station_id, seq=seq, **fields)


def closed_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
