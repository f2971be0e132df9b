"""Store fixtures: each test gets a fresh database on SQLite and on PostgreSQL.

PostgreSQL comes from LINEWATCH_TEST_POSTGRES_URL (default: postgres@127.0.0.1:5432/test). Each test
works in a schema of its own that is dropped afterwards; nothing else in that database is touched.
Without a reachable server the PostgreSQL cases are skipped, except under CI (CI set), where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.store import Store, upgrade
from tests.pipeline.store.factories import ResultFactory, make_result


@pytest.fixture
def result() -> ResultFactory:
    return make_result


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
