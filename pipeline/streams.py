"""Redis Streams transport: consumer groups, batched reads, acks, takeover, dead letters, heartbeats."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple, TypeVar, cast

import redis.exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry  # the asyncio twin: a sync Retry is converted with a warning
from redis.backoff import ExponentialWithJitterBackoff

from pipeline import keys, metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
FieldValue = bytes | str | int | float

SOCKET_TIMEOUT_S = 30.0  # must exceed any XREADGROUP BLOCK, or idle reads would look like outages
HEALTH_CHECK_S = 15  # PING a pooled connection idle this long before reusing it
DEAD_LETTER_MAXLEN = 10_000  # newest dead letters kept per stream for inspection
# Errors that mean "Redis is away for now" (restart, network, loading its data), not "bad request".
# BusyLoadingError is a redis ConnectionError; the built-in ones come from socket-level failures.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    ConnectionError,
    TimeoutError,
)

# XAUTOCLAIM's reply verbatim: redis-py's parser drops the ids of deleted entries (Redis 7) and
# Redis 6.2 replies nil in their place, so JUSTID through a script is the one portable shape.
_AUTOCLAIM_IDS = (
    "return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4], 'JUSTID')"
)


class Entry(NamedTuple):
    """One stream entry as read by a consumer."""

    stream: str
    id: str
    fields: dict[bytes, bytes]


def connect(url: str, *, name: str | None = None) -> Redis:
    """A client for ``url`` (binary values, RESP2) that survives short outages on its own."""
    tcp: dict[str, Any] = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return Redis.from_url(
        url,
        decode_responses=False,
        protocol=2,  # read_batch parses the RESP2 reply shape
        client_name=name,
        socket_connect_timeout=5,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
        # Blips (a dropped connection) are retried here; longer outages by reconnecting().
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 3),
        **tcp,
    )


async def reconnecting(
    op: Callable[[], Awaitable[T]], *, what: str, base_s: float = 0.1, cap_s: float = 5.0
) -> T:
    """Run ``op`` until Redis answers: retry transient errors with capped exponential backoff.

    Only cancellation (or a non-transient error) ends the loop, so a role keeps going while Redis
    restarts. ``what`` names the stream or key in the log. An op retried after a lost reply may
    have run twice (e.g. XADD); consumers are idempotent on the frame id, which makes that safe.
    """
    delay = base_s
    attempt = 0
    while True:
        try:
            return await op()
        except TRANSIENT_ERRORS as e:
            attempt += 1
            metrics.REDIS_RETRIES.inc()
            wait = delay * random.uniform(0.5, 1.0)  # jitter: many roles reconnect at once
            logger.warning(
                "Redis unavailable for %s (attempt %d), retrying in %.2f s: %s", what, attempt, wait, e
            )
            await asyncio.sleep(wait)
            delay = min(cap_s, delay * 2)


async def ensure_group(r: Redis, stream: str, group: str, start: str = "0") -> None:
    """Create ``group`` on ``stream`` (and the stream) reading from ``start`` (default: the
    beginning; ``$``: only new entries); no-op if it exists."""
    try:
        await r.xgroup_create(stream, group, id=start, mkstream=True)
    except rex.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


async def add(r: Redis, stream: str, fields: Mapping[Any, FieldValue], maxlen: int | None) -> str:
    """Append an entry. ``maxlen`` (live sources) trims the oldest approximately; None never trims."""
    if maxlen is not None and maxlen < 1:
        raise ValueError(f"maxlen must be at least 1 or None, got {maxlen}")
    # Any keys: str (messages.to_fields) or bytes (Entry.fields republished); both are valid.
    entry_id = await r.xadd(stream, cast(Any, fields), maxlen=maxlen, approximate=True)
    return _text(entry_id)


async def read_batch(
    r: Redis, group: str, consumer: str, streams: list[str], count: int, block_ms: int
) -> list[Entry]:
    """New entries for ``consumer`` from several streams at once, up to ``count`` per stream.

    Waits up to ``block_ms`` when there is nothing. A group lost by a Redis without persistence
    (NOGROUP) is re-created and the read repeated once.
    """
    if not streams:
        raise ValueError("read_batch needs at least one stream")
    _check_block(r, block_ms)
    query: dict[Any, Any] = dict.fromkeys(streams, ">")
    reply: Any  # redis-py types replies as a union of every shape it knows
    try:
        reply = await r.xreadgroup(group, consumer, query, count=count, block=block_ms)
    except rex.ResponseError as e:
        if "NOGROUP" not in str(e):
            raise
        logger.warning("group %s missing on %s; re-creating it", group, ", ".join(streams))
        for stream in streams:
            await ensure_group(r, stream, group)
        reply = await r.xreadgroup(group, consumer, query, count=count, block=block_ms)
    return [
        Entry(_text(name), _text(entry_id), fields)
        for name, items in reply or []
        for entry_id, fields in items
        if entry_id is not None  # only history reads can see deleted entries; be safe anyway
    ]


async def ack(r: Redis, group: str, entries: Iterable[Entry]) -> int:
    """Acknowledge entries, one XACK per stream in one round trip; returns how many were pending."""
    by_stream = _ids_by_stream(entries)
    if not by_stream:
        return 0
    async with r.pipeline(transaction=False) as pipe:
        for stream, ids in by_stream.items():
            pipe.xack(stream, group, *ids)
        counts = await pipe.execute()
    return sum(int(c) for c in counts)


async def claim_stale(
    r: Redis, stream: str, group: str, consumer: str, min_idle_ms: int, count: int
) -> list[Entry]:
    """Take over up to ``count`` entries that another consumer left unacked for ``min_idle_ms``.

    Each takeover counts as a delivery (what dead_letter_if_exhausted looks at). Entries trimmed
    or deleted from the stream while pending cannot be processed any more: they are acked and
    counted under ``counter_field("trimmed", stream)`` instead of being returned.
    """
    reply: Any = await r.eval(_AUTOCLAIM_IDS, 1, stream, group, consumer, min_idle_ms, count)
    ids = [_text(i) for i in reply[1]]
    gone = len(reply[2]) if len(reply) > 2 else 0  # Redis ≥ 7 already dropped these from the PEL
    entries: list[Entry] = []
    if ids:
        # XCLAIM (min idle 0: they are ours now) bumps the delivery count and fetches the fields.
        claimed: Any = await r.xclaim(stream, group, consumer, 0, cast(Any, ids))
        found = {_text(i): f for i, f in claimed if i is not None}
        entries = [Entry(stream, i, found[i]) for i in ids if i in found]
        missing = [i for i in ids if i not in found]  # Redis 6.2 answers nil for these
        if missing:
            await r.xack(stream, group, *missing)
            gone += len(missing)
    if gone:
        await r.hincrby(keys.counters(), counter_field("trimmed", stream), gone)
        logger.warning("%d pending entries of %s were trimmed before processing; acked", gone, stream)
    return entries


async def dead_letter_if_exhausted(
    r: Redis, stream: str, group: str, entries: list[Entry], max_deliveries: int
) -> tuple[list[Entry], int]:
    """Move entries delivered ``max_deliveries`` times or more to the dead-letter stream.

    Call it on a batch before processing it (XREADGROUP and each takeover count as a delivery),
    so with ``max_deliveries=N`` an entry whose processing keeps killing its worker is tried N-1
    times. Returns the entries still worth processing and how many were dead-lettered. An entry no
    longer pending in ``group`` (acked meanwhile) is kept: processing is idempotent.
    """
    _check_stream(stream, entries)
    deliveries = await _deliveries(r, group, entries)
    exhausted = [e for e in entries if deliveries.get(e.id, 0) >= max_deliveries]
    if exhausted:
        async with r.pipeline(transaction=False) as pipe:
            for entry in exhausted:
                reason = f"delivered {deliveries[entry.id]} times without being acked (max {max_deliveries})"
                _bury(pipe, group, entry, reason, deliveries[entry.id])
            await pipe.execute()
        logger.error(
            "%d entries of %s dead-lettered after %d deliveries", len(exhausted), stream, max_deliveries
        )
    dead = {e.id for e in exhausted}
    return [e for e in entries if e.id not in dead], len(exhausted)


async def bury(r: Redis, group: str, entry: Entry, reason: str) -> None:
    """``dead_letter`` through ``reconnecting``: a poison message is put aside even while Redis
    blinks, and the consumer goes on with the rest of its batch."""
    await reconnecting(lambda: dead_letter(r, entry.stream, group, entry, reason), what=entry.stream)


async def dead_letter(r: Redis, stream: str, group: str, entry: Entry, reason: str) -> None:
    """Dead-letter one entry that can never be processed (corrupt, unknown message version)."""
    _check_stream(stream, [entry])
    deliveries = await _deliveries(r, group, [entry])
    async with r.pipeline(transaction=False) as pipe:
        _bury(pipe, group, entry, reason, deliveries.get(entry.id, 0))
        await pipe.execute()
    logger.error(
        "entry %s of %s dead-lettered: %s",
        entry.id,
        stream,
        reason,
        extra={"stream": stream, "entry": entry.id},
    )


def counter_field(kind: Literal["dead", "trimmed", "evidence_missed"], stream: str) -> str:
    """Field of the ``keys.counters()`` hash counting ``kind`` events on ``stream``."""
    return f"{kind}:{stream}"


async def counters(r: Redis) -> dict[str, int]:
    """All transport counters (see counter_field)."""
    raw = await r.hgetall(keys.counters())
    return {_text(k): int(v) for k, v in raw.items()}


async def heartbeat(r: Redis, role: str, name: str, ttl_s: float) -> None:
    """Say that process ``name`` of ``role`` is alive for the next ``ttl_s`` seconds."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    await r.set(keys.heartbeat(role, name), repr(time.time()), px=max(1, round(ttl_s * 1000)))


