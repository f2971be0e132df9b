"""Prometheus metrics of every role: their names, the port each role serves them on, small hooks.

The metric objects live at module level on prometheus_client's process-wide registry. That is the
library's own model (one registry per process, scraped over HTTP) and keeps each hook in the roles
a one-line call; it is not shared state between roles, which run as separate processes. Metrics
are off unless a port is configured (LINEWATCH_METRICS_PORT or ``--metrics-port``).

Names follow Prometheus conventions: ``linewatch_`` prefix, ``_total`` counters, ``_seconds``
histograms, a ``station`` label where a number belongs to one station. Stream lengths, consumer
lags, live processes and dead letters are read from Redis at scrape time by
``pipeline.stream_metrics`` (the same numbers ``linewatch status`` prints).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from config.service import ServiceSettings
from config.station import StationConfig
from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

#: offset of each role's metrics port from LINEWATCH_METRICS_PORT, so that all roles of one host
#: (``linewatch run``, or one worker per GPU) can share a base setting; workers add the GPU index
ROLE_PORT_OFFSETS = {"capture": 0, "recorder": 1, "dashboard": 2, "explain": 3, "worker": 4}

# latency buckets: a few ms (GPU batch) to a minute (a backlog after an outage)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

# ---------------------------------------------------------------- capture
FRAMES_CAPTURED = Counter("linewatch_frames_captured_total", "Frames read from the camera", ["station"])
FRAMES_DROPPED = Counter(
    "linewatch_frames_dropped_total", "Live frames dropped because the pipeline was behind", ["station"]
)
CAPTURE_FPS = Gauge("linewatch_capture_fps", "Frames per second read from the camera, recent", ["station"])
CAMERA_ONLINE = Gauge("linewatch_camera_online", "1 while the station's camera delivers frames", ["station"])
CAMERA_RECONNECTS = Counter("linewatch_camera_reconnects_total", "Camera reconnect attempts", ["station"])

# ---------------------------------------------------------------- worker
FRAMES_INSPECTED = Counter("linewatch_frames_inspected_total", "Frames inspected by workers", ["station"])
FRAMES_FLAGGED = Counter(
    "linewatch_frames_flagged_total", "Inspected frames flagged as defective", ["station"]
)
BATCH_SIZE = Histogram(
    "linewatch_worker_batch_size", "Frames per inspection batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
INFERENCE_SECONDS = Histogram(
    "linewatch_inference_seconds",
    "Model time per inspection batch (decode excluded)",
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "linewatch_end_to_end_latency_seconds",
    "From capture to the published inspection result, per frame",
    ["station"],
    buckets=_LATENCY_BUCKETS,
)

# ---------------------------------------------------------------- recorder
# a result delivered twice (after a worker takeover) is committed twice and stored once: the
# store's rows are results_recorded - duplicate_results
RESULTS_RECORDED = Counter(
    "linewatch_results_recorded_total", "Inspection results committed to the store", ["station"]
)
DUPLICATE_RESULTS = Counter(
    "linewatch_duplicate_results_total", "Committed results whose frame was already stored (skipped)"
)
STORED_LATENCY_SECONDS = Histogram(
    "linewatch_stored_latency_seconds",
    "From capture to the committed row in the store, per frame",
    ["station"],
    buckets=_LATENCY_BUCKETS,
)
STORE_RETRIES = Counter("linewatch_store_retries_total", "Commits retried because the database was away")
EVIDENCE_FAILURES = Counter(
    "linewatch_evidence_failures_total", "Flagged frames stored without their evidence image"
)

# ---------------------------------------------------------------- explainer (LLM)
EXPLAIN_CALLS = Counter(
    "linewatch_explain_calls_total", "Vision-language model calls by outcome", ["station", "outcome"]
)
EXPLAIN_SECONDS = Histogram(
    "linewatch_explain_latency_seconds", "Time of one explainer call", ["station"], buckets=_LLM_BUCKETS
)

# ---------------------------------------------------------------- every role
# no role label: Prometheus' job label (one scrape job per role) already says which role it is
REDIS_RETRIES = Counter("linewatch_redis_retries_total", "Redis operations retried after a transient error")


def port_for(role: str, base: int, device: str | None = None) -> int:
    """The metrics port of ``role`` given the base setting: base + the role's offset (+ GPU index).

    One CPU worker per host is the usual layout; a second one on the same host needs an explicit
    ``--metrics-port``.
    """
    offset = ROLE_PORT_OFFSETS.get(role, 0)
    if role == "worker" and device and device.startswith("cuda:"):
        offset += int(device.partition(":")[2])
    port = base + offset
    if not 1 <= port <= 65535:
        raise PipelineError(f"metrics port {port} of {role} (base {base}) is not between 1 and 65535")
    return port


def serve(role: str, host: str, port: int) -> None:
    """Serve this process's metrics on ``host:port`` (a daemon thread); a taken port is an error."""
    try:
        start_http_server(port, addr=host)
    except OSError as e:
        raise PipelineError(f"cannot serve {role} metrics on {host}:{port}: {e.strerror or e}") from e
    logger.info("%s metrics on http://%s:%d/metrics", role, host, port)


