"""Migrations: an empty database migrated to head matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from dialer.db import make_engine
from dialer.migrate import current_revision, head_revision, upgrade
from dialer.tables import metadata


def _diffs(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, metadata()))
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision(empty_db_url)
    assert _diffs(empty_db_url) == []
    engine = make_engine(empty_db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(metadata().tables) <= tables
    assert {"consents", "revocations", "dnc_entries", "audit_log", "api_keys"} <= tables


def test_an_empty_database_differs_from_the_models(empty_db_url: str) -> None:
    """The comparison itself can fail: before migrating, every table is missing."""
    diffs = _diffs(empty_db_url)
    added = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"}
    assert set(metadata().tables) == added


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision(empty_db_url)
    assert _diffs(empty_db_url) == []
