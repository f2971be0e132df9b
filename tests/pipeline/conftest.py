"""Fixtures shared by the pipeline tests: Redis (embedded and external) and PostgreSQL schemas."""

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pipeline.store import make_engine
from tests.pipeline.redis_fixtures import r, redis_target

__all__ = ["r", "redis_target"]

POSTGRES_URL = os.environ.get(
    "LINEWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server URL, after checking that it answers."""
    engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any failure to connect means "no server here"
        message = f"PostgreSQL at {make_url(POSTGRES_URL)!r} is unreachable: {e}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so PostgreSQL must be there)")
        pytest.skip(message)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections work in a fresh, empty schema (search_path), dropped afterwards."""
    schema = f"lw_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
