"""What a running callgate holds: its database, policy, clock and settings, and the
per-process state that features keep for it (typed, created on first use)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from config.clock import Clock, SystemClock
from config.policy import Policy, load_policy
from config.settings import Settings, get_settings
from core.db import Database
from core.dbclock import DatabaseClock, OffsetClock
from core.keys import Identity
from core.pseudonyms import Pseudonyms
from core.uow import UnitOfWork, actor_of

log = logging.getLogger("callgate")

S = TypeVar("S")


@dataclass
class Runtime:
    db: Database
    policy: Policy
    clock: Clock
    settings: Settings
    # Per-process state of the features built on this runtime, one instance per class
    # (dialer.queue's caches and group commit, ...): see state().
    _states: dict[type, Any] = field(default_factory=dict, repr=False)
    _states_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def policy_version(self) -> str:
        return self.policy.policy_version

    def state(self, kind: type[S], make: Callable[[Runtime], S] | None = None) -> S:
        """This runtime's one instance of ``kind``, made on first use (``make(rt)``, or
        ``kind()``). Owned by the runtime, so two runtimes (two databases, tests) never
        share a cache, and nothing is kept in module globals."""
        got = self._states.get(kind)
        if got is None:
            with self._states_lock:
                got = self._states.get(kind)
                if got is None:
                    got = self._states[kind] = make(self) if make is not None else kind()
        return cast(S, got)

    def pseudonyms(self) -> Pseudonyms:
        """The deployment's keyed pseudonyms (core.pseudonyms), the key file loaded (or
        created, with a warning) on first use."""
        return self.state(Pseudonyms, _load_pseudonyms)

    def pseudonym(self, e164: str) -> str:
        return self.pseudonyms().phone(e164)

    @contextmanager
    def write(
        self, who: Identity | str, *, rollback: bool = False, now: datetime | None = None
    ) -> Iterator[UnitOfWork]:
        """A write unit of work (core.db.Database.write) on behalf of ``who``; ``now`` is
        read once the transaction holds the write lock, unless given (an operation of
        several transactions that decides at one instant: a call list's chunks).
        ``rollback``: a dry run."""
        with self.db.write(rollback=rollback) as session:
            yield UnitOfWork(session, now or self.clock.now(), actor_of(who),
                             self.policy_version, _identity(who), pseudonym=self.pseudonym)

    @contextmanager
    def read(self, who: Identity | str) -> Iterator[UnitOfWork]:
        """A read-only unit of work (no audit entry can be written from it)."""
        with self.db.read() as session:
            yield UnitOfWork(session, self.clock.now(), actor_of(who), self.policy_version,
                             _identity(who), writable=False)


def _load_pseudonyms(rt: Runtime) -> Pseudonyms:
    path = rt.settings.pseudonym_key_path
    pseudonyms, created = Pseudonyms.load_or_create(path)
    if created:
        log.warning(
            "AUDIT: created the pseudonym key %s (mode 0600). It names patients' numbers in "
            "the audit log; without it the access report cannot find them. Copy it to every "
            "instance and keep a copy off this host.", path)
    return pseudonyms


def _identity(who: Identity | str) -> Identity | None:
    return None if isinstance(who, str) else who


def build_runtime(
    settings: Settings | None = None,
    clock: Clock | None = None,
    policy: Policy | None = None,
    db: Database | None = None,
) -> Runtime:
    """Load the policy (raises PolicyError naming the key) and open the database."""
    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_file)
    for warning in policy.warnings():
        log.warning("POLICY WARNING: %s", warning)
    db = db or Database(settings.database_url)
    return Runtime(db=db, policy=policy, clock=clock or system_clock(settings, db),
                   settings=settings)


def system_clock(settings: Settings, db: Database) -> Clock:
    """The wall clock (skewed by CALLGATE_TEST_CLOCK_OFFSET_SECONDS in tests); on PostgreSQL
    corrected to the database server's (core.dbclock: the database's clock rules)."""
    clock: Clock = SystemClock()
    if settings.test_clock_offset_seconds:
        log.warning("CLOCK: this instance's own clock is skewed by %.3f s "
                    "(CALLGATE_TEST_CLOCK_OFFSET_SECONDS, tests only)",
                    settings.test_clock_offset_seconds)
        clock = OffsetClock(clock, timedelta(seconds=settings.test_clock_offset_seconds))
    return clock if db.is_sqlite else DatabaseClock(clock, db)
