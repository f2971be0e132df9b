"""The explain role on real Redis (embedded and external) with the loopback chat server.

Only heads of defect episodes reach the LLM, every flagged frame ends with exactly one verdict and
is acked only after it, and nothing is lost when the server fails, times out or falls behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from config.station import StationConfig
from pipeline import keys, streams
from pipeline.messages import ResultMessage, VerdictMessage
from pipeline.recorder import Recorder
from pipeline.store import Store, upgrade
from pipeline.store.models import Defect
from tests.pipeline.redis_fixtures import RedisTarget, r, redis_target
from tests.workers.explain.chat_server import ChatServer, Reply
from tests.workers.explain.conftest import flagged_result, frame_jpeg, region
from workers.explain.backends.openai import OpenAIBackend
from workers.explain.role import Explainer, ExplainOptions

__all__ = ["r", "redis_target"]

TOP_LEFT, BOTTOM_RIGHT = [region(40, 30, 40, 40)], [region(250, 180, 40, 40, "bottom right")]


def station(station_id: str, **explainer: Any) -> StationConfig:
    return StationConfig.model_validate(
        {
            "id": station_id,
            "camera": {"source": 0},
            "product": {"name": "magnetic tile"},
            "references": {"folder": "refs"},
            "explainer": {"backend": "openai", "model": "tiny", "base_url": "http://127.0.0.1:1/v1"}
            | explainer,
        }
    )


async def publish(r: Redis, results: list[ResultMessage], *, also_results: bool = False) -> None:
    """What capture and the worker leave behind for a flagged frame: its original and the entries."""
    for res in results:
        fields: Any = dataclasses.replace(res, frame_jpeg=frame_jpeg(res.seq)).to_fields()
        if also_results:
            await r.xadd(keys.results(res.station_id), fields)
        if res.flagged:
            await r.xadd(keys.flagged(res.station_id), fields)


async def verdicts(r: Redis, station_id: str) -> dict[int, VerdictMessage]:
    entries = await r.xrange(keys.verdicts(station_id))
    out: dict[int, VerdictMessage] = {}
    for _, fields in entries:
        v = VerdictMessage.from_fields(fields)
        assert v.seq not in out, f"two verdicts for frame {v.seq}"
        out[v.seq] = v
    return out


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def pending(r: Redis, station_id: str) -> int:
    info: Any = await r.xpending(keys.flagged(station_id), keys.EXPLAIN_GROUP)
    return int(info["pending"])


async def run_explainer(
    r: Redis, stations: list[StationConfig], server: ChatServer, expected: int, **backend: Any
) -> Explainer:
    options = {"timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.01} | backend
    be = OpenAIBackend(server.url, "tiny", concurrency=stations[0].explainer.concurrency, **options)
    explainer = Explainer(r, stations, {s.id: be for s in stations}, "ex-1", ExplainOptions(block_ms=100))
    stop = asyncio.Event()
    task = asyncio.create_task(explainer.run(stop))

    async def done() -> bool:
        return sum([len(await verdicts(r, s.id)) for s in stations]) >= expected

    try:
        await until(done)
        await asyncio.sleep(0.3)  # anything extra (a second verdict) would show up now
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await be.close()
    return explainer


async def test_one_question_per_defect_episode(
    r: Redis, redis_target: RedisTarget, chat_server: ChatServer
) -> None:
    sid = f"{redis_target.prefix}-line"
    frames = [flagged_result(sid, s, TOP_LEFT) for s in (1, 2, 3, 4)]  # one defect passing by
    frames += [flagged_result(sid, 10, BOTTOM_RIGHT), flagged_result(sid, 11, TOP_LEFT)]
    await publish(r, frames)

    explainer = await run_explainer(r, [station(sid)], chat_server, expected=6)

    got = await verdicts(r, sid)
    assert len(chat_server.requests) == 3  # heads 1, 10 and 11; not 2-4, the same scratch again
    assert {s: v.status for s, v in got.items()} == {
        1: "ok", 2: "episode", 3: "episode", 4: "episode", 10: "ok", 11: "ok"
    }  # fmt: skip
    assert [got[s].episode_seq for s in (1, 2, 3, 4, 10, 11)] == [1, 1, 1, 1, 10, 11]
    assert got[1].anomaly is True and got[1].defect_type == "scratch" and got[1].model == "tiny"
    assert await pending(r, sid) == 0  # all acked, after their verdicts
    assert explainer.counts["asked"] == 3 and explainer.counts["episode"] == 3


async def test_failing_and_slow_server_loses_nothing(
    r: Redis, redis_target: RedisTarget, chat_server: ChatServer
) -> None:
    sid = f"{redis_target.prefix}-line"
    frames = [flagged_result(sid, 10 * i, TOP_LEFT) for i in range(1, 5)]  # separate episodes
    frames.append(flagged_result(sid, 50, [region() | {"peak": 0.11}]))  # meets a server that keeps failing
    await publish(r, frames)
    # the first question meets a 500, a 429 and a timeout before it is answered
    chat_server.script.extend([Reply(status=500), Reply(status=429), Reply(delay_s=1.0)])

    def by_frame(body: dict) -> Reply:
        prompt = body["messages"][1]["content"][-1]["text"]
        return Reply(status=503) if "peak score 0.11" in prompt else Reply()

    chat_server.default = by_frame

    await run_explainer(r, [station(sid, concurrency=1)], chat_server, expected=5, max_retries=3)

    got = await verdicts(r, sid)
    assert sorted(got) == [10, 20, 30, 40, 50]  # every frame has its verdict
    assert [got[s].status for s in (10, 20, 30, 40)] == ["ok"] * 4
    assert got[50].status == "failed" and "HTTP 503" in (got[50].note or "")
    assert len(chat_server.requests) == 3 + 4 + 4  # 3 failures, 4 answers, 4 tries for frame 50
    assert await pending(r, sid) == 0


async def test_backlog_skips_the_oldest_and_never_holds_up_reading(
    r: Redis, redis_target: RedisTarget, chat_server: ChatServer
) -> None:
    sid = f"{redis_target.prefix}-line"
    chat_server.default = lambda body: Reply(delay_s=0.4)  # a slow LLM
    frames = [flagged_result(sid, 10 * i, TOP_LEFT) for i in range(1, 9)]  # eight episodes at once
    await publish(r, frames)

    explainer = await run_explainer(
        r, [station(sid, concurrency=1, max_pending=2)], chat_server, expected=8, timeout_s=5.0
    )

    got = await verdicts(r, sid)
    skipped = sorted(s for s, v in got.items() if v.status == "skipped")
    asked = sorted(s for s, v in got.items() if v.status == "ok")
    assert len(got) == 8 and len(skipped) + len(asked) == 8
    assert len(asked) == len(chat_server.requests) <= 3  # one in flight + the backlog of two
    assert all(got[s].note == "skipped: backlog" for s in skipped)
    assert 80 in asked  # the newest frame is never the one given up
    assert skipped and max(skipped) < max(asked)
    assert await pending(r, sid) == 0 and explainer.counts["skipped"] == len(skipped)


async def test_recorder_stores_verdicts_on_the_defects(
    r: Redis, redis_target: RedisTarget, chat_server: ChatServer, tmp_path: Path
) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    sid = f"{redis_target.prefix}-line"
    results = [flagged_result(sid, s, TOP_LEFT) for s in (1, 2, 3)]
    results.append(ResultMessage(sid, 4, 1.0, 1.1, 0.1, False, 10.0))  # a good frame
    # the explainer answers before the recorder even starts: its verdicts must wait for the defects
    await publish(r, results, also_results=True)
    await run_explainer(r, [station(sid)], chat_server, expected=3)

    url = f"sqlite:///{tmp_path / 'lw.db'}"
    upgrade(url)
    store = Store.open(url)
    rec = Recorder(r, store, [sid], tmp_path, "rec", explained={sid})
    stop = asyncio.Event()
    task = asyncio.create_task(rec.run(stop))

    def rows() -> list[Defect]:
        with Session(store.engine) as session:
            return list(session.scalars(select(Defect).order_by(Defect.seq)))

    async def stored() -> bool:
        return len(rows()) == 3 and all(d.verdict_status != "pending" for d in rows())

    try:
        await until(stored)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    defects = rows()
    store.close()
    assert [(d.seq, d.verdict_status, d.verdict_episode_seq) for d in defects] == [
        (1, "ok", 1), (2, "episode", 1), (3, "episode", 1)
    ]  # fmt: skip
    assert defects[0].verdict_agrees is True and defects[0].score == pytest.approx(0.87)
    assert len(chat_server.requests) == 1
    info: Any = await r.xpending(keys.verdicts(sid), keys.RECORD_GROUP)
    assert int(info["pending"]) == 0
    await streams.reconnecting(lambda: r.delete(keys.results(sid)), what="cleanup")
