"""Engines and outages: SQLite pragmas, unreachable databases give a clear StoreUnavailable."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.store import Store, StoreError, StoreUnavailable, make_engine, upgrade
from tests.pipeline.store.factories import ResultFactory, closed_port


def test_sqlite_engine_creates_its_folder_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "linewatch.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert path.exists()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30_000}


def test_postgres_engine_pings_before_use(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        assert engine.pool._pre_ping
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_bare_postgresql_url_uses_psycopg() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1/test")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        make_engine("mysql://user@host/db")
    with pytest.raises(StoreError, match="not a database URL"):
        make_engine("no url at all")


def test_closed_postgres_port_raises_store_unavailable(result: ResultFactory) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    started = time.monotonic()
    with (
        pytest.raises(StoreUnavailable, match=r"recording 1 results: database unavailable"),
        Store.open(url) as store,
    ):
        store.record([result(seq=1)])
    with pytest.raises(StoreUnavailable, match="migrating the database"):
        upgrade(url)
    assert time.monotonic() - started < 10  # refused at once, not after a long timeout


def test_unopenable_sqlite_file_raises_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "db-is-a-folder").mkdir()
    with (
        Store.open(f"sqlite:///{tmp_path / 'db-is-a-folder'}") as store,
        pytest.raises(StoreUnavailable, match="counting inspections"),
    ):
        store.count_inspections()


def test_locked_sqlite_raises_store_unavailable(
    tmp_path: Path, result: ResultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another process holds the write lock longer than the busy timeout
    monkeypatch.setattr("pipeline.store.engine.SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "linewatch.db"
    upgrade(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with Store.open(f"sqlite:///{path}") as store, pytest.raises(StoreUnavailable, match="locked"):
            store.record([result(seq=1)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store.open(f"sqlite:///{path}") as store:
        assert store.record([result(seq=1)]).inserted == 1  # the retry after the outage works


def test_unmigrated_database_is_an_error_retrying_cannot_fix(database_url: str) -> None:
    with Store.open(database_url) as store, pytest.raises(StoreError, match="schema is missing") as caught:
        store.count_inspections()
    assert not isinstance(caught.value, StoreUnavailable)
