"""core.dbclock: on PostgreSQL an instance's clock is corrected to the database server's,
however far off its own is, and a skew over a second is logged. Real database."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from config.clock import SystemClock
from config.settings import Settings
from core.db import Database
from core.dbclock import DatabaseClock, OffsetClock
from core.runtime import system_clock

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _db_now(db: Database) -> datetime:
    with db.engine.connect() as conn:
        value: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value.astimezone(UTC)


def test_a_skewed_clock_reads_the_database_time(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(db_url)
    try:
        clock = DatabaseClock(OffsetClock(SystemClock(), timedelta(hours=-3)), db)
        with caplog.at_level(logging.WARNING, logger="callgate.clock"):
            got = clock.now()
        assert abs((got - _db_now(db)).total_seconds()) < 1.0
        assert abs(clock.offset.total_seconds() - 3 * 3600) < 1.0
        assert "CLOCK:" in caplog.text and "behind" in caplog.text
        caplog.clear()
        right = DatabaseClock(SystemClock(), db)  # this host's clock: no warning
        with caplog.at_level(logging.WARNING, logger="callgate.clock"):
            assert abs((right.now() - _db_now(db)).total_seconds()) < 1.0
        assert "CLOCK:" not in caplog.text
    finally:
        db.dispose()


def test_the_offset_is_kept_while_the_database_is_away(db_url: str) -> None:
    db = Database(db_url)
    clock = DatabaseClock(OffsetClock(SystemClock(), timedelta(minutes=10)), db,
                          refresh_seconds=0.0)
    try:
        clock.now()
        offset = clock.offset
    finally:
        db.dispose()
    gone = Database(db_url.rsplit("/", 1)[0] + "/cg_no_such_database", pool_pre_ping=False)
    clock._db = gone  # the same clock, now unable to read the database
    try:
        got = clock.now()
    finally:
        gone.dispose()
    assert clock.offset == offset
    assert abs((got - datetime.now(UTC)).total_seconds()) < 2.0


def test_postgresql_runtimes_use_the_database_clock(db_url: str) -> None:
    db = Database(db_url)
    try:
        clock = system_clock(Settings(test_clock_offset_seconds=7200), db)
        assert isinstance(clock, DatabaseClock)
        assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 2.0
    finally:
        db.dispose()
