"""Entry points of the long-running roles: settings and stations resolved once, then an asyncio main."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from config.loader import load_stations
from config.service import ServiceSettings, load_settings
from config.station import StationConfig
from pipeline.demo_assets import ensure_demo

logger = logging.getLogger(__name__)

#: exit status of a worker that found a batch stuck in the model (the supervisor restarts it)
EXIT_HUNG = 70


def resolve(config: list[Path] | None, data_dir: Path | None) -> tuple[ServiceSettings, list[StationConfig]]:
    """Settings from the environment (``--data-dir`` wins) and the stations (the demo when none given)."""
    settings = load_settings(**({"data_dir": data_dir} if data_dir else {}))
    paths = config or [ensure_demo(settings.data_dir)]
    return settings, load_stations(paths)


def redis_url(settings: ServiceSettings) -> str:
    if settings.redis_url:
        return settings.redis_url
    from pipeline.redis_server import embedded_url

    return embedded_url(settings.data_dir)  # started by `linewatch run`


def serve(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main(stop)`` until it returns; SIGINT/SIGTERM set ``stop`` so work drains gracefully."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
    return 0


def process_name(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def capture_main(settings: ServiceSettings, stations: list[StationConfig]) -> int:
    from pipeline.capture_role import run_capture

    return serve(lambda stop: run_capture(redis_url(settings), stations, stop))


def recorder_main(settings: ServiceSettings, stations: list[StationConfig]) -> int:
    from pipeline import streams
    from pipeline.recorder import Recorder, RecorderOptions
    from pipeline.store.schema import upgrade
    from pipeline.store.store import Store

    url = settings.effective_database_url
    upgrade(url)
    store = Store.open(url)
    for s in stations:
        store.upsert_station(s.id, s.name or s.id, s.product.name, s.model_dump_json())

    async def main(stop: asyncio.Event) -> None:
        r = streams.connect(redis_url(settings), name="recorder")
        options = RecorderOptions(retention_days=settings.retention_days)
        explained = {s.id for s in stations if s.explainer.enabled}
        rec = Recorder(
            r,
            store,
            [s.id for s in stations],
            settings.data_dir,
            process_name("recorder"),
            options,
            explained=explained,
        )
        await rec.run(stop)
        await r.aclose()

    try:
        return serve(main)
    finally:
        store.close()


def worker_main(
    settings: ServiceSettings,
    stations: list[StationConfig],
    device: str | None,
    claim_idle_ms: int | None = None,
    batch_size: int = 16,
    max_wait_ms: int = 30,
    threads: int | None = None,
    hang_timeout_s: float | None = None,
) -> int:
    import torch

    from pipeline import streams
    from workers.inspect_worker import InspectWorker, WorkerHung, WorkerOptions
    from workers.station_loader import load_inspectors

    if threads is not None:
        torch.set_num_threads(threads)

    inspectors = load_inspectors(stations, settings.data_dir, device or settings.device)
    options = WorkerOptions(batch_size=batch_size, max_wait_ms=max_wait_ms)
    if claim_idle_ms is not None:
        options = replace(options, claim_idle_ms=claim_idle_ms)
    if hang_timeout_s is not None:
        options = replace(options, hang_timeout_s=hang_timeout_s)

    async def main(stop: asyncio.Event) -> None:
        r = streams.connect(redis_url(settings), name="worker")
        await streams.reconnecting(lambda: publish_models(r, inspectors), what="station models")
        try:
            await InspectWorker(r, inspectors, process_name("worker"), options).run(stop)
        except WorkerHung as e:
            # the stuck call holds a thread that interpreter shutdown would wait for forever
            logger.critical("%s; exiting for a restart", e)
            logging.shutdown()
            os._exit(EXIT_HUNG)
        await r.aclose()

    return serve(main)


async def publish_models(r: Any, inspectors: dict[str, Any]) -> None:
    """What each station's model is, for the dashboard's station page (read-only, no TTL)."""
    import json

    from pipeline import keys
    from workers.calibration import suspect_references

    for station_id, inspector in inspectors.items():
        model = inspector.stations[station_id]
        info = {
            "backbone": inspector.backbone.spec,
            "device": str(inspector.device),
            "image_size": model.image_size,
            "bank": model.bank.sizes if model.bank is not None else [],
            "decoder": model.decoder is not None,
            "threshold": model.calibration.threshold,
            "normal_level": model.calibration.normal_level,
            "normal_scores": list(model.calibration.normal_scores),
            # held-out references (in file-name order) at or above the threshold: shown as suspect
            "suspect_references": suspect_references(model.calibration),
            "loaded_at": time.time(),
        }
        await r.set(keys.station_model(station_id), json.dumps(info))


def explain_main(settings: ServiceSettings, stations: list[StationConfig], device: str | None) -> int:
    """The explainer for the stations that enable one; exits 2 with a message when none does."""
    from pipeline import streams
    from pipeline.errors import PipelineError
    from workers.explain.backends.factory import build_backends
    from workers.explain.role import Explainer

    explained = [s for s in stations if s.explainer.enabled]
    if not explained:
        raise PipelineError(
            "no station enables an explainer (explainer.backend is none everywhere); see docs/explainer.md"
        )
    backends = build_backends(explained, settings, device or settings.device)  # models load once, here

    async def main(stop: asyncio.Event) -> None:
        r = streams.connect(redis_url(settings), name="explain")
        try:
            await Explainer(r, explained, backends, process_name("explain")).run(stop)
        finally:
            for backend in {id(b): b for b in backends.values()}.values():
                await backend.close()
            await r.aclose()

    return serve(main)
