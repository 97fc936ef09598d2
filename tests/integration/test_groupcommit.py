"""Group commit on SQLite (dialer.groupcommit): lease and outcome requests that wait for the
write lock together are served in one transaction, each with its own answer, exactly as if
each had had the lock alone.

Each test holds the write lock itself while its threads submit, waits until all their
requests are queued behind it, then lets go: the first thread to get the lock serves them
all in one transaction (the group's statistics say so). Real threads, a real SQLite file.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from core.keys import Identity, Role
from core.models import Attempt, Call
from core.runtime import Runtime
from dialer.campaigns import create_campaign
from dialer.intake import service as intake
from dialer.queue import outcomes
from dialer.queue import service as queue
from dialer.queue import store as queue_store
from dialer.schemas import CampaignIn
from tests.conftest import T0
from tests.helpers import new_identity, written_consents

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
CALLBACK = "+13145550199"


def _phone(i: int) -> str:
    return f"+1314555{1000 + i:04d}"  # St. Louis: America/Chicago, open at T0


def _queue_calls(rt: Runtime, numbers: int, campaigns: int) -> dict[str, int]:
    """Consent for ``numbers`` numbers and, in each of ``campaigns`` campaigns, one call per
    number; returns each call's priority by external id ("c<campaign>-n<number>")."""
    admin = new_identity(rt, Role.admin, "admin")
    written_consents(rt, admin, [_phone(i) for i in range(numbers)], T0 - timedelta(days=30),
                     "scan://group")
    priorities: dict[str, int] = {}
    for c in range(campaigns):
        camp = create_campaign(rt, admin, CampaignIn(
            name=f"group-{c}", purpose="appointment_reminder", provider_name="Mercy",
            callback_number=CALLBACK, max_attempts=3,
        ))
        rows = [{"external_id": f"c{c}-n{i}", "phone": _phone(i), "priority": 1 + (i * 7) % 10}
                for i in range(numbers)]
        assert intake.submit(rt, admin, camp.id, rows).counts()["accepted"] == numbers
        priorities.update({r["external_id"]: r["priority"] for r in rows})
    return priorities


def _in_one_transaction(rt: Runtime, work: list[Callable[[], Any]]) -> list[Any]:
    """Run each of ``work`` in its own thread while this thread holds the write lock; let go
    once all of them are queued. Returns each one's result or the exception it raised."""
    results: list[Any] = [None] * len(work)

    def run(i: int) -> None:
        try:
            results[i] = work[i]()
        except Exception as e:  # handed to the test
            results[i] = e

    group = queue.group_commit(rt)
    with rt.db.write():  # the lock: every request queues behind it
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while group.waiting() < len(work):
            assert time.monotonic() < deadline, f"only {group.waiting()} queued"
            time.sleep(0.005)
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results


def _lease(rt: Runtime, who: Identity, limit: int) -> Callable[[], list[dict[str, Any]]]:
    return lambda: queue.lease(rt, who, queue.LeaseRequest(who.name, limit, 120))


def _connected(rt: Runtime, who: Identity, tasks: list[dict[str, Any]]) -> Callable[[], Any]:
    def report() -> list[dict[str, Any]]:
        now = rt.clock.now()
        return queue.report_outcomes(rt, who, [
            (t["call_id"], queue.Outcome(t["lease_id"], "connected", "A-7", "Dana", CALLBACK,
                                         now - timedelta(seconds=30), now))
            for t in tasks
        ])
    return report


def _external_ids(rt: Runtime, call_ids: list[str]) -> list[str]:
    with rt.db.read() as s:
        return list(s.scalars(select(Call.external_id).where(Call.id.in_(call_ids))))