async def alive(r: Redis, role: str) -> list[str]:
    """Names of the processes of ``role`` whose heartbeat has not expired, sorted."""
    prefix = keys.heartbeat(role, "")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # role is literal, not a glob
    names = {_text(k)[len(prefix) :] async for k in r.scan_iter(match=pattern, count=500)}
    return sorted(names)


async def lag(r: Redis, stream: str, group: str) -> int:
    """Entries of ``stream`` not yet delivered to ``group``.

    Exact on Redis ≥ 7 (XINFO GROUPS ``lag``). Redis 6.2 (the embedded server) has no such counter
    and no cheap way to count entries after an id, so there it is an estimate: 0 when the group is
    caught up, the stream length when it is behind the oldest entry, otherwise the length scaled
    by how far the group's last id is from the newest, measured in id time (exact when entries
    arrive at a steady rate, as camera frames do). Also used when Redis 7 reports lag as unknown.
    """
    try:
        groups = await r.xinfo_groups(stream)
    except rex.ResponseError as e:
        raise LookupError(f"no stream {stream}: {e}") from e
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        raise LookupError(f"no group {group} on stream {stream}")
    if info.get("lag") is not None:
        return int(info["lag"])
    stream_info = await r.xinfo_stream(stream)
    first = stream_info.get("first-entry")
    return _estimate_lag(
        int(stream_info["length"]),
        _id_pair(first[0]) if first else None,
        _id_pair(stream_info["last-generated-id"]),
        _id_pair(info["last-delivered-id"]),
    )


