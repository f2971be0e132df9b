"""Migrations: they build exactly the models' schema, on SQLite and PostgreSQL, even when racing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect

from pipeline.store import make_engine, upgrade
from pipeline.store.models import Base
from pipeline.store.schema import alembic_config, current_revision, head_revision, upgrade_engine

TABLES = {"stations", "inspections", "defects", "reviews", "users", "revoked_sessions"}


def test_migrated_schema_equals_models(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        # compare_metadata does not look at CHECK constraints: compare their names separately
        inspector = inspect(engine)
        checks = {t: {c["name"] for c in inspector.get_check_constraints(t)} for t in TABLES}
    finally:
        engine.dispose()
    assert differences == []
    expected = {
        t: {c.name for c in Base.metadata.tables[t].constraints if isinstance(c, CheckConstraint)}
        for t in TABLES
    }
    assert checks == expected


def test_upgrade_is_repeatable_and_reaches_head(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # every process migrates on start: the second one must be a no-op
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_concurrent_upgrades_do_not_break(database_url: str) -> None:
    # several linewatch processes starting together on an empty database
    with ThreadPoolExecutor(max_workers=4) as pool:
        for outcome in [pool.submit(upgrade, database_url) for _ in range(4)]:
            outcome.result()
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_downgrade_removes_everything_and_upgrade_restores_it(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade_engine(engine)
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade_engine(engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
