"""Problems a role wants operators to see (evidence not writable, a child restarting): short-lived
Redis keys that the dashboard and ``linewatch status`` list, and that expire once not repeated."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pipeline import keys
from pipeline.streams import Redis


async def report(r: Redis, name: str, message: str, ttl_s: float = 300.0, **details: Any) -> None:
    """Raise (or refresh) problem ``name``; it shows for ``ttl_s`` after its last report.

    ``first_at`` is kept across refreshes, so the page says since when it has been going on.
    """
    key = keys.problem(name)
    now = time.time()
    raw: Any = await r.get(key)
    first = json.loads(raw).get("first_at", now) if raw else now
    count = (json.loads(raw).get("count", 0) if raw else 0) + 1
    value = {"name": name, "message": message, "first_at": first, "last_at": now, "count": count, **details}
    await r.set(key, json.dumps(value), px=max(1, round(ttl_s * 1000)))


async def clear(r: Redis, name: str) -> None:
    """The problem is over (e.g. the next evidence file was written)."""
    await r.delete(keys.problem(name))


async def current(r: Redis) -> list[dict[str, Any]]:
    """Every problem not yet expired, oldest first."""
    prefix = keys.problem("")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    found = [k async for k in r.scan_iter(match=pattern, count=500)]
    values: list[Any] = [await r.get(k) for k in found]
    out = [json.loads(v) for v in values if v]
    return sorted(out, key=lambda p: p.get("first_at", 0))