def test_leases_queued_together_are_one_transaction_each_with_its_own_limit(
    runtime: Runtime,
) -> None:
    rt = runtime
    priorities = _queue_calls(rt, numbers=150, campaigns=1)
    pollers = [new_identity(rt, Role.dialer, f"dialer-{i}") for i in range(12)]
    before = queue.group_commit(rt).stats.transactions

    answers = _in_one_transaction(rt, [_lease(rt, who, 10) for who in pollers])

    stats = queue.group_commit(rt).stats
    assert stats.transactions == before + 1 and stats.largest == 12 and stats.failed == 0
    assert [len(a) for a in answers] == [10] * 12  # each its own limit
    ids = [t["call_id"] for a in answers for t in a]
    assert len(set(ids)) == 120  # no call twice
    # Together they took the queue's first 120 calls: the highest priorities.
    leased = sorted((priorities[e] for e in _external_ids(rt, ids)), reverse=True)
    assert leased == sorted(priorities.values(), reverse=True)[:120]
    with rt.db.read() as s:
        # Each lease is its own dialer's and key's.
        for who, answer in zip(pollers, answers, strict=True):
            rows = s.execute(select(Attempt.dialer_id, Attempt.key_id).where(
                Attempt.id.in_([t["lease_id"] for t in answer]))).all()
            assert set(rows) == {(who.name, who.key_id)}
        assert queue_store.live_lease_doubles(s) == 0


def test_the_daily_cap_holds_across_the_requests_of_one_transaction(runtime: Runtime) -> None:
    rt = runtime
    _queue_calls(rt, numbers=10, campaigns=4)  # 40 calls, 4 per number
    pollers = [new_identity(rt, Role.dialer, f"dialer-{i}") for i in range(4)]

    answers = _in_one_transaction(rt, [_lease(rt, who, 10) for who in pollers])

    assert queue.group_commit(rt).stats.largest == 4
    phones = [t["phone"] for a in answers for t in a]
    assert sorted(phones) == sorted(_phone(i) for i in range(10))  # one call per number
    with rt.db.read() as s:
        deferred = s.scalars(select(Call.last_reason).where(Call.status == "queued")).all()
        assert len(deferred) == 30 and set(deferred) == {"DAILY_CAP"}
        per_phone = s.execute(select(Attempt.phone, func.count()).group_by(Attempt.phone)).all()
        assert len(per_phone) == 10 and {n for _, n in per_phone} == {1}
        assert queue_store.cap_violations(s, rt.policy.caps.per_day, rt.policy.caps.per_week) == 0


def test_outcomes_and_leases_share_a_transaction(runtime: Runtime) -> None:
    rt = runtime
    _queue_calls(rt, numbers=40, campaigns=1)
    first, second, third = (new_identity(rt, Role.dialer, f"dialer-{i}") for i in range(3))
    held = queue.lease(rt, first, queue.LeaseRequest("dialer-0", 10, 120))
    assert len(held) == 10

    report, more, most = _in_one_transaction(
        rt, [_connected(rt, first, held), _lease(rt, second, 10), _lease(rt, third, 10)])

    assert queue.group_commit(rt).stats.largest == 3
    assert [r["ok"] for r in report] == [True] * 10
    assert {r["status"] for r in report} == {"completed"}
    assert len(more) == 10 and len(most) == 10
    assert not {t["call_id"] for t in held} & {t["call_id"] for t in more + most}
    with rt.db.read() as s:
        counts = dict(s.execute(select(Call.status, func.count()).group_by(Call.status)).all())
        assert counts == {"completed": 10, "leased": 20, "queued": 10}


def test_a_request_that_fails_fails_alone(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request's unexpected error rolls its group's transaction back; every request of
    the group is then served alone, so only that one fails, with its own error."""
    rt = runtime
    _queue_calls(rt, numbers=40, campaigns=1)
    first, second, third = (new_identity(rt, Role.dialer, f"dialer-{i}") for i in range(3))
    held = queue.lease(rt, first, queue.LeaseRequest("dialer-0", 2, 120))
    poison = held[0]["lease_id"]
    real = outcomes.one_outcome
    signature = inspect.signature(real)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if signature.bind(*args, **kwargs).arguments["o"].lease_id == poison:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(outcomes, "one_outcome", failing)
    report, more, most = _in_one_transaction(
        rt, [_connected(rt, first, held), _lease(rt, second, 10), _lease(rt, third, 10)])

    stats = queue.group_commit(rt).stats
    assert stats.failed == 1
    assert isinstance(report, RuntimeError) and str(report) == "injected"
    assert len(more) == 10 and len(most) == 10  # served again, alone
    with rt.db.read() as s:
        # Nothing of the failed transaction was kept, and nothing was done twice.
        assert queue_store.live_lease_doubles(s) == 0
        assert s.scalar(select(func.count()).select_from(Attempt)) == 22
        counts = dict(s.execute(select(Call.status, func.count()).group_by(Call.status)).all())
        assert counts == {"leased": 22, "queued": 18}  # the report rolled back whole
