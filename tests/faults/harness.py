"""Shared pieces of the fault suite: a station with its bank built once, worker processes, and
Redis/store probes that tell what was delivered, acknowledged and stored."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from config.loader import load_station
from pipeline import streams
from pipeline.capture import CaptureOptions, encode_jpeg
from pipeline.demo_assets import DEMO_YAML, defect_of, render_part, write_video
from pipeline.messages import FrameMessage
from pipeline.store.models import Inspection
from pipeline.store.store import Store
from tests.dashboards.conftest import free_port
from workers.station_loader import load_inspectors

STATION = "faults"  # the one station whose bank is built; tests with their own Redis share it
VIDEO_FRAMES = 21  # defects at 6, 13 and 20 (one part in seven)
REPO = Path(__file__).resolve().parents[2]


class Assets:
    """A short demo video, its station file and a data dir holding the station's built bank."""

    def __init__(self, root: Path) -> None:
        self.root = root
        refs = root / "references"
        refs.mkdir(parents=True)
        for i in range(4):  # the demo's first references (the station uses k=4)
            cv2.imwrite(
                str(refs / f"normal-{i:02d}.jpg"), render_part(seed=i)[0], [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
        self.defective = write_video(root / "faults.avi", frames=VIDEO_FRAMES)
        self.station_file = self.station_yaml(STATION, "faults.avi", fps=8)
        self.bank_dir = root / "bank-data"

    def station_yaml(self, station_id: str, video: str, fps: int) -> Path:
        text = DEMO_YAML.replace("id: demo-line", f"id: {station_id}").replace("line.avi", video)
        text = text.replace("loop: true", "loop: false").replace("fps: 5", f"fps: {fps}")
        # no mirrored views: the bank builds in half the time and still separates the demo's defects
        text = text.replace("  k: 4\n", "  k: 4\n  augment: false\n")
        path = self.root / f"{station_id}.yaml"
        path.write_text(text)
        return path

    def data_dir(self, tmp_path: Path) -> Path:
        """A fresh data dir (short path: the Redis socket lives in it) with the bank copied in.

        The first call builds the bank (tens of seconds on a CPU); later ones copy it.
        """
        if not (self.bank_dir / "banks").is_dir():
            load_inspectors([load_station(self.station_file)], self.bank_dir, "cpu")
        data = tmp_path / "d"
        shutil.copytree(self.bank_dir / "banks", data / "banks")
        return data


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


async def pending_ids(r: streams.Redis, stream: str, group: str, consumer: str | None = None) -> set[str]:
    """Ids delivered to ``group`` (to ``consumer``, if given) and not acknowledged yet."""
    kw: dict[str, Any] = {"consumername": consumer} if consumer else {}
    rows: Any = await r.xpending_range(stream, group, min="-", max="+", count=10_000, **kw)
    return {streams._text(p["message_id"]) for p in rows}


async def entries(r: streams.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """Every entry of ``stream``, oldest first."""
    reply: Any = await r.xrange(stream)
    return [(streams._text(entry_id), fields) for entry_id, fields in reply]


async def delivered_ids(r: streams.Redis, stream: str, group: str) -> set[str]:
    """Ids of ``stream`` that ``group`` has read (its last-delivered id and all before it)."""
    groups: Any = await r.xinfo_groups(stream)
    info = next(g for g in groups if streams._text(g["name"]) == group)
    last = streams._id_pair(info["last-delivered-id"])
    return {i for i, _ in await entries(r, stream) if streams._id_pair(i) <= last}


async def acked_ids(r: streams.Redis, stream: str, group: str) -> set[str]:
    """Ids of ``stream`` that ``group`` has acknowledged: delivered and no longer pending."""
    return await delivered_ids(r, stream, group) - await pending_ids(r, stream, group)


def stored_seqs(store: Store, station_id: str) -> list[int]:
    """Seqs of the station's inspection rows, one entry per row (a duplicate row would show twice)."""
    with store.engine.connect() as conn:
        return sorted(
            conn.execute(select(Inspection.seq).where(Inspection.station_id == station_id)).scalars()
        )


def frame_fields(station_id: str, seq: int, index: int) -> dict[str, Any]:
    """Frame message fields for demo part ``index``, encoded the way capture encodes frames."""
    image, _ = render_part(1000 + index, defect_of(index))  # write_video's seeds
    jpeg = encode_jpeg(image, CaptureOptions().jpeg_quality)
    return FrameMessage(station_id, seq, time.time(), jpeg, image.shape[1], image.shape[0]).to_fields()


# ---------------------------------------------------------------- 1. worker SIGKILL mid-run


def start_worker(
    station_file: Path, data_dir: Path, redis_url: str, log: Path, claim_idle_ms: int = 4000
) -> subprocess.Popen:
    env = {
        **os.environ,
        "LINEWATCH_REDIS_URL": redis_url,
        "OMP_NUM_THREADS": "1",  # two workers and the test share two cores
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "worker",
        "--config",
        str(station_file),
        "--data-dir",
        str(data_dir),
        "--device",
        "cpu",
        "--claim-idle-ms",
        str(claim_idle_ms),
    ]
    with log.open("ab") as out:  # appended: a restarted worker's log follows the killed one's
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def logs(paths: list[Path]) -> str:
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in paths
    )


# ---------------------------------------------------------------- a camera on the network


class MjpegCamera:
    """An IP camera serving MJPEG over HTTP (multipart/x-mixed-replace), as many real ones do.

    It can go away (``stop``: the port closes, open connections drop) and come back on the same
    port (``start``), send garbage instead of JPEGs, change its frame size and run at any rate.
    Frame ``i`` is a bright plate whose brightness encodes ``i``; every ``defect_every``-th frame
    carries a dark hole.
    """

    def __init__(self, fps: float = 25.0, size: tuple[int, int] = (96, 128), defect_every: int = 10) -> None:
        self.fps, self.size, self.defect_every = fps, size, defect_every
        self.garbage = 0  # how many of the next frames are random bytes
        self.sent = 0
        self._generation = 0  # bumped by stop(): streaming handlers of the old server end
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                generation = camera._generation
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while camera._generation == generation:
                        part = camera.next_part()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(part)).encode()
                            + b"\r\n\r\n"
                            + part
                            + b"\r\n"
                        )
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._handler = Handler
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def next_part(self) -> bytes:
        i = self.sent
        self.sent += 1
        rng = np.random.default_rng(i)
        if self.garbage > 0:
            self.garbage -= 1
            return bytes(rng.integers(0, 256, 2000, dtype=np.uint8))
        hole = bool(self.defect_every) and i % self.defect_every == self.defect_every - 1
        return encode_jpeg(plate_image(rng, hole, self.size), 90)

    def start(self) -> None:
        server = _ReusableServer(("127.0.0.1", self.port), self._handler)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """The camera is gone: no new connections, streaming ones end."""
        self._generation += 1
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ReusableServer(ThreadingHTTPServer):
    allow_reuse_address = True  # back on the same port at once, as a rebooted camera is
    daemon_threads = True