class CaptureCounters:
    """Turns a station's reported capture state (cumulative counts) into counter increments.

    StationCapture counts frames and drops from its own start; a restarted capture in the same
    process starts again at 0, which is taken as a reset (Prometheus' own counter semantics).
    """

    def __init__(self, station_id: str) -> None:
        self.station_id = station_id
        self._last: dict[str, int] = {}

    def update(self, state: Mapping[str, Any]) -> None:
        sid = self.station_id
        for field, counter in (
            ("frames", FRAMES_CAPTURED),
            ("dropped", FRAMES_DROPPED),
            ("reconnects", CAMERA_RECONNECTS),
        ):
            now = int(state.get(field) or 0)
            before = self._last.get(field, 0)
            counter.labels(sid).inc(now - before if now >= before else now)
            self._last[field] = now
        CAPTURE_FPS.labels(sid).set(float(state.get("fps") or 0.0))
        CAMERA_ONLINE.labels(sid).set(1.0 if state.get("state") == "online" else 0.0)


def observe_batch(size: int, inference_s: float) -> None:
    """Worker: one batch went through the model in ``inference_s`` seconds."""
    BATCH_SIZE.observe(size)
    INFERENCE_SECONDS.observe(inference_s)


def observe_inspected(station_id: str, flagged: bool, latency_s: float) -> None:
    """Worker: one frame's result is published and its frame acknowledged."""
    FRAMES_INSPECTED.labels(station_id).inc()
    if flagged:
        FRAMES_FLAGGED.labels(station_id).inc()
    END_TO_END_SECONDS.labels(station_id).observe(max(0.0, latency_s))


def observe_stored(results: Iterable[Any], committed_at: float) -> None:
    """Recorder: ResultMessages (station_id, captured_at) committed at unix time ``committed_at``."""
    for res in results:
        RESULTS_RECORDED.labels(res.station_id).inc()
        STORED_LATENCY_SECONDS.labels(res.station_id).observe(max(0.0, committed_at - res.captured_at))


def observe_explanation(station_id: str, seconds: float, outcome: str) -> None:
    """Explainer: one model call; outcome e.g. ``ok``, ``invalid`` (answer failed validation), ``error``."""
    EXPLAIN_CALLS.labels(station_id, outcome).inc()
    EXPLAIN_SECONDS.labels(station_id).observe(seconds)


def enable(
    role: str,
    settings: ServiceSettings,
    stations: list[StationConfig],
    redis_url: str,
    port: int | None = None,
    device: str | None = None,
) -> int | None:
    """Serve ``role``'s metrics if a port is set (``port`` wins over the setting); returns the port.

    The recorder, central and usually alone, also exports the queue metrics read from Redis.
    """
    if port is None:
        if settings.metrics_port is None:
            return None
        port = port_for(role, settings.metrics_port, device or settings.device)
    if role == "recorder":
        from prometheus_client import REGISTRY

        from pipeline.stream_metrics import StreamStateCollector

        REGISTRY.register(StreamStateCollector(redis_url, stations))
    serve(role, settings.metrics_host, port)
    return port
