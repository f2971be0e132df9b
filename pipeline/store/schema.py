"""Applies the Alembic migrations shipped in this package, safely from several processes at once."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from pipeline.store.engine import make_engine, translated_errors, writer

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: key of the PostgreSQL advisory lock held while migrating (any constant shared by all processes)
ADVISORY_LOCK_KEY = 0x6C77_7374_6F72_65  # "lwstore"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration pointing at the packaged migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration shipped with this build."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at; None for an empty database."""
    with translated_errors("reading the schema version"), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``; a no-op when it is already there.

    Raises StoreUnavailable when the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Migrate through an existing engine, in one transaction that other starters wait for.

    Every linewatch process migrates on start, so several may race. PostgreSQL: a transaction-scoped
    advisory lock serialises them (the DDL is transactional too). SQLite: BEGIN IMMEDIATE takes the
    write lock first, so a second process waits for the busy timeout and then finds nothing to do.
    """
    config = alembic_config()
    with translated_errors("migrating the database"), writer(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        # env.py runs the migrations on this connection, inside this transaction
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    logger.info("database schema at %s", revision)
