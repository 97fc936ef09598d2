"""Whose clock rules when several instances share a PostgreSQL database: the database's.

Every decision of callgate is taken at an instant ``now`` read from the runtime's clock, and
stored with it (an attempt's ``at``, a lease's expiry, a consent's ``recorded_at``). The caps
count attempts in rolling windows of those stored instants. With two instances whose clocks
disagree, the one ahead sees another's attempts as older than they are: a per-day cap of 1
lets a second call through as soon as its clock is 24 h past the first's, however long ago
the first really was. So on PostgreSQL each instance keeps its own clock corrected to the
database server's: every REFRESH_SECONDS it reads ``clock_timestamp()`` and measures the
offset (the database's time minus the midpoint of its own before and after the round trip;
the error is at most half the round trip), and reads its time as ``local + offset``. All
instances then agree with the database (and each other) within a few milliseconds, whatever
their own clocks say, and an instance whose own clock is more than WARN_SKEW_SECONDS off
says so in its log (the operator fixes NTP; the decisions are already correct).

The offset is refreshed when a ``now()`` finds it stale, by one thread (the others keep the
last one meanwhile), on a connection of its own outside any unit of work. If the database
cannot be read, the last offset is kept and the next ``now()`` tries again after a second.
SQLite is one machine's file: its clock is the machine's, and this is not used.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from config.clock import Clock
from core.db import Database

log = logging.getLogger("callgate.clock")

REFRESH_SECONDS = 30.0
RETRY_SECONDS = 1.0
WARN_SKEW_SECONDS = 1.0

_DB_NOW = text("SELECT clock_timestamp()")


class OffsetClock:
    """A clock deliberately ``offset`` off the system's (``CALLGATE_TEST_CLOCK_OFFSET_SECONDS``:
    a test's skewed instance)."""

    def __init__(self, base: Clock, offset: timedelta) -> None:
        self._base, self.offset = base, offset

    def now(self) -> datetime:
        return self._base.now() + self.offset


class DatabaseClock:
    """``base`` corrected to the database server's clock (PostgreSQL; see the module)."""

    def __init__(self, base: Clock, db: Database, refresh_seconds: float = REFRESH_SECONDS,
                 warn_skew_seconds: float = WARN_SKEW_SECONDS) -> None:
        self._base = base
        self._db = db
        self._refresh = refresh_seconds
        self._warn = warn_skew_seconds
        self._offset = timedelta(0)
        self._due = 0.0  # time.monotonic() of the next measurement
        self._measuring = threading.Lock()
        self.measured = False

    @property
    def offset(self) -> timedelta:
        """The database's clock minus ``base``, as last measured."""
        return self._offset

    def now(self) -> datetime:
        if time.monotonic() >= self._due and self._measuring.acquire(blocking=False):
            try:
                self.measure()
            finally:
                self._measuring.release()
        return self._base.now() + self._offset

    def measure(self) -> timedelta:
        """Read the database's clock now and keep the offset (logged if it is large)."""
        try:
            with self._db.engine.connect() as conn:
                before = self._base.now()
                db_now = conn.execute(_DB_NOW).scalar_one()
                after = self._base.now()
                conn.rollback()
        except Exception as e:  # the database is away: keep the last offset, retry soon
            log.warning("could not read the database's clock (%s); keeping offset %.3f s",
                        type(e).__name__, self._offset.total_seconds())
            self._due = time.monotonic() + RETRY_SECONDS
            return self._offset
        at: datetime = db_now if db_now.tzinfo else db_now.replace(tzinfo=UTC)
        offset: timedelta = at - (before + (after - before) / 2)
        skew = abs(offset.total_seconds())
        if skew > self._warn:
            log.warning(
                "CLOCK: this instance's clock is %.3f s %s the database's; callgate uses the "
                "database's time (decisions stay correct), but fix this host's time sync",
                skew, "behind" if offset > timedelta(0) else "ahead of")
        self._offset = offset
        self.measured = True
        self._due = time.monotonic() + self._refresh
        return offset
