"""``linewatch run``: everything on one machine — embedded Redis, capture, workers, recorder, dashboard."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from config.service import ServiceSettings
from config.station import StationConfig
from pipeline import metrics
from pipeline.supervisor import Child, Supervisor, linewatch_argv

logger = logging.getLogger(__name__)


def worker_devices(device: str, cpu_workers: int | None = None) -> list[str]:
    """One worker per GPU; without one (or with device cpu) ``cpu_workers`` CPU workers, default
    one per core; an explicit CUDA device gets exactly one worker.

    Several single-threaded CPU workers beat one multi-threaded one where other roles share the
    cores: a torch thread preempted by capture or the recorder stalls its siblings at every
    parallel step, and a bank build that takes seconds on an idle machine took over a minute.
    """
    cpus = ["cpu"] * (cpu_workers or os.cpu_count() or 1)
    if device == "cpu":
        return cpus
    if device != "auto":
        return [device]
    try:
        import torch  # only to count GPUs; the workers load the models

        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    return [f"cuda:{i}" for i in range(count)] or cpus


def children(
    config_args: list[str],
    settings: ServiceSettings,
    host: str,
    port: int,
    stations: list[StationConfig] | None = None,
) -> list[Child]:
    """The roles to supervise; the explainer only when a station enables one."""
    common = [*config_args, "--data-dir", str(settings.data_dir)]
    kids = [Child("capture", linewatch_argv("capture", *common))]
    devices = worker_devices(settings.device, settings.cpu_workers)
    for i, d in enumerate(devices):
        if d != "cpu":
            kids.append(Child(f"worker-{d}", linewatch_argv("worker", *common, "--device", d)))
            continue
        extra = ["--threads", "1"]
        if settings.metrics_port is not None:  # each CPU worker its own port: base + 4 + i
            extra += ["--metrics-port", str(metrics.port_for("worker", settings.metrics_port) + i)]
        kids.append(Child(f"worker-cpu-{i}", linewatch_argv("worker", *common, "--device", d, *extra)))
    if any(s.explainer.enabled for s in stations or []):
        kids.append(Child("explain", linewatch_argv("explain", *common)))
    kids.append(Child("recorder", linewatch_argv("recorder", *common)))
    kids.append(Child("dashboard", linewatch_argv("dashboard", *common, "--host", host, "--port", str(port))))
    return kids


def launch(
    settings: ServiceSettings, stations: list[StationConfig], config: list[Path] | None, host: str, port: int
) -> int:
    from pipeline.store.schema import upgrade

    embedded = None
    env = {"LINEWATCH_DATA_DIR": str(settings.data_dir)}
    if settings.redis_url is None:
        from pipeline.redis_server import start_embedded

        embedded = start_embedded(settings.data_dir)
        env["LINEWATCH_REDIS_URL"] = embedded.url
    try:
        upgrade(settings.effective_database_url)  # once here, so the roles start on a current schema
        login = first_login(settings)
        redis_url = env.get("LINEWATCH_REDIS_URL", settings.redis_url or "")
        continue_numbering(settings, redis_url, stations)
        config_args = [a for p in (config or []) for a in ("--config", str(p))]
        if not config:
            config_args = ["--config", str(settings.data_dir / "demo" / "station.yaml")]
        print_banner(settings, stations, redis_url, host, port, login)
        kids = children(config_args, settings, host, port, stations)
        asyncio.run(Supervisor(kids, env, redis_url=redis_url).run())
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def continue_numbering(settings: ServiceSettings, redis_url: str, stations: list[StationConfig]) -> None:
    """Frame numbers continue from the store when Redis has no counter (a fresh install starts at 0).

    Capture alone (no database access) falls back to a clock-based start so that ids never repeat;
    `linewatch run` holds both and can give readable numbers instead.
    """
    import redis

    from pipeline import keys
    from pipeline.store.store import Store

    client = redis.Redis.from_url(redis_url)
    try:
        with Store.open(settings.effective_database_url) as store:
            for station in stations:
                if client.get(keys.last_seq(station.id)) is None:
                    last = store.last_seq(station.id)
                    client.set(keys.last_seq(station.id), -1 if last is None else last)
    finally:
        client.close()


def first_login(settings: ServiceSettings) -> str:
    """How to log in: on a fresh store an ``admin`` account is created and its password shown."""
    from pipeline.store.store import Store
    from pipeline.store.users import INITIAL_PASSWORD_FILE, ensure_first_admin

    with Store.open(settings.effective_database_url) as store:
        created = ensure_first_admin(store, settings.data_dir)
    initial = settings.data_dir / INITIAL_PASSWORD_FILE
    if created is not None or initial.exists():
        password = initial.read_text().strip()
        return f"admin / {password}  (first-start password, kept in {initial}; delete it once changed)"
    return "your dashboard user (add users with: linewatch users add NAME --role operator)"


def print_banner(
    settings: ServiceSettings,
    stations: list[StationConfig],
    redis: str,
    host: str,
    port: int,
    login: str = "",
) -> None:
    lines = [
        "linewatch is running — Ctrl-C stops it",
        f"  dashboard: http://{host}:{port}/",
        f"  login:     {login}",
        f"  database:  {settings.effective_database_url}",
        f"  redis:     {redis}",
        f"  data dir:  {settings.data_dir}",
        "  stations:  " + ", ".join(f"{s.id} ({s.product.name})" for s in stations),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
