"""The dialer queue's entry points: lease, outcomes (single and batched), release, dial
check, preflight, and the expiry jobs. Each is one unit of work; the decisions live in
dialer.rules.dispatch, the statements in dialer.queue.store.

Concurrency (PRODUCT.md 4; API.md "Queue"): the caps and "one live lease per call" hold
whatever the number of pollers and API processes.

* SQLite: every unit of work here runs in ``db.write()``, i.e. ``BEGIN IMMEDIATE``: the
  whole check-and-lease holds the database's single write lock, so no two can interleave.
  The lease and outcome requests of a process that wait for that lock together are served
  in one such transaction, one after the other (core.groupcommit; see _serve).
* PostgreSQL: candidate calls are locked ``FOR UPDATE SKIP LOCKED`` (two pollers never take
  the same call), and each number is serialised through its advisory lock (core.numbers;
  only those free now while leasing: a number being leased elsewhere is simply
  left for the next poll) *before* its attempts are counted, so two processes can never both
  see "2 attempts this week" and both add a third. Revocations lock the number's calls
  ``FOR UPDATE`` and so wait for, then withdraw, any lease committed before them.
* In both: a partial unique index allows one live attempt per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy.orm import Session

from config.errors import KIND_STATUS, DomainError
from core.groupcommit import GroupCommit
from core.keys import Identity
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.queue import store
from dialer.queue.expiry import expire_deadlines, expire_leases
from dialer.queue.lease import LeaseJob, LeaseRequest, lease_in
from dialer.queue.outcomes import Outcome, OutcomeJob, dial_check, outcomes_in, release
from dialer.queue.preflight import CheckRequest, check
from dialer.queue.store import QueueState

# The queue's operations, for the routers and the CLI (each defined where its logic is).
__all__ = [
    "CheckRequest", "LeaseRequest", "Outcome", "check", "dial_check", "expire_deadlines",
    "expire_leases", "group_commit", "lease", "release", "report_outcome", "report_outcomes",
]

Job = LeaseJob | OutcomeJob
# PostgreSQL: group-commit transactions at once per process (core.groupcommit).
PG_LEADERS = 2


def _serve(rt: Runtime, uow: UnitOfWork, jobs: list[Job]) -> None:
    """Lease and outcome requests in one write transaction (core.groupcommit): first the
    outcomes, then the leases, all leases drawn together from the queue in its order and
    dealt to the requests in turn, each up to its own limit. Every job's answer is set
    afresh (a job may come here again, alone, after its group failed)."""
    outcome_jobs = [j for j in jobs if isinstance(j, OutcomeJob)]
    if outcome_jobs:
        results = outcomes_in(
            rt, uow, [(j.who, call_id, o) for j in outcome_jobs for call_id, o in j.items]
        )
        at = 0
        for j in outcome_jobs:
            j.results = results[at:at + len(j.items)]
            at += len(j.items)
    lease_jobs = [j for j in jobs if isinstance(j, LeaseJob)]
    if lease_jobs:
        lease_in(rt, uow, lease_jobs)


def _unit(rt: Runtime, s: Session, jobs: Sequence[Job]) -> UnitOfWork:
    """The unit of work of a group's transaction: ``now`` taken under the write lock (the
    instant the decisions hold at); each job acts as its own caller (UnitOfWork.acting)."""
    return UnitOfWork(s, rt.clock.now(), jobs[0].who.actor, rt.policy_version,
                      pseudonym=rt.pseudonym)


def group_commit(rt: Runtime) -> GroupCommit[Job]:
    """This process's group commit for ``rt`` (see _run), made on first use."""
    state = rt.state(QueueState)
    if state.group is None:
        state.group = GroupCommit(rt.db, lambda s, jobs: _serve(rt, _unit(rt, s, jobs), jobs),
                                  leaders=1 if rt.db.is_sqlite else PG_LEADERS)
    return cast("GroupCommit[Job]", state.group)


def _run(rt: Runtime, job: Job) -> None:
    """Serve one job in a transaction shared with the process's other requests waiting with
    it (core.groupcommit; weighed by its calls: on SQLite those waiting for the write lock,
    on PostgreSQL for one of PG_LEADERS transactions); alone if that group failed."""
    weight = job.req.limit if isinstance(job, LeaseJob) else len(job.items)
    if group_commit(rt).submit(job, weight):
        return
    with rt.write(job.who) as uow:
        _serve(rt, uow, [job])


def lease(rt: Runtime, who: Identity, req: LeaseRequest) -> list[dict[str, Any]]:
    # SQLite: an empty or fully capped queue is answered from a read transaction, without
    # queueing for the database's one write lock behind the outcomes (a call that becomes
    # eligible meanwhile goes to the next poll, as if it had become eligible a moment later).
    # PostgreSQL has no such lock to spare; the write transaction is as cheap.
    state = rt.state(QueueState)
    if rt.db.is_sqlite and not state.last_found:
        with rt.read(who) as uow:
            if store.nothing_to_do(uow.session, uow.now):
                return []
    job = LeaseJob(who, req)
    _run(rt, job)
    state.last_found = bool(job.tasks)
    return job.tasks


def report_outcome(rt: Runtime, who: Identity, call_id: str, o: Outcome) -> dict[str, Any]:
    """One outcome (:func:`report_outcomes` with one item, raising its error). An
    identification problem is committed first (the flag and the audit entry stay; the lease
    stays held), then raised."""
    ((out, problem),) = _outcomes(rt, who, [(call_id, o)])
    if problem is not None:
        raise problem
    return out


def report_outcomes(
    rt: Runtime, who: Identity, items: Sequence[tuple[str, Outcome]]
) -> list[dict[str, Any]]:
    """Several outcomes in one transaction, each treated exactly as :func:`report_outcome`
    treats it, in the order given (an opt-out withdraws the number's other leases, so a later
    item for one of them gets ``LEASE_NOT_HELD``). One answer per item, in order:
    ``{"call_id", "ok": true, "status", "attempts", "flags"}`` or
    ``{"call_id", "ok": false, "error": {"code", "message", "details"}, "http_status"}``
    with the error and status the single-call endpoint would have answered."""
    answers: list[dict[str, Any]] = []
    for (call_id, _), (out, problem) in zip(items, _outcomes(rt, who, items), strict=True):
        if problem is None:
            answers.append({"call_id": call_id, "ok": True, **out})
        else:
            answers.append({
                "call_id": call_id, "ok": False, "http_status": KIND_STATUS[problem.kind],
                "error": {"code": problem.code, "message": problem.message,
                          "details": problem.details},
            })
    return answers


def _outcomes(
    rt: Runtime, who: Identity, items: Sequence[tuple[str, Outcome]]
) -> list[tuple[dict[str, Any], DomainError | None]]:
    """The outcomes in one unit of work (maybe shared: core.groupcommit), in order: each
    item's answer or error."""
    job = OutcomeJob(who, items)
    _run(rt, job)
    return job.results


# API.md "Every response": an empty lease says when to poll again, in whole seconds (1-60):
# when the next queued call becomes eligible, 60 at most (and when nothing is queued).
RETRY_AFTER_MAX = 60


def retry_after(rt: Runtime, who: Identity) -> int:
    with rt.read(who) as uow:
        due = store.next_due_at(uow.session)
        now = uow.now
    if due is None:
        return RETRY_AFTER_MAX
    return max(1, min(RETRY_AFTER_MAX, math.ceil((due - now).total_seconds())))
