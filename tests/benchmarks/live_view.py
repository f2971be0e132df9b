"""Benchmark: CPU cost of the live view with 1 and with 5 viewers of one station.

    python -m tests.benchmarks.live_view [--seconds 20] [--height 720] [--fps 15] [--viewers 1,5]

The dashboard runs in its own process (as ``linewatch dashboard`` does) on an embedded Redis into
which this process publishes frames and results at 10 frames/s (the demo part, every 4th flagged).
The viewers are aiortc peers in a third process, so their VP8 decoding is not counted. Printed:
the dashboard process's CPU seconds per wall second for each viewer count, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.benchmarks.pipeline_throughput import cpu_seconds
from tests.dashboards.conftest import free_port

SERVER = """
import sys, uvicorn
from config.service import load_settings
from dashboards.app import create_app
from pipeline.store.schema import upgrade
settings = load_settings(data_dir=sys.argv[1], live_height=int(sys.argv[3]), live_fps=float(sys.argv[4]))
upgrade(settings.effective_database_url)
from pipeline.store.store import Store
from tests.dashboards.conftest import add_users
with Store.open(settings.effective_database_url) as store:
    add_users(store)  # the viewers log in as vera
uvicorn.run(create_app(settings, sys.argv[2], ["line-1"]), port=int(sys.argv[5]), log_level="warning")
"""

VIEWERS = """
import asyncio, sys
from tests.dashboards.test_live_view import connect_viewer
async def main():
    viewers = [await connect_viewer(sys.argv[1]) for _ in range(int(sys.argv[2]))]
    print("connected", flush=True)
    await asyncio.sleep(float(sys.argv[3]))
    print(" ".join(str(len(v.frames)) for v in viewers), flush=True)
    for v in viewers:
        await v.pc.close()
asyncio.run(main())
"""


def measure(url: str, server_pid: int, viewers: int, seconds: float) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-c", VIEWERS, url, str(viewers), str(seconds + 4)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "connected":
        raise RuntimeError("viewers could not connect")
    time.sleep(3)  # ICE, DTLS and the first keyframe
    cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(server_pid), time.monotonic()
    frames = [int(n) for n in proc.stdout.readline().split()]
    proc.wait(timeout=30)
    return {"viewers": viewers, "cpu_per_s": (cpu1 - cpu0) / (t1 - t0), "frames_per_viewer": frames}


def main() -> None:
    from pipeline.redis_server import start_embedded
    from tests.dashboards.test_live_view import publish

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=float, default=15)
    p.add_argument("--viewers", default="1,5")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lw-live-"))
    with start_embedded(root / "redis") as redis_server:
        stop = threading.Event()
        publisher = threading.Thread(target=publish, args=(redis_server.url, stop), daemon=True)
        publisher.start()
        port = free_port()
        server_args = [str(root), redis_server.url, str(args.height), str(args.fps), str(port)]
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, *server_args], env={**os.environ, "PYTHONPATH": os.getcwd()}
        )
        try:
            time.sleep(4)
            rows = [
                measure(f"http://127.0.0.1:{port}", server.pid, int(n), args.seconds)
                for n in args.viewers.split(",")
            ]
        finally:
            server.terminate()
            server.wait(timeout=20)
            stop.set()
            publisher.join(timeout=10)
    print(json.dumps(rows, indent=2))
    base = rows[0]["cpu_per_s"]
    for row in rows[1:]:
        print(
            f"{row['viewers']} viewers: {row['cpu_per_s']:.2f} CPU s/s vs {rows[0]['viewers']}: {base:.2f} "
            f"(ratio {row['cpu_per_s'] / base:.2f})"
        )


if __name__ == "__main__":
    main()
