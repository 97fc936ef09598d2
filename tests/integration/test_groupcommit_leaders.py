"""Group commit with several leaders (core.groupcommit, ``leaders=2``: PostgreSQL's queue):
every job is served exactly once, in a transaction that committed, never more transactions
at once than leaders, and a failed group hands each of its jobs back to be served alone.
Real threads, a real database (both)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import Database
from core.groupcommit import GroupCommit


def test_two_leaders_serve_every_job_once(db: Database) -> None:
    served: list[int] = []
    guard = threading.Lock()
    running = 0
    most = 0

    def serve(s: Session, jobs: list[int]) -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            s.execute(text("SELECT 1"))
            time.sleep(0.005)  # long enough for the others to queue and a second leader to run
            with guard:
                served.extend(jobs)
        finally:
            with guard:
                running -= 1

    group: GroupCommit[int] = GroupCommit(db, serve, leaders=2)
    answers: list[bool] = []

    def worker(base: int) -> None:
        for i in range(40):
            answers.append(group.submit(base + i))

    threads = [threading.Thread(target=worker, args=(1000 * t,)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert all(answers) and len(answers) == 480
    assert sorted(served) == sorted(1000 * t + i for t in range(12) for i in range(40))
    assert most <= 2
    if not db.is_sqlite:
        assert most == 2  # two transactions did run at once
    assert group.stats.jobs == 480 and group.stats.largest > 1
    assert group.waiting() == 0


def test_a_failed_group_hands_its_jobs_back(db: Database) -> None:
    def serve(s: Session, jobs: list[int]) -> None:
        if len(jobs) > 1 or jobs == [13]:
            raise RuntimeError("a job failed")
        time.sleep(0.002)

    group: GroupCommit[int] = GroupCommit(db, serve, leaders=2)
    answers: dict[int, bool] = {}

    def worker(i: int) -> None:
        answers[i] = group.submit(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(answers) == 20  # every submit returned: served (True) or handed back (False)
    assert answers[13] is False
    assert group.stats.transactions >= 1