async def trim_acknowledged(r: Redis, stream: str) -> int:
    """Drop entries every consumer group has acknowledged; returns how many went.

    Entries older than each group's oldest pending entry (or, with none pending, than its last
    delivered one) are done with. Trimming them keeps a stream without MAXLEN (recorded sources
    never drop frames) from growing for ever; pending and undelivered entries are never touched,
    so takeover and at-least-once delivery are unaffected. A stream without groups is left alone.
    """
    try:
        groups = await r.xinfo_groups(stream)
    except rex.ResponseError:  # no such stream yet
        return 0
    if not groups:
        return 0
    bounds = []
    for info in groups:
        pending = await r.xpending(stream, info["name"])
        oldest = pending.get("min") if pending and pending.get("pending") else None
        bounds.append(_id_pair(oldest or info["last-delivered-id"]))
    ms, seq = min(bounds)
    if (ms, seq) == (0, 0):
        return 0
    return int(await r.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))


def _estimate_lag(
    length: int, first: tuple[int, int] | None, last: tuple[int, int], delivered: tuple[int, int]
) -> int:
    if length == 0 or delivered >= last:
        return 0
    if first is None or delivered < first:
        return length
    # Same millisecond: the sequence part numbers the entries; otherwise use milliseconds.
    part = 1 if first[0] == last[0] else 0
    behind = (last[part] - delivered[part]) / (last[part] - first[part] + 1)
    return max(1, min(length, round(length * behind)))


async def _deliveries(r: Redis, group: str, entries: list[Entry]) -> dict[str, int]:
    """Delivery counts of the entries still pending in ``group`` (XPENDING, one id per range)."""
    if not entries:
        return {}
    async with r.pipeline(transaction=False) as pipe:
        for e in entries:
            pipe.xpending_range(e.stream, group, min=e.id, max=e.id, count=1)
        replies = await pipe.execute()
    return {_text(p["message_id"]): int(p["times_delivered"]) for reply in replies for p in reply}


def _bury(pipe: Any, group: str, entry: Entry, reason: str, deliveries: int) -> None:
    """Queue copy-to-dead-letter, ack and count, in that order: a crash in between duplicates, never loses."""
    fields: dict[Any, Any] = dict(entry.fields)
    fields.update({b"error": reason, b"source_id": entry.id, b"deliveries": deliveries, b"group": group})
    # bounded: a source that sends garbage for days must not fill Redis; the counter keeps the total
    pipe.xadd(keys.dead_letter(entry.stream), fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
    pipe.xack(entry.stream, group, entry.id)
    pipe.hincrby(keys.counters(), counter_field("dead", entry.stream), 1)


def _ids_by_stream(entries: Iterable[Entry]) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for e in entries:
        by_stream.setdefault(e.stream, []).append(e.id)
    return by_stream


def _check_stream(stream: str, entries: Iterable[Entry]) -> None:
    others = {e.stream for e in entries} - {stream}
    if others:
        raise ValueError(f"entries of {sorted(others)} passed for stream {stream}")


def _check_block(r: Redis, block_ms: int) -> None:
    timeout = r.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout is not None and block_ms >= timeout * 1000:
        raise ValueError(f"block_ms={block_ms} must be below the client's socket timeout ({timeout} s)")


def _id_pair(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