def plate_image(rng: np.random.Generator, hole: bool, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """The fault suite's part: a grey plate with a dark edge on top and sensor noise; a defective
    one has a dark hole in the middle."""
    h, w = size
    img = np.full((h, w, 3), 150, np.float32) + rng.normal(0, 1.5, (h, w, 1))
    img[: h // 8] = 60
    if hole:
        cv2.circle(img, (w // 2, h // 2), max(3, h // 8), (20, 20, 20), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def tiny_station(root: Path, station_id: str, source: str, fps: float, size: int = 64) -> Path:
    """A station on small frames (64 px): bank and inspection cost milliseconds, so fault tests
    can run thousands of frames. Four references: normal ``plate_image``s."""
    refs = root / f"{station_id}-references"
    refs.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        jpeg = encode_jpeg(plate_image(np.random.default_rng(10_000 + i), False), 90)
        (refs / f"ref-{i}.jpg").write_bytes(jpeg)
    text = (
        DEMO_YAML.replace("id: demo-line", f"id: {station_id}")
        .replace("source: line.avi", f"source: '{source}'")
        .replace("loop: true", "loop: false")
        .replace("fps: 5", f"fps: {fps}")
        .replace("image_size: 320", f"image_size: {size}")
        .replace("folder: references", f"folder: {refs.name}")
        .replace("  k: 4\n", "  k: 4\n  augment: false\n")
    )
    path = root / f"{station_id}.yaml"
    path.write_text(text)
    return path


def plate_video(path: Path, frames: int, defect_every: int = 25) -> set[int]:
    """A recorded video of ``plate_image``s; returns the indices of the defective frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (128, 96))
    bad = set()
    for i in range(frames):
        hole = i % defect_every == defect_every - 1
        writer.write(plate_image(np.random.default_rng(i), hole))
        if hole:
            bad.add(i)
    writer.release()
    return bad


class RedisProcess:
    """A redis-server of the test's own (so it can be killed) that persists every write (AOF,
    fsync always): what a deployment that must not lose frames runs."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed"
            if os.environ.get("CI"):
                pytest.fail(message + " (CI is set, so it must be)")
            pytest.skip(message)
        self.binary, self.folder = binary, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """A crash: no shutdown, no final save; what the AOF holds is what survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
