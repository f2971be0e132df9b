"""Benchmark: frames/s through the whole pipeline (capture -> Redis -> worker -> recorder -> SQLite)
against the Inspector alone on the same frames, plus capture-to-result and capture-to-store latency.

    python -m tests.benchmarks.pipeline_throughput [--frames 300] [--fps 120] [--redis-url URL]
                                                   [--in-process] [--no-store-latency] [--keep-data]

At an offered load above capacity (the default) it measures throughput, and the latencies are
queueing time; at a load below capacity (e.g. --fps 8) the latencies are the pipeline's own.

Throughput is reported twice: ``pipeline_fps``, results stored per second between the 10th and
the 90th percentile of the run's results (steady state, the rate a line running for hours sees,
and the one ``ratio`` uses: the Inspector alone is timed warm too), and
``pipeline_fps_whole_run``, first capture to last result (includes about a second of filling the
pipeline, so it depends on the run's length). ``steady_cpu_ms_per_frame`` is each role's CPU per
frame after the first tenth of the frames.

Uses the generated demo station (640x480 frames, inspected at 320 px) played once as fast as it can
be read, with embedded Redis and SQLite in a temporary data dir unless --redis-url is given. The
roles run as separate ``linewatch capture|worker|recorder`` processes, as ``linewatch run`` starts
them (``--in-process``: all in this process's event loop, as the end-to-end test does). The
Inspector alone is timed before and after the pipeline run on the same machine, and the ratio uses
their mean, because a shared machine's speed drifts between runs. The temporary directory (the
video, the store, the evidence) is removed at the end unless --keep-data is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from config.loader import load_station
from pipeline import keys, streams
from pipeline.capture import CaptureOptions, encode_jpeg
from pipeline.demo_assets import DEMO_YAML, ensure_demo, write_video
from pipeline.originals import downsize
from pipeline.redis_server import start_embedded
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from pipeline.supervisor import linewatch_argv
from tests.benchmarks import machine
from tests.pipeline.test_end_to_end import run_pipeline
from workers.frames import decode_frame


def station_file(root: Path, frames: int, fps: float) -> Path:
    yaml_path = ensure_demo(root)
    write_video(yaml_path.parent / "bench.avi", frames=frames)
    text = DEMO_YAML.replace("id: demo-line", "id: bench").replace("line.avi", "bench.avi")
    text = text.replace("loop: true", "loop: false").replace("fps: 5", f"fps: {fps}")
    path = yaml_path.parent / "bench.yaml"
    path.write_text(text)
    return path


def inspector_alone(path: Path, data_dir: Path, batch: int) -> float:
    """Frames/s of the Inspector on the same decoded frames, batched like the worker."""
    from workers.station_loader import load_inspectors

    station = load_station(path)
    insp = load_inspectors([station], data_dir, "cpu")[station.id]
    cap = cv2.VideoCapture(str(station.camera.source))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        # as the worker gets them: capture's inspection-size JPEG, decoded
        small = downsize(f, station.model.image_size)
        jpeg = encode_jpeg(small, CaptureOptions().jpeg_quality)
        frames.append(decode_frame(jpeg, small.shape[1], small.shape[0], station.model.image_size))
    insp.inspect([(station.id, f) for f in frames[:batch]])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        insp.inspect([(station.id, f) for f in frames[i : i + batch]])
    return len(frames) / (time.perf_counter() - t0)


def latencies(store, station_id: str) -> dict:
    from sqlalchemy import select

    from pipeline.store.models import Inspection

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(Inspection.captured_at, Inspection.inspected_at, Inspection.latency_ms).where(
                Inspection.station_id == station_id
            )
        ).all()
    cap = np.array([r[0].timestamp() for r in rows])
    ins = np.sort(np.array([r[1].timestamp() for r in rows]))
    lat = np.array([r[2] for r in rows])
    span = ins.max() - cap.min()
    first, last = len(ins) // 10, len(ins) * 9 // 10
    return {
        "frames": len(rows),
        # first capture to last result: includes filling the pipeline (about a second at the
        # start) and the workers' last uneven batches, so it depends on the run's length
        "pipeline_fps_whole_run": len(rows) / span,
        # results stored per second between the 10th and the 90th percentile of the results: the
        # rate a line running for hours sees, measured warm like the Inspector alone
        "pipeline_fps": (last - first) / (ins[last] - ins[first]),
        "capture_to_result_ms_p50": float(np.percentile(lat, 50)),
        "capture_to_result_ms_p99": float(np.percentile(lat, 99)),
    }


async def watch_store(db_url: str, frames: int, seen: list[float]) -> None:
    """Poll the store every 20 ms; each new row's capture-to-visible-in-store time goes to ``seen``."""
    from sqlalchemy import select

    from pipeline.store.models import Inspection
    from pipeline.store.store import Store

    last_id = 0
    store = Store.open(db_url)  # one engine for the whole watch: polling must stay cheap
    query = select(Inspection.id, Inspection.captured_at)
    while len(seen) < frames:
        await asyncio.sleep(0.02)
        try:
            with store.engine.connect() as conn:
                rows = conn.execute(query.where(Inspection.id > last_id)).all()
        except Exception:  # the schema may not exist yet at the very start
            continue
        now = time.time()
        for row_id, captured in rows:
            last_id = max(last_id, row_id)
            seen.append((now - captured.timestamp()) * 1000)


