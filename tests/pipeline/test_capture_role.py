"""The capture role on a real Redis: a source that disappears and comes back shows in the state hash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from redis.asyncio import Redis

from config.loader import load_station
from pipeline import keys
from pipeline.capture_role import run_capture
from tests.pipeline.redis_fixtures import RedisTarget
from tests.pipeline.test_capture import write_video


def station_file(tmp_path: Path, station_id: str, video: Path) -> Path:
    refs = tmp_path / "refs"
    refs.mkdir()
    cv2.imwrite(str(refs / "normal.png"), np.full((48, 64, 3), 128, np.uint8))
    path = tmp_path / "station.yaml"
    path.write_text(
        f"id: {station_id}\ncamera:\n  source: {video.name}\n  loop: true\n  fps: 20\n"
        "product:\n  name: part\nreferences:\n  folder: refs\n"
    )
    return path


async def state_of(r: Redis, station_id: str) -> dict[str, Any]:
    raw: Any = await r.hgetall(keys.station_state(station_id))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


async def wait_state(
    r: Redis, station_id: str, ok: Callable[[dict[str, Any]], bool], seen: list[str], timeout: float = 15
) -> dict[str, Any]:
    """Poll the state hash (as the dashboard does) until ``ok``; every state seen goes to ``seen``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        state = await state_of(r, station_id)
        if state and (not seen or seen[-1] != state["state"]):
            seen.append(state["state"])
        if state and ok(state):
            return state
        await asyncio.sleep(0.02)
    pytest.fail(f"state never satisfied the condition; states seen: {seen}")


@pytest.mark.parametrize("redis_target", ["embedded", "external"], indirect=True)
async def test_a_source_that_disappears_and_comes_back_is_reported_through_redis(
    r: Redis, redis_target: RedisTarget, tmp_path: Path
) -> None:
    station_id = f"{redis_target.prefix}-cam"
    video = write_video(tmp_path / "line.avi", 5)
    station = load_station(station_file(tmp_path, station_id, video))
    stop = asyncio.Event()
    task = asyncio.create_task(run_capture(redis_target.url, [station], stop))
    seen: list[str] = []
    try:
        await wait_state(r, station_id, lambda s: s["state"] == "online" and s["frames"] > 0, seen)
        video.rename(tmp_path / "away.avi")
        lost = await wait_state(r, station_id, lambda s: s["state"] == "reconnecting", seen)
        before = await r.xlen(keys.frames(station_id))
        (tmp_path / "away.avi").rename(video)
        again = lambda s: s["state"] == "online" and s["reconnects"] >= 1  # noqa: E731
        back = await wait_state(r, station_id, again, seen)
        await asyncio.sleep(0.5)
        assert await r.xlen(keys.frames(station_id)) > before  # frames flow again after the reconnect
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert str(video) in lost["last_error"]
    assert seen[:3] == ["online", "reconnecting", "online"]
    assert back["source"].endswith("line.avi")


async def test_a_station_whose_publishing_fails_ends_the_role_for_a_restart(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """An error no reconnect cures (MISCONF, OOM, a bug) in one station's publishing left the role
    running with that station dead, so the supervisor never restarted it; a second station's
    failure was not even logged. Now every failure is logged and the role ends with an error."""
    from redis.exceptions import ResponseError

    from pipeline import capture_role
    from pipeline.redis_server import start_embedded

    delays = {"a": 0.2, "b": 0.2}

    async def failing_run(self: capture_role.StationPublisher) -> None:
        await asyncio.sleep(delays[self.station.id])
        raise ResponseError(f"MISCONF (station {self.station.id}'s XADD)")

    monkeypatch.setattr(capture_role.StationPublisher, "run", failing_run)
    stations: Any = [type("S", (), {"id": sid})() for sid in delays]
    with start_embedded(tmp_path / "r") as server:
        stop = asyncio.Event()
        with pytest.raises(capture_role.CaptureRoleError, match="station"):
            await asyncio.wait_for(run_capture(server.url, stations, stop), 10)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "station a: capture failed" in logged and "station b: capture failed" in logged


async def test_the_role_stops_while_its_live_station_is_writing_to_redis(tmp_path: Path, monkeypatch) -> None:
    """The stop used to cancel each station's task once and wait. Python 3.11's wait_for, which
    redis-py puts around every send, drops a cancellation that lands as the send finishes, so a
    station cancelled mid-write went on publishing and the role never ended (CI hung on it). Here
    the stop comes while the live station writes, five times over; the role must end each time,
    with the station's final state reported."""
    from pipeline import capture_role
    from pipeline.redis_server import start_embedded
    from tests.faults.harness import MjpegCamera, tiny_station

    camera = MjpegCamera(fps=200.0)
    station = load_station(tiny_station(tmp_path, "fast-cam", camera.url, fps=120))
    stop = asyncio.Event()
    writes = 0
    original = capture_role.StationPublisher.publish_frames

    async def publish_frames(self: capture_role.StationPublisher, msgs: Any, live: bool) -> None:
        nonlocal writes
        writes += 1
        if writes % 20 == 0:
            stop.set()  # the role's stop runs while this write is on the wire
        await original(self, msgs, live)

    monkeypatch.setattr(capture_role.StationPublisher, "publish_frames", publish_frames)
    try:
        with start_embedded(tmp_path / "r") as server:
            r = Redis.from_url(server.url)
            for _ in range(5):
                stop.clear()
                await asyncio.wait_for(run_capture(server.url, [station], stop), 15)
                state = await state_of(r, "fast-cam")
                assert state["state"] == "offline" and state["frames"] > 0
            await r.aclose()
    finally:
        camera.stop()


async def test_flagged_frames_wait_for_an_explainer_that_starts_after_capture(tmp_path: Path) -> None:
    """Capture trims the flagged stream by what its groups have read. Before the explainer's
    first start its group did not exist, so the flagged frames of a station with an explainer were
    trimmed as soon as capture had sent their originals, and the explainer never saw them."""
    from pipeline import streams
    from pipeline.redis_server import start_embedded
    from tests.pipeline.store.factories import make_result

    video = write_video(tmp_path / "line.avi", 5)
    path = station_file(tmp_path, "explained", video)
    path.write_text(
        path.read_text() + "explainer:\n  backend: openai\n  model: m\n  base_url: http://127.0.0.1:9/v1\n"
    )
    station = load_station(path)
    flagged = keys.flagged("explained")
    stop = asyncio.Event()
    with start_embedded(tmp_path / "r") as server:
        r = Redis.from_url(server.url)
        task = asyncio.create_task(run_capture(server.url, [station], stop))
        try:
            for _ in range(100):  # capture's evidence group is there: it has started
                if await r.exists(flagged):
                    break
                await asyncio.sleep(0.05)
            ids = [
                await r.xadd(flagged, make_result("explained", seq, flagged=True).to_fields())
                for seq in (1, 2)
            ]

            async def evidence_done() -> bool:
                groups = {g["name"].decode(): g for g in await r.xinfo_groups(flagged)}
                return (
                    groups["evidence"]["last-delivered-id"] == ids[-1] and not groups["evidence"]["pending"]
                )

            for _ in range(100):
                if await evidence_done():
                    break
                await asyncio.sleep(0.05)
            assert await evidence_done()
            await streams.trim_acknowledged(r, flagged)  # what capture does every 10 s
            assert await r.xlen(flagged) == 2
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
            await r.aclose()
