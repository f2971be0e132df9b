"""Store fixtures: each test gets a fresh database on SQLite and on PostgreSQL.

PostgreSQL comes from LINEWATCH_TEST_POSTGRES_URL (default: postgres@127.0.0.1:5432/test). Each test
works in a schema of its own that is dropped afterwards; nothing else in that database is touched.
Without a reachable server the PostgreSQL cases are skipped, except under CI (CI set), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pipeline.store import Store, make_engine, upgrade
from tests.pipeline.store.factories import ResultFactory, make_result

POSTGRES_URL = os.environ.get(
    "LINEWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def result() -> ResultFactory:
    return make_result


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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, not yet migrated."""
    if request.param == "sqlite":
        # a folder that does not exist yet: make_engine must create it
        return f"sqlite:///{tmp_path / 'data' / 'linewatch.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store on a freshly migrated database."""
    upgrade(database_url)
    with Store.open(database_url) as opened:
        yield opened
