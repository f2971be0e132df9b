"""Soak run: ``linewatch run`` with several simulated stations at their configured rate for a long
time, sampling every role's memory, the stream lags, Redis memory and what was stored.

    python -m tests.benchmarks.soak [--stations 4] [--fps 5] [--minutes 30] [--every 30] [--json FILE]

Each station replays the generated demo video in a loop (a recorded source: nothing is dropped, so
frames in = frames stored). The run is healthy when memory and lags stay flat; the summary gives
each process's resident memory at the first sample after warm-up and at the end, and its slope
in MB per hour over the second half, the largest lag seen, and frames published vs stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from pipeline import keys, streams
from pipeline.demo_assets import DEMO_YAML, STATION_ID, ensure_demo
from pipeline.redis_server import embedded_url
from pipeline.store.store import Store
from tests.benchmarks import machine


def station_files(root: Path, count: int, fps: float) -> Path:
    """``count`` copies of the demo station (ids soak-0, soak-1, ...) in one folder."""
    demo = ensure_demo(root / "demo")
    folder = root / "stations"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text = DEMO_YAML.replace(f"id: {STATION_ID}", f"id: soak-{i}").replace("fps: 5", f"fps: {fps}")
        text = text.replace("source: line.avi", f"source: {demo.parent / 'line.avi'}")
        text = text.replace("folder: references", f"folder: {demo.parent / 'references'}")
        (folder / f"soak-{i}.yaml").write_text(text)
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample(r: redis.Redis, store: Store, stations: list[str], run_pid: int) -> dict[str, Any]:
    raw: Any = r.hgetall(keys.supervised(socket.gethostname()))
    kids = {k.decode(): json.loads(v) for k, v in raw.items()}
    memory = {"run": rss_mb(run_pid), "redis": r.info("memory")["used_memory"] / 2**20}
    for name, child in kids.items():
        if child.get("pid"):
            try:
                memory[name] = rss_mb(child["pid"])
            except FileNotFoundError:
                memory[name] = float("nan")  # restarting
    lags = asyncio.run(stream_lags(r.connection_pool.connection_kwargs["path"], stations))
    published = sum(int(r.get(keys.last_seq(s)) or -1) + 1 for s in stations)
    stored = store.count_inspections()
    restarts = {n: c["restarts"] for n, c in kids.items()}
    return {
        "t": time.time(),
        "memory_mb": memory,
        "lags": lags,
        "published": published,
        "stored": stored,
        "restarts": restarts,
    }


async def stream_lags(socket_path: str, stations: list[str]) -> dict[str, int]:
    """Frames not yet inspected and results not yet stored, per station (``linewatch status``'s lags)."""
    r = streams.connect(f"unix://{socket_path}")
    try:
        out = {}
        for s in stations:
            for what, stream, group in (
                ("inspect", keys.frames(s), keys.INSPECT_GROUP),
                ("record", keys.results(s), keys.RECORD_GROUP),
            ):
                try:
                    out[f"{s}:{what}"] = await streams.lag(r, stream, group)
                except LookupError:  # not created yet
                    out[f"{s}:{what}"] = -1
        return out
    finally:
        await r.aclose()


def slope_mb_per_h(samples: list[dict[str, Any]], name: str) -> float:
    half = samples[len(samples) // 2 :]
    t = np.array([s["t"] for s in half]) / 3600
    m = np.array([s["memory_mb"].get(name, np.nan) for s in half])
    ok = ~np.isnan(m)
    return float(np.polyfit(t[ok], m[ok], 1)[0]) if ok.sum() >= 2 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=4)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lw-soak-"))
    data_dir = root / "data"
    folder = station_files(root, args.stations, args.fps)
    stations = [f"soak-{i}" for i in range(args.stations)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env["LINEWATCH_DEVICE"] = "cpu"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(folder), "--data-dir", str(data_dir)]
    log = (root / "run.log").open("wb")
    run = subprocess.Popen([*cmd, "--port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT)
    sock = embedded_url(data_dir).removeprefix("unix://")
    while not Path(sock).exists():
        time.sleep(0.5)
    r = redis.Redis(unix_socket_path=sock)
    store = Store.open(f"sqlite:///{data_dir / 'linewatch.db'}")
    samples: list[dict[str, Any]] = []
    end = time.time() + args.minutes * 60
    try:
        time.sleep(min(60.0, args.every))  # warm-up: models load, banks build
        while time.time() < end:
            samples.append(sample(r, store, stations, run.pid))
            last = samples[-1]
            print(
                f"{(last['t'] - samples[0]['t']) / 60:5.1f} min  published {last['published']}  "
                f"stored {last['stored']}  max lag {max(last['lags'].values())}  "
                + "  ".join(f"{k} {v:.0f} MB" for k, v in last["memory_mb"].items()),
                flush=True,
            )
            time.sleep(args.every)
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=120)
        log.close()
    first, last = samples[0], samples[-1]
    summary = {
        "machine": machine.describe(),
        "stations": args.stations,
        "fps_each": args.fps,
        "minutes": (last["t"] - first["t"]) / 60,
        "published": last["published"],
        "stored": last["stored"],
        "max_lag": max(max(s["lags"].values()) for s in samples),
        "restarts": last["restarts"],
        "memory_mb": {
            name: {
                "first": first["memory_mb"].get(name),
                "last": last["memory_mb"].get(name),
                "slope_mb_per_h_second_half": slope_mb_per_h(samples, name),
            }
            for name in last["memory_mb"]
        },
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))


if __name__ == "__main__":
    main()
