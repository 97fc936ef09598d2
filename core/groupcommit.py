"""Group commit: the units of work that wait for SQLite's write lock at the same moment are
served together, in one transaction, by whichever of their threads gets the lock first.

SQLite serialises every writer of a database file (dialer.db: the gate, then ``BEGIN
IMMEDIATE``). Under load, most lease and outcome requests of a process spend their time
waiting for that lock, one behind the other, and each then pays a whole transaction of its
own: the lock, the expired-lease sweep, the candidate read, the consent and attempt reads,
one executemany per table, the commit (its WAL pages). Here they queue instead. The thread
that becomes the *leader* takes the write lock, and then everything queued by then (up to a
weight: calls to lease, outcomes to record): the jobs are served by one ``serve`` call in
one transaction, each with its own answer. The others wait, then return their answer, or
lead the next transaction if theirs came too late for this one.

Why it is the same as one transaction each: every job in a transaction was submitted, and
not yet answered, when the transaction began. They are concurrent requests, so any order of
them is one the clients could have seen; ``serve`` applies them in an order of its choosing
and each sees the effects of those before it, exactly as if each had had the lock alone.

If ``serve`` raises, the transaction is rolled back (nothing of any job is kept) and every
job of it is handed back to its own thread to be served alone (``submit`` returns False):
one job's failure, whatever it is, is that job's alone, as without grouping.

In-process only: each process has its own queue; processes still take turns at the gate.

PostgreSQL has no single write lock (row and advisory locks let writers run side by side),
but a transaction there costs round trips (BEGIN, each statement, COMMIT and its WAL flush)
whatever it holds: with ``leaders=2`` two transactions run at once, each serving the jobs
queued when it began (the next leader takes those that came meanwhile; docs/performance.md,
PostgreSQL). Each job is still one
that any order of the concurrent requests could have produced: the locks that keep two
transactions' jobs apart are the same whether they serve one job or several.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from core.db import Database

log = logging.getLogger("callgate.groupcommit")

J = TypeVar("J")

_PENDING, _DONE, _ALONE = 0, 1, 2


@dataclass(eq=False, slots=True)
class _Slot(Generic[J]):
    job: J
    weight: int
    state: int = _PENDING
    taken: bool = False  # in a leader's transaction


@dataclass(slots=True)
class Stats:
    """What a group has done (the tests read it)."""

    transactions: int = 0
    jobs: int = 0
    largest: int = 0  # the most jobs served by one transaction
    failed: int = 0  # transactions rolled back, their jobs handed back to be served alone


class GroupCommit(Generic[J]):
    """Jobs of one process served in shared write transactions of ``db``.

    ``serve(session, jobs)`` does the jobs' work in the open transaction and leaves each
    job's answer on the job. A transaction takes queued jobs in the order they came until
    their weights reach ``max_weight`` (always at least one). Up to ``leaders`` transactions
    run at once (1 on SQLite: its writers take turns anyway)."""

    def __init__(
        self,
        db: Database,
        serve: Callable[[Session, list[J]], None],
        max_weight: int = 500,
        leaders: int = 1,
    ) -> None:
        self._db = db
        self._serve = serve
        self._max_weight = max_weight
        self._leaders = leaders
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[_Slot[J]] = deque()
        self._leading = 0
        self.stats = Stats()

    def submit(self, job: J, weight: int = 1) -> bool:
        """Serve ``job`` in a shared transaction and return True once it is committed; False
        if the transaction it was in failed: the caller then serves it alone."""
        slot = _Slot(job, weight)
        with self._cond:
            self._pending.append(slot)
        while True:
            with self._cond:
                while slot.state == _PENDING and (slot.taken or self._leading >= self._leaders):
                    self._cond.wait()
                if slot.state != _PENDING:
                    return slot.state == _DONE
                self._leading += 1
            self._lead(slot)

    def waiting(self) -> int:
        """Jobs queued and not yet taken by a transaction."""
        with self._cond:
            return len(self._pending)

    def _lead(self, own: _Slot[J]) -> None:
        """One transaction: the lock first, then every job queued by then (up to the
        weight), so that jobs arriving while the leader waits for the lock join it."""
        batch: list[_Slot[J]] = []
        ok = False
        try:
            with self._db.write() as s:
                with self._cond:
                    batch = self._take()
                if batch:
                    self._serve(s, [x.job for x in batch])
            ok = True
        except Exception as e:
            # The type only: a driver's message may quote the statement's values.
            log.warning("a group of %d unit(s) of work failed (%s); each is retried alone",
                        len(batch), type(e).__name__)
        finally:
            with self._cond:
                if not ok and not batch and not own.taken:
                    # The lock itself failed: this thread finds out for itself, alone; the
                    # others stay queued for the next leader. (Another leader may have
                    # taken this job meanwhile: then it answers.)
                    self._pending.remove(own)
                    batch = [own]
                for x in batch:
                    x.state = _DONE if ok else _ALONE
                if batch:
                    self._count(len(batch), ok)
                self._leading -= 1
                self._cond.notify_all()

    def _take(self) -> list[_Slot[J]]:
        """The jobs queued now, in order, up to the weight (none if another leader took
        them all since this one was chosen)."""
        if not self._pending:
            return []
        batch = [self._pending.popleft()]
        weight = batch[0].weight
        while self._pending and weight + self._pending[0].weight <= self._max_weight:
            weight += self._pending[0].weight
            batch.append(self._pending.popleft())
        for x in batch:
            x.taken = True
        return batch

    def _count(self, n: int, ok: bool) -> None:
        st = self.stats
        st.transactions += 1
        if not ok:
            st.failed += 1
            return
        st.jobs += n
        st.largest = max(st.largest, n)
