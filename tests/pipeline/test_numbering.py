"""`linewatch run` continues frame numbers from the store when Redis has no counter."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from config.service import load_settings
from config.station import StationConfig
from pipeline import keys
from pipeline.capture_role import start_seq
from pipeline.launcher import continue_numbering
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.pipeline.redis_fixtures import RedisTarget
from tests.pipeline.store.factories import make_result


def station(station_id: str) -> StationConfig:
    return StationConfig.model_validate(
        {
            "id": station_id,
            "camera": {"source": 0},
            "product": {"name": "part"},
            "model": {"mode": "zero-shot"},
        }
        | {"model": {"mode": "zero-shot", "backbone": "open_clip:ViT-B-16/openai"}}
    )


@pytest.mark.parametrize("redis_target", ["embedded", "external"], indirect=True)
async def test_fresh_store_starts_at_zero_and_a_used_one_continues(
    r: Redis, redis_target: RedisTarget, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path)
    upgrade(settings.effective_database_url)
    fresh, used, counted = (f"{redis_target.prefix}-{name}" for name in ("fresh", "used", "counted"))
    with Store.open(settings.effective_database_url) as store:
        store.record([make_result(used, 41), make_result(used, 7)], {})
    await r.set(keys.last_seq(counted), 99)  # Redis still knows: it wins

    continue_numbering(settings, redis_target.url, [station(fresh), station(used), station(counted)])

    assert await start_seq(r, fresh) == 0
    assert await start_seq(r, used) == 42
    assert await start_seq(r, counted) == 100
