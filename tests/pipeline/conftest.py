"""Fixtures shared by the pipeline tests."""

from tests.pipeline.redis_fixtures import r, redis_target

__all__ = ["r", "redis_target"]
