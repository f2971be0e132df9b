"""More workers against the external Redis and PostgreSQL, every role a separate process.

What a plant scaling out would notice: a second worker takes part of the load, a worker stopped
gracefully (SIGTERM) or killed (SIGKILL) loses no frame and stores none twice, and the numbers
the recorder serves on /metrics agree with the store. Throughput against the number of workers is
measured by ``tests/benchmarks/worker_scaling.py`` (a 2-core shared machine cannot time it
reliably inside a test; the recorded figures are in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from config.loader import load_station
from pipeline import keys, streams
from pipeline.store.models import Inspection
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.faults.harness import (
    REPO,
    Assets,
    frame_fields,
    logs,
    pending_ids,
    start_worker,
    stop_processes,
    stored_seqs,
    wait_for,
)
from tests.pipeline.redis_fixtures import EXTERNAL_URL, _external_or_skip
from workers.station_loader import load_inspectors

pytestmark = pytest.mark.slow


class ScaleAssets:
    """The fault tests' station under an id unique to this run (the external Redis is shared), with
    its bank built once for the module."""

    def __init__(self, root: Path) -> None:
        self.assets = Assets(root)
        self.station_id = f"scale-{uuid.uuid4().hex[:8]}"
        self.station_file = self.assets.station_yaml(self.station_id, "faults.avi", fps=8)
        self.data_dir = root / "data"
        load_inspectors([load_station(self.station_file)], self.data_dir, "cpu")


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> ScaleAssets:
    _external_or_skip().close()
    return ScaleAssets(tmp_path_factory.mktemp("scale"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_recorder(scale: ScaleAssets, db_url: str, metrics_port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LINEWATCH_REDIS_URL": EXTERNAL_URL,
        "LINEWATCH_DATABASE_URL": db_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "pipeline.cli", "recorder", "--config", str(scale.station_file)]
    cmd += ["--data-dir", str(scale.data_dir), "--metrics-port", str(metrics_port)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def scrape(port: int) -> dict[str, float]:
    """The samples of a /metrics page: ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rows_by_worker(store: Store, station_id: str) -> Counter[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(Inspection.worker).where(Inspection.station_id == station_id)).scalars()
        return Counter(rows)


async def publish(r: streams.Redis, station_id: str, seqs: range) -> None:
    for seq in seqs:  # demo parts in turn, one in seven defective
        await streams.add(r, keys.frames(station_id), frame_fields(station_id, seq, seq % 21), maxlen=None)


async def test_two_workers_share_the_load_and_stopping_them_loses_nothing(
    scale: ScaleAssets, tmp_path: Path, postgres_schema_url: str
) -> None:
    """Two workers and a recorder as processes; both workers inspect part of the frames. Then one
    is stopped with SIGTERM (it drains and exits 0, holding nothing) and the other is SIGKILLed
    while it holds frames; a third worker started afterwards takes those over. Every frame ends
    as exactly one row, and the recorder's metrics count what the store holds."""
    sid = scale.station_id
    frames = keys.frames(sid)
    await asyncio.to_thread(upgrade, postgres_schema_url)
    store = Store.open(postgres_schema_url)
    r = streams.connect(EXTERNAL_URL)
    await streams.ensure_group(r, frames, keys.INSPECT_GROUP)
    port = free_port()
    log_files = [tmp_path / f"{name}.log" for name in ("recorder", "worker-1", "worker-2", "worker-3")]
    recorder = start_recorder(scale, postgres_schema_url, port, log_files[0])
    procs = [recorder] + [
        start_worker(scale.station_file, scale.data_dir, EXTERNAL_URL, log) for log in log_files[1:3]
    ]
    w1, w2 = procs[1], procs[2]
    name = {p.pid: f"worker-{socket.gethostname()}-{p.pid}" for p in procs[1:]}

    def fail_if_exited(*ps: subprocess.Popen) -> None:
        for p in ps:
            if p.poll() is not None:
                pytest.fail(f"pid {p.pid} exited with {p.returncode}\n{logs_so_far()}")

    def logs_so_far() -> str:
        return logs([f for f in log_files if f.exists()])

    async def stored(n: int) -> bool:
        fail_if_exited(recorder)
        return await asyncio.to_thread(store.count_inspections, sid) >= n

    try:

        async def workers_alive() -> bool:
            fail_if_exited(w1, w2)
            return {name[w1.pid], name[w2.pid]} <= set(await streams.alive(r, "worker"))

        await wait_for(workers_alive, 120, "both workers to start", every_s=0.25)
        await publish(r, sid, range(1, 41))

        async def both_stored_some() -> bool:
            fail_if_exited(recorder)
            shares = await asyncio.to_thread(rows_by_worker, store, sid)
            if sum(shares.values()) >= 40:
                pytest.fail(f"one worker inspected every frame: {shares}")
            return shares[name[w1.pid]] > 0 and shares[name[w2.pid]] > 0

        await wait_for(both_stored_some, 120, "rows of both workers", every_s=0.1)

        w1.send_signal(signal.SIGTERM)  # graceful: what it read is inspected and acked first
        assert await asyncio.to_thread(w1.wait, 30) == 0, logs_so_far()
        assert not await pending_ids(r, frames, keys.INSPECT_GROUP, name[w1.pid])

        await publish(r, sid, range(41, 61))

        async def w2_holds_frames() -> bool:
            fail_if_exited(w2)
            return bool(await pending_ids(r, frames, keys.INSPECT_GROUP, name[w2.pid]))

        await wait_for(w2_holds_frames, 60, "the second worker to hold frames", every_s=0.01)
        w2.send_signal(signal.SIGKILL)
        await asyncio.to_thread(w2.wait)
        orphans = await pending_ids(r, frames, keys.INSPECT_GROUP, name[w2.pid])
        w3 = start_worker(scale.station_file, scale.data_dir, EXTERNAL_URL, log_files[3])
        procs.append(w3)
        name[w3.pid] = f"worker-{socket.gethostname()}-{w3.pid}"

        await wait_for(lambda: stored(60), 120, "60 rows", every_s=0.25)
        await wait_for(lambda: _none_pending(r, frames), 30, "every frame to be acknowledged")
        await asyncio.sleep(1.0)  # a duplicate row would be stored by now

        assert await asyncio.to_thread(stored_seqs, store, sid) == list(range(1, 61))  # each once
        shares = await asyncio.to_thread(rows_by_worker, store, sid)
        assert set(shares) <= set(name.values())
        if orphans:  # killed between read and ack: the new worker inspected them
            assert shares[name[w3.pid]] > 0

        samples = await asyncio.to_thread(scrape, port)
        recorded = samples[f'linewatch_results_recorded_total{{station="{sid}"}}']
        assert recorded - samples["linewatch_duplicate_results_total"] == 60  # rows in the store
        assert samples[f'linewatch_consumer_lag{{group="inspect",station="{sid}"}}'] == 0
        assert samples["linewatch_redis_up"] == 1
        assert samples['linewatch_processes_alive{role="recorder"}'] >= 1
    finally:
        await asyncio.to_thread(stop_processes, procs)
        await r.delete(frames, keys.results(sid), keys.flagged(sid), keys.dead_letter(frames))
        await r.aclose()
        store.close()


async def _none_pending(r: streams.Redis, stream: str) -> bool:
    return not await pending_ids(r, stream, keys.INSPECT_GROUP)
