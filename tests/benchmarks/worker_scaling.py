"""Benchmark: worker throughput against the number of `linewatch worker` processes in one group.

    python -m tests.benchmarks.worker_scaling [--frames 96] [--workers 1,2,1]
                                              [--redis-url redis://127.0.0.1:6379/15]

Each run starts N worker processes (one torch/OpenMP thread each, as the tests start them, so that
N workers use N cores) on the fault tests'
station (640x480 frames inspected at 320 px, packaged backbone, CPU), waits until all are alive,
then puts ``--frames`` pre-encoded frames into the stream at once and times until every frame has
a result. Only the workers run meanwhile (no capture, no recorder), so the figure is the worker
pool's own rate. Repeating a count (``1,2,1``) shows how much a shared machine drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline import keys, streams
from tests.faults.harness import frame_fields, start_worker, stop_processes
from tests.pipeline.test_scaling import ScaleAssets


async def one_run(scale: ScaleAssets, redis_url: str, workers: int, frames: int, log_dir: Path) -> float:
    """Frames/s of ``workers`` worker processes on ``frames`` frames waiting in the stream."""
    sid = scale.station_id
    r = streams.connect(redis_url)
    procs = [
        start_worker(scale.station_file, scale.data_dir, redis_url, log_dir / f"w{i}.log")
        for i in range(workers)
    ]
    names = {f"worker-{socket.gethostname()}-{p.pid}" for p in procs}
    try:
        await streams.ensure_group(r, keys.frames(sid), keys.INSPECT_GROUP)
        while not names <= set(await streams.alive(r, "worker")):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; see {log_dir}")
            await asyncio.sleep(0.2)
        payload: list[Any] = [frame_fields(sid, seq, seq % 21) for seq in range(frames)]  # encoded up front
        started = time.perf_counter()
        async with r.pipeline(transaction=False) as pipe:
            for fields in payload:
                pipe.xadd(keys.frames(sid), fields)
            await pipe.execute()
        while await r.xlen(keys.results(sid)) < frames:
            await asyncio.sleep(0.02)
        return frames / (time.perf_counter() - started)
    finally:
        await asyncio.to_thread(stop_processes, procs)
        await r.delete(keys.frames(sid), keys.results(sid), keys.flagged(sid))
        await r.aclose()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scale = ScaleAssets(Path(tmp))  # builds the station's bank once
        for n in [int(x) for x in args.workers.split(",")]:
            log_dir = Path(tmp) / f"run-{n}-{time.monotonic_ns()}"
            log_dir.mkdir()
            rate = await one_run(scale, args.redis_url, n, args.frames, log_dir)
            print(f"{n} worker(s), 1 thread each: {rate:.1f} frames/s ({args.frames} frames)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--workers", default="1,2,1", help="worker counts to run in turn")
    default_url = os.environ.get("LINEWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    parser.add_argument("--redis-url", default=default_url)
    asyncio.run(main(parser.parse_args()))