CPU_SECONDS: dict[str, float] = {}
STEADY_CPU_MS: dict[str, float] = {}  # CPU ms per frame of each role after the first tenth of the frames
WORKERS = os.cpu_count() or 1  # set from --workers
THREADS = 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_processes(redis_url: str, db: str, path: Path, data_dir: Path, frames: int) -> Store:
    """Worker and recorder first (until the worker's heartbeat shows its model is loaded), then
    capture, each a ``linewatch`` process; returns once ``frames`` rows are in the store."""
    upgrade(db)
    store = Store.open(db)
    env = {
        **os.environ,
        "LINEWATCH_REDIS_URL": redis_url,
        "LINEWATCH_DATABASE_URL": db,
        "LINEWATCH_DATA_DIR": str(data_dir),
        "LINEWATCH_DEVICE": "cpu",
    }
    common = ["--config", str(path), "--data-dir", str(data_dir)]
    # as linewatch run starts them on a machine without a GPU: one single-threaded worker per core
    worker_argv = linewatch_argv("worker", *common, "--threads", str(THREADS))
    procs = [subprocess.Popen(worker_argv, env=env) for _ in range(WORKERS)]
    procs.append(subprocess.Popen(linewatch_argv("recorder", *common), env=env))
    r = streams.connect(redis_url)
    try:
        for _ in range(600):
            if len(await streams.alive(r, "worker")) >= WORKERS:
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the worker did not start within a minute")
        CPU_SECONDS["workers_startup"] = sum(cpu_seconds(p.pid) for p in procs[:WORKERS])
        procs.append(subprocess.Popen(linewatch_argv("capture", *common), env=env))
        roles = {"workers": procs[:WORKERS], "recorder": [procs[WORKERS]], "capture": [procs[WORKERS + 1]]}
        warm: tuple[int, dict[str, float]] | None = None  # rows and each role's CPU once warm
        for _ in range(1200):
            await asyncio.sleep(0.25)
            done = store.count_inspections("bench")
            if warm is None and done >= frames // 10:  # start-up and first batches are behind
                warm = done, {k: sum(cpu_seconds(p.pid) for p in ps) for k, ps in roles.items()}
            if done >= frames:
                break
        if warm is not None and done > warm[0]:
            STEADY_CPU_MS.update(
                {
                    k: round((sum(cpu_seconds(p.pid) for p in ps) - warm[1][k]) * 1000 / (done - warm[0]), 2)
                    for k, ps in roles.items()
                }
            )
        CPU_SECONDS["workers"] = sum(cpu_seconds(p.pid) for p in procs[:WORKERS])
        CPU_SECONDS["recorder"] = cpu_seconds(procs[WORKERS].pid)
        CPU_SECONDS["capture"] = cpu_seconds(procs[WORKERS + 1].pid)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        station = "bench"
        await r.delete(
            keys.frames(station), keys.results(station), keys.flagged(station), keys.last_seq(station)
        )
        await r.aclose()
    return store


async def main_async(args: argparse.Namespace, root: Path) -> dict:
    path = station_file(root / "assets", args.frames, args.fps)
    data_dir = root / "data"
    db = f"sqlite:///{data_dir / 'linewatch.db'}"
    before = inspector_alone(path, data_dir, 16)  # also builds and caches the bank for the worker
    run = run_pipeline if args.in_process else run_processes
    seen: list[float] = []
    own_cpu = time.process_time()  # this process's polling competes with the pipeline for the cores
    polling = watch_store(db, args.frames, seen) if args.store_latency else asyncio.sleep(0)
    watcher = asyncio.create_task(polling)
    if args.redis_url:
        store = await run(args.redis_url, db, path, data_dir, args.frames)
    else:
        with start_embedded(data_dir) as server:
            redis_before = cpu_seconds(server.pid)
            store = await run(server.url, db, path, data_dir, args.frames)
            CPU_SECONDS["redis"] = cpu_seconds(server.pid) - redis_before
    watcher.cancel()
    CPU_SECONDS["benchmark_process"] = time.process_time() - own_cpu
    out = latencies(store, "bench")
    if seen:
        out["capture_to_store_ms_p50"] = float(np.percentile(seen, 50))
        out["capture_to_store_ms_p99"] = float(np.percentile(seen, 99))
    after = inspector_alone(path, data_dir, 16)
    out["mode"] = "in-process" if args.in_process else f"processes, {WORKERS} worker(s) x {THREADS} thread(s)"
    out["machine"] = machine.describe()
    out["cpu_seconds"] = {k: round(v, 1) for k, v in CPU_SECONDS.items()}
    if STEADY_CPU_MS:
        out["steady_cpu_ms_per_frame"] = STEADY_CPU_MS
    out["inspector_fps_before"], out["inspector_fps_after"] = before, after
    out["inspector_fps"] = (before + after) / 2
    out["ratio"] = out["pipeline_fps"] / out["inspector_fps"]
    out["ratio_whole_run"] = out["pipeline_fps_whole_run"] / out["inspector_fps"]
    return out


def main() -> None:
    global WORKERS, THREADS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--fps", type=float, default=120, help="offered load; above capacity measures throughput")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--in-process", action="store_true", help="all roles in this process (as the e2e test)")
    p.add_argument(
        "--no-store-latency",
        dest="store_latency",
        action="store_false",
        help="do not poll the store every 20 ms for capture-to-visible latency: above capacity that "
        "latency is only queueing, and the polling takes CPU from the pipeline it measures",
    )
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the run's video, database and evidence (100-200 MB) and print where they are",
    )
    args = p.parse_args()
    WORKERS, THREADS = args.workers, args.threads
    root = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    try:
        r = asyncio.run(main_async(args, root))
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
    if args.keep_data:
        r["data"] = str(root)
    print(json.dumps(r, indent=2))
    print(
        f"pipeline {r['pipeline_fps']:.1f} frames/s steady ({r['pipeline_fps_whole_run']:.1f} over the whole "
        f"run) vs Inspector alone {r['inspector_fps']:.1f}: ratio {r['ratio']:.2f} "
        f"({r['ratio_whole_run']:.2f} over the whole run)"
    )


if __name__ == "__main__":
    main()
