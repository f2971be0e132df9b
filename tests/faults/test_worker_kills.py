"""Workers SIGKILLed again and again, mid-batch, during a 10,000-frame recorded run: every frame
ends as exactly one inspection row, every defective frame as exactly one defect, nothing is
dead-lettered. The killed workers are restarted at once, as ``linewatch run``'s supervisor does.

Frames are small (64 px inspection size) so that the run takes a minute on two cores; they are
put in the frame stream as capture would publish them.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from config.loader import load_station
from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.messages import FrameMessage
from pipeline.originals import downsize
from pipeline.recorder import Recorder
from pipeline.redis_server import start_embedded
from pipeline.store.models import Defect
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.faults.harness import (
    logs,
    pending_ids,
    plate_image,
    start_worker,
    stop_processes,
    stored_seqs,
    tiny_station,
)
from workers.station_loader import load_inspectors

pytestmark = pytest.mark.slow

STATION = "kills"
FRAMES = 10_000
DEFECT_EVERY = 50
WORKERS = 2
#: a worker is killed each time another 1/(KILLS + 2) of the frames is stored: by progress, not by
#: the clock, so a faster machine gets as many kills (at 2.5 s intervals a 2-core EPYC finished the
#: 10,000 frames in about 20 s after 5 to 7 kills)
KILLS = 12


def camera_frames() -> tuple[list[bytes], bytes]:
    """A few normal plates (their sensor noise differs) and one with a hole, as capture sends them."""
    rng = np.random.default_rng(0)

    def plate(hole: bool) -> bytes:
        return encode_jpeg(downsize(plate_image(rng, hole), 64), 90)

    return [plate(False) for _ in range(8)], plate(True)


async def publish(r: streams.Redis, first_seq: int) -> set[int]:
    """All frames into the stream (recorded source: nothing trims it); returns the defective seqs."""
    normals, defective = camera_frames()
    bad = set()
    stream = keys.frames(STATION)
    for start in range(0, FRAMES, 500):
        async with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(FRAMES, start + 500)):
                hole = i % DEFECT_EVERY == DEFECT_EVERY - 1
                jpeg = defective if hole else normals[i % len(normals)]
                fields: Any = FrameMessage(
                    STATION, first_seq + i, time.time(), jpeg, 64, 48, 128, 96
                ).to_fields()
                pipe.xadd(stream, fields)
                if hole:
                    bad.add(first_seq + i)
            await pipe.execute()
    return bad


async def holders(r: streams.Redis) -> dict[str, int]:
    """Consumer name -> frames it holds (delivered, not acknowledged)."""
    summary: Any = await r.xpending(keys.frames(STATION), keys.INSPECT_GROUP)
    return {streams._text(c["name"]): int(c["pending"]) for c in summary["consumers"] or []}


async def test_workers_killed_again_and_again_lose_and_double_nothing(tmp_path: Path) -> None:
    station_file = tiny_station(tmp_path, STATION, "http://127.0.0.1:9/unused.mjpg", fps=30)
    station = load_station(station_file)
    data_dir = tmp_path / "d"
    await asyncio.to_thread(load_inspectors, [station], data_dir, "cpu")  # the bank, built once
    db_url = f"sqlite:///{data_dir / 'linewatch.db'}"
    await asyncio.to_thread(upgrade, db_url)
    store = Store.open(db_url)
    rng = random.Random(0)
    host = socket.gethostname()
    with start_embedded(data_dir) as server:
        r = streams.connect(server.url)
        await streams.ensure_group(r, keys.frames(STATION), keys.INSPECT_GROUP)
        defective = await publish(r, first_seq=1)
        log = tmp_path / "workers.log"
        workers: dict[str, subprocess.Popen] = {}

        def spawn() -> None:
            p = start_worker(station_file, data_dir, server.url, log, claim_idle_ms=1500)
            workers[f"worker-{host}-{p.pid}"] = p

        for _ in range(WORKERS):
            spawn()
        stop = asyncio.Event()
        recorder = asyncio.create_task(Recorder(r, store, [STATION], data_dir, "rec").run(stop))
        kills, deadline = 0, time.monotonic() + 400
        try:
            while (stored := await asyncio.to_thread(store.count_inspections, STATION)) < FRAMES:
                assert time.monotonic() < deadline, f"stalled after {kills} kills\n{logs([log])}"
                assert not recorder.done(), recorder.exception()
                await asyncio.sleep(0.05 * rng.uniform(0.5, 1.5))
                if stored < (kills + 1) * FRAMES // (KILLS + 2):
                    continue
                busy = [name for name, n in (await holders(r)).items() if n and name in workers]
                if not busy:
                    continue  # kill mid-batch only: a worker holding frames
                victim = rng.choice(busy)
                workers[victim].kill()
                workers.pop(victim).wait()
                kills += 1
                spawn()

            async def settled() -> bool:
                return not await pending_ids(r, keys.frames(STATION), keys.INSPECT_GROUP)

            for _ in range(100):
                if await settled():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # a duplicate would be recorded by now
            seqs = await asyncio.to_thread(stored_seqs, store, STATION)
            assert seqs == list(range(1, FRAMES + 1))  # every frame exactly once
            assert set(await asyncio.to_thread(store.flagged_seqs, STATION)) == defective
            with store.engine.connect() as conn:
                defects = conn.execute(
                    select(Defect.seq, func.count()).where(Defect.station_id == STATION).group_by(Defect.seq)
                ).all()
            assert {seq for seq, _ in defects} == defective
            assert all(n == 1 for _, n in defects)  # no frame has two defects
            counters = await streams.counters(r)
            assert counters.get(streams.counter_field("dead", keys.frames(STATION)), 0) == 0
            assert kills >= 8, f"only {kills} kills: the run ended before the faults were tried"
            print(f"{FRAMES} frames, {kills} worker kills, {len(defective)} defects")
        finally:
            stop.set()
            await asyncio.to_thread(stop_processes, list(workers.values()))
            await asyncio.gather(recorder, return_exceptions=True)
            await r.aclose()
            store.close()
