"""Faults of the running pipeline: a worker killed mid-run, poison frames, a database outage and a
capture restart. Each test checks what a user would notice: frames lost or stored twice, a worker
stuck on a bad message, results acknowledged before they were stored, frame ids reused.

The station model (memory bank) is built once for the module and copied into each test's data
dir, so only the first test pays for it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from config.loader import load_station
from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.capture_role import run_capture
from pipeline.demo_assets import render_part, write_video
from pipeline.messages import SCHEMA_VERSION, ResultMessage
from pipeline.recorder import Recorder, RecorderOptions
from pipeline.redis_server import start_embedded
from pipeline.store.models import Defect
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.faults.harness import (
    STATION,
    VIDEO_FRAMES,
    Assets,
    acked_ids,
    delivered_ids,
    entries,
    frame_fields,
    logs,
    pending_ids,
    start_worker,
    stop_processes,
    stored_seqs,
    wait_for,
)
from tests.pipeline.redis_fixtures import RedisTarget, _Proxy
from workers.inspect_worker import InspectWorker, WorkerOptions
from workers.station_loader import load_inspectors

DB_OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return Assets(tmp_path_factory.mktemp("faults-assets"))


@pytest.mark.slow
async def test_killed_worker_frames_are_taken_over(assets: Assets, tmp_path: Path) -> None:
    """SIGKILL one of two `linewatch worker` processes while it holds frames: the other takes them
    over, and every frame ends as exactly one inspection row with the defective frames flagged."""
    data_dir = assets.data_dir(tmp_path)
    station = load_station(assets.station_file)
    frames = keys.frames(STATION)
    server = await asyncio.to_thread(start_embedded, data_dir)
    r = streams.connect(server.url)
    db_url = f"sqlite:///{data_dir / 'linewatch.db'}"
    await asyncio.to_thread(upgrade, db_url)
    store = Store.open(db_url)
    log_files = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    procs = [start_worker(assets.station_file, data_dir, server.url, log) for log in log_files]
    names = {f"worker-{socket.gethostname()}-{p.pid}": p for p in procs}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Recorder(r, store, [STATION], data_dir, "rec").run(stop))]
    try:

        async def both_alive() -> bool:
            if any(p.poll() is not None for p in procs):
                pytest.fail(f"a worker exited early\n{logs(log_files)}")
            return set(await streams.alive(r, "worker")) == set(names)

        await wait_for(both_alive, 120, "both workers to start", every_s=0.25)
        tasks.append(asyncio.create_task(run_capture(server.url, [station], stop)))

        # mid-run: after a few results, kill whichever worker is first seen holding frames
        victim = ""

        async def someone_holds_frames() -> bool:
            nonlocal victim
            if await r.xlen(keys.results(STATION)) < 4:
                return False
            summary = await r.xpending(frames, keys.INSPECT_GROUP)
            holders = [streams._text(c["name"]) for c in summary["consumers"] if int(c["pending"]) > 0]
            victim = next((n for n in holders if n in names), "")
            return bool(victim)

        orphans: set[str] = set()
        for _ in range(20):  # a holder may ack between the look and the kill: freeze it first
            await wait_for(someone_holds_frames, 60, "a worker to hold frames", every_s=0.02)
            names[victim].send_signal(signal.SIGSTOP)
            orphans = await pending_ids(r, frames, keys.INSPECT_GROUP, victim)
            if orphans:
                break
            names[victim].send_signal(signal.SIGCONT)
        names[victim].send_signal(signal.SIGKILL)
        names[victim].wait()
        assert orphans, "the killed worker held no frames; nothing was tested"
        survivor = next(p for n, p in names.items() if n != victim)

        async def all_stored() -> bool:
            if survivor.poll() is not None:
                pytest.fail(f"the surviving worker exited\n{logs(log_files)}")
            return await asyncio.to_thread(store.count_inspections, STATION) >= VIDEO_FRAMES

        await wait_for(all_stored, 90, f"{VIDEO_FRAMES} inspections\n{logs(log_files)}", every_s=0.25)
        await wait_for(
            lambda: _empty(pending_ids(r, frames, keys.INSPECT_GROUP)), 30, "the frames to be acked"
        )
        await asyncio.sleep(1.0)  # a duplicate would be recorded by now

        seqs = await asyncio.to_thread(stored_seqs, store, STATION)
        first = seqs[0]
        assert seqs == list(range(first, first + VIDEO_FRAMES))  # every frame once, none lost
        flagged = await asyncio.to_thread(store.flagged_seqs, STATION)
        assert [s - first for s in flagged] == assets.defective
        # the victim's frames were acked by the survivor (a dead consumer acks nothing) ...
        assert not orphans & await pending_ids(r, frames, keys.INSPECT_GROUP)
        # ... after a takeover, not by sending them to the dead-letter stream
        assert streams.counter_field("dead", frames) not in await streams.counters(r)
        assert await r.xlen(keys.dead_letter(frames)) == 0
    finally:
        stop.set()
        await asyncio.to_thread(stop_processes, procs)
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        await r.aclose()
        store.close()
        await asyncio.to_thread(server.stop)


async def _empty(ids: Awaitable[set[str]]) -> bool:
    return not await ids


# ---------------------------------------------------------------- 2. corrupt and malformed frames


@pytest.mark.slow
@pytest.mark.parametrize("device_decode", [False, True], ids=["host-decode", "device-decode"])
async def test_poison_frames_are_dead_lettered_and_valid_ones_inspected(
    assets: Assets, tmp_path: Path, device_decode: bool
) -> None:
    """A corrupt JPEG, an empty one, a frame without its JPEG field and one of an unknown message
    version go to the dead-letter stream (counted, acked); the valid frames around them, read in
    the same batch, and a frame sent afterwards are inspected."""
    data_dir = assets.data_dir(tmp_path)
    station = load_station(assets.station_file)
    inspectors = await asyncio.to_thread(load_inspectors, [station], data_dir, "cpu")
    frames = keys.frames(STATION)
    assert SCHEMA_VERSION != 99
    # (fields, why it must be dead-lettered or None if valid); demo parts 6, 13 and 20 are defective
    messages: list[tuple[dict[str, Any], str | None]] = [
        (frame_fields(STATION, 1, 0), None),
        ({**frame_fields(STATION, 2, 1), "jpeg": b"\xff\xd8\xff\xe0 not a JPEG" * 20}, "does not decode"),
        (frame_fields(STATION, 3, 6), None),
        ({k: v for k, v in frame_fields(STATION, 4, 3).items() if k != "jpeg"}, "no field 'jpeg'"),
        ({**frame_fields(STATION, 5, 4), "v": 99}, "version '99'"),
        ({**frame_fields(STATION, 6, 5), "jpeg": b""}, "does not decode"),
        (frame_fields(STATION, 7, 13), None),
    ]
    with start_embedded(data_dir) as server:
        r = streams.connect(server.url)
        stop = asyncio.Event()
        # device decode: the JPEG bytes go to the inspector as a GPU worker sends them to nvJPEG
        worker = InspectWorker(r, inspectors, "w-poison", WorkerOptions(device_decode=device_decode))
        task: asyncio.Task | None = None
        try:
            await streams.ensure_group(r, frames, keys.INSPECT_GROUP)
            bad = {}  # entry id -> expected reason
            for fields, why in messages:  # all there before the worker starts: one batch
                entry_id = await streams.add(r, frames, fields, maxlen=None)
                if why:
                    bad[entry_id] = why
            task = asyncio.create_task(worker.run(stop))

            async def results_in(n: int) -> bool:
                if task.done():
                    task.result()  # the worker must not die on a bad message: raise what killed it
                    pytest.fail("the worker stopped")
                return await r.xlen(keys.results(STATION)) >= n

            await wait_for(lambda: results_in(3), 60, "results of the valid frames")
            await streams.add(r, frames, frame_fields(STATION, 8, 20), maxlen=None)
            await wait_for(lambda: results_in(4), 30, "the result of a frame sent afterwards")
            await asyncio.sleep(0.3)  # a result of a bad frame would show up now

            results = [ResultMessage.from_fields(f) for _, f in await entries(r, keys.results(STATION))]
            assert sorted(res.seq for res in results) == [1, 3, 7, 8]
            assert sorted(res.seq for res in results if res.flagged) == [3, 7, 8]  # parts 6, 13, 20
            dead = await entries(r, keys.dead_letter(frames))
            reasons = {streams._text(f[b"source_id"]): f[b"error"].decode() for _, f in dead}
            assert reasons.keys() == bad.keys()  # each bad message once, no valid one
            for entry_id, why in bad.items():
                assert why in reasons[entry_id]
            assert (await streams.counters(r))[streams.counter_field("dead", frames)] == len(bad)
            assert (worker.dead, worker.inspected) == (len(bad), 4)
            assert not await pending_ids(r, frames, keys.INSPECT_GROUP)  # everything acked
        finally:
            stop.set()
            if task is not None:
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=30)
            await r.aclose()


# ---------------------------------------------------------------- 3. database away for a while


def result(station_id: str, seq: int, flagged: bool) -> ResultMessage:
    now = time.time()
    frame = frame_jpeg() if flagged else b""  # the original frame the recorder saves as evidence
    return ResultMessage(
        station_id, seq, now - 0.1, now, 0.9 if flagged else 0.2, flagged, 100.0, worker="w", frame_jpeg=frame
    )


@pytest.mark.slow
@pytest.mark.parametrize("redis_target", ["embedded"], indirect=True)
async def test_database_outage_keeps_results_pending_until_committed(
    r: streams.Redis, redis_target: RedisTarget, postgres_schema_url: str, tmp_path: Path
) -> None:
    """PostgreSQL is cut off for 30 s (a TCP proxy in front of it closes) while results keep
    arriving: none is acked while the database is away, and after it returns each is stored
    exactly once."""
    station_id = f"{redis_target.prefix}-db"
    results = keys.results(station_id)
    await asyncio.to_thread(upgrade, postgres_schema_url)
    direct = Store.open(postgres_schema_url)  # the test's own view of the database
    url = make_url(postgres_schema_url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    flaky_url = url.set(host="127.0.0.1", port=proxy.port).update_query_dict({"connect_timeout": "2"})
    store = Store.open(flaky_url.render_as_string(hide_password=False))
    recorder = Recorder(
        r,
        store,
        [station_id],
        tmp_path / "data",
        "rec",
        RecorderOptions(batch_size=4, block_ms=100, retry_max_s=0.5),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))

    async def publish(seqs: range, extra: list[int] | None = None) -> set[str]:
        ids = set()
        for seq in [*seqs, *(extra or [])]:
            flagged = seq % 5 == 0
            ids.add(await streams.add(r, results, result(station_id, seq, flagged).to_fields(), maxlen=None))
        return ids

    async def count() -> int:
        return await asyncio.to_thread(direct.count_inspections, station_id)

    async def counted(n: int) -> bool:
        if task.done():
            task.result()
            pytest.fail("the recorder stopped")
        return await count() >= n

    try:
        before = await publish(range(1, 11))
        await wait_for(lambda: counted(10), 30, "the first results to be stored")
        await wait_for(lambda: _empty(pending_ids(r, results, keys.RECORD_GROUP)), 10, "acks")

        await proxy.stop()  # the database goes away; results keep coming, one frame twice
        during = await publish(range(11, 21), extra=[15])

        async def read_some() -> bool:
            return bool(during & await delivered_ids(r, results, keys.RECORD_GROUP))

        await wait_for(read_some, 10, "the recorder to read results during the outage")
        down_since = time.monotonic()
        halfway = False
        while time.monotonic() - down_since < DB_OUTAGE_S:  # the recorder retries the commit
            await asyncio.sleep(1.0)
            if not halfway and time.monotonic() - down_since > DB_OUTAGE_S / 2:
                during |= await publish(range(21, 31))  # results keep coming while it is away
                halfway = True
            assert await acked_ids(r, results, keys.RECORD_GROUP) == before, "acked before commit"
            assert await count() == 10
            assert not task.done()

        await proxy.start()  # back on the same address
        await wait_for(lambda: counted(30), 30, "the results held during the outage to be stored")
        await wait_for(lambda: _empty(pending_ids(r, results, keys.RECORD_GROUP)), 10, "acks")
        await asyncio.sleep(0.5)
        # all acked: still in the stream and acked, or trimmed away (only acked entries are)
        remaining = {i for i, _ in await entries(r, results)}
        assert (before | during) & remaining <= await acked_ids(r, results, keys.RECORD_GROUP)
        assert not await pending_ids(r, results, keys.RECORD_GROUP)
        seqs = await asyncio.to_thread(stored_seqs, direct, station_id)
        assert seqs == list(range(1, 31))  # each once, the twice-published frame too
        assert await asyncio.to_thread(direct.flagged_seqs, station_id) == [5, 10, 15, 20, 25, 30]
        with direct.engine.connect() as conn:
            defects = conn.execute(
                select(func.count()).select_from(Defect).where(Defect.station_id == station_id)
            ).scalar_one()
        assert defects == 6
        assert recorder.evidence_failures == 0
    finally:
        stop.set()
        if proxy._server is None:
            await proxy.start()  # a failed test may leave the recorder retrying a commit
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=30)
        await proxy.stop()
        store.close()
        direct.close()


def frame_jpeg() -> bytes:
    return encode_jpeg(render_part(1)[0], 80)


# ---------------------------------------------------------------- 4. capture restart


async def test_restarted_capture_continues_numbering(
    r: streams.Redis, redis_target: RedisTarget, assets: Assets
) -> None:
    """Stopping the capture (once mid-video, once at its end) and starting it again continues the
    station's seq after the last published one, so no frame id is used twice."""
    station_id = f"{redis_target.prefix}-cap"
    video = f"{station_id}.avi"
    write_video(assets.root / video, frames=6)
    station = load_station(assets.station_yaml(station_id, video, fps=20))
    frames = keys.frames(station_id)

    async def capture_until(n_frames: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_capture(redis_target.url, [station], stop))
        try:

            async def published() -> bool:
                if task.done():
                    task.result()
                    pytest.fail("the capture stopped")
                return await r.xlen(frames) >= n_frames

            await wait_for(published, 30, f"{n_frames} frames", every_s=0.02)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)

    async def seqs() -> list[int]:
        return [int(f[b"seq"]) for _, f in await entries(r, frames)]

    async def last_seq() -> int:
        value: Any = await r.get(keys.last_seq(station_id))
        return int(value)

    try:
        await capture_until(2)  # stopped mid-video
        first_run = await seqs()
        assert await last_seq() == first_run[-1]
        await capture_until(len(first_run) + 6)  # the whole video this time
        await capture_until(len(first_run) + 12)  # and once more
        got = await seqs()
        assert got == list(range(got[0], got[0] + len(got)))  # consecutive: nothing reused or skipped
        assert await last_seq() == got[-1]
    finally:
        await r.srem(keys.stations_set(), station_id)
