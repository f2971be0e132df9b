"""The supervisor's reports of its children's states in Redis (what ``linewatch status`` reads)."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from pipeline import keys
from pipeline.streams import connect
from pipeline.supervisor import Child, Supervisor
from tests.pipeline.redis_fixtures import RedisTarget, r, redis_target

__all__ = ["r", "redis_target"]


@pytest.mark.asyncio
async def test_the_last_report_written_is_the_newest_state(redis_target: RedisTarget, r: Redis) -> None:
    """Reports overlap (each child's start reports every child, and the periodic report runs beside
    them); an older snapshot must never land after a newer one, or status shows a started worker
    without its pid until the next periodic report."""
    child = Child("worker-cpu-0", ["true"])
    supervisor = Supervisor([child], env={}, redis_url=redis_target.url)
    supervisor.host = redis_target.name("host")
    supervisor._redis = connect(redis_target.url)
    try:
        reports = []
        for n in range(30):
            child.restarts = n
            reports.append(asyncio.create_task(supervisor._report()))
            await asyncio.sleep(0)  # the report starts and waits for Redis while the state moves on
        await asyncio.gather(*reports)
        stored = json.loads((await r.hgetall(keys.supervised(supervisor.host)))[child.name.encode()])
        assert stored["restarts"] == 29
    finally:
        await r.delete(keys.supervised(supervisor.host))
        await supervisor._redis.aclose()
