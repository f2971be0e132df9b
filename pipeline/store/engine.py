"""Engines for the store: SQLite (WAL, busy timeout, foreign keys) or PostgreSQL (pre-ping)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.pool import ConnectionPoolEntry

from pipeline.store.errors import StoreError, StoreUnavailable, StoreValueError

logger = logging.getLogger(__name__)

#: how long a SQLite writer waits for another process's write lock before giving up
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: how long connecting to PostgreSQL may take; a black-holed host must not hang the recorder forever
PG_CONNECT_TIMEOUT_S = 10

#: execution option: begin SQLite transactions with BEGIN IMMEDIATE (see ``writer``)
_SQLITE_BEGIN = "linewatch_sqlite_begin"


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for a SQLite or PostgreSQL URL, set up the way the store needs it.

    SQLite: the parent folder is created; each connection gets WAL (readers never block the
    writer), a busy timeout (concurrent writers wait instead of failing) and foreign keys on.
    PostgreSQL: pool pre-ping, so a restarted server costs one reconnect, not an error.
    Extra keyword arguments go to ``create_engine``. The caller owns the engine and disposes it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StoreError(f"not a database URL: {url!r} ({e})") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # a bare postgresql:// would mean psycopg2, which linewatch does not install
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args: dict[str, Any] = {}
        if parsed.get_driver_name() == "psycopg" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        kwargs.setdefault("pool_pre_ping", True)
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
        return create_engine(parsed, **kwargs)
    raise StoreError(
        f"unsupported database {backend!r} in {parsed!r}: use sqlite:/// or postgresql+psycopg://"
    )


def writer(engine: Engine) -> Engine:
    """The same engine, but SQLite transactions take the write lock at BEGIN.

    A deferred SQLite transaction that reads and then writes fails at once with "database is
    locked" (no busy wait) when another process wrote in between; taking the lock up front makes
    it wait for the busy timeout instead. No effect on PostgreSQL.
    """
    return engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().absolute().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder {folder} for the SQLite database: {e}") from e
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    # take transaction control away from the sqlite3 module, which does not BEGIN before
    # SELECT or DDL (so migrations would not be atomic); _on_sqlite_begin emits BEGIN instead
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        _enable_wal(cursor)
        # synchronous stays FULL (the default): results are acknowledged to Redis after commit,
        # so a commit must survive a power cut, which WAL's synchronous=NORMAL does not promise
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # WAL is a property of the file, switched on by the first connection ever. The switch needs an
    # exclusive lock and SQLite answers "database is locked" at once instead of using the busy
    # timeout, so processes opening a new database together must retry here
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if str(mode).lower() not in ("wal", "memory"):  # in-memory databases have no WAL and need none
        logger.warning("SQLite journal mode is %s, not WAL: readers will block the writer", mode)


def _on_sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    """Turn driver errors into store errors that say whether a retry can help.

    Connection refused or lost, timeouts and a locked SQLite file become ``StoreUnavailable``
    (retry later, keep the messages un-acked); a missing table becomes ``StoreError``, since
    retrying cannot create it; a value the database refuses (a NUL in PostgreSQL text) becomes
    ``StoreValueError``. Other errors (bugs, constraint violations) pass through.
    """
    try:
        yield
    except DataError as e:
        text = str(e.orig if e.orig is not None else e).strip()
        raise StoreValueError(f"{action}: the database refused a value: {text}") from e
    except (OperationalError, InterfaceError, ProgrammingError) as e:
        text = str(e.orig if e.orig is not None else e).strip()
        if _schema_missing(e, text):
            raise StoreError(
                f"{action}: the database schema is missing or out of date ({text}); "
                "apply the migrations with pipeline.store.upgrade(url)"
            ) from e
        if isinstance(e, ProgrammingError):
            raise
        raise StoreUnavailable(f"{action}: database unavailable: {text}") from e
    except DisconnectionError as e:
        raise StoreUnavailable(f"{action}: database connection lost: {e}") from e


def _schema_missing(error: DBAPIError, text: str) -> bool:
    # PostgreSQL: undefined table / column SQLSTATEs; SQLite reports them as OperationalError text
    if getattr(error.orig, "sqlstate", None) in ("42P01", "42703"):
        return True
    return text.startswith(("no such table", "no such column"))
