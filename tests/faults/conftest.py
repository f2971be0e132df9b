"""The fault suite uses the pipeline tests' Redis and PostgreSQL fixtures and the dashboard's."""

from tests.dashboards.conftest import dash
from tests.pipeline.conftest import postgres_schema_url, postgres_url
from tests.pipeline.redis_fixtures import r, redis_target

__all__ = ["dash", "postgres_schema_url", "postgres_url", "r", "redis_target"]
