"""Leases and deadlines that run out: an expired lease's call goes back to the queue (the
attempt counts: it may have been dialled), and a queued call past its ``not_after`` leaves
it with DEADLINE_PASSED. Each poll sweeps expired leases first; the scheduled jobs catch
what no poll meets."""

from __future__ import annotations

from config.reasons import Code, reason
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.queue import store
from dialer.queue.decide import refuse, requeue
from dialer.queue.store import QueueState, Writes
from texts import store as text_store
from texts.service import expire_replies

SYSTEM = "system:jobs"
EXPIRY = "system:lease-expiry"


def sweep_expired(rt: Runtime, uow: UnitOfWork) -> int:
    """Leases past their expiry go back to the queue; the attempt counts. A call out of
    attempts leaves the queue with MAX_ATTEMPTS. Returns how many."""
    expired = store.expired_leases(uow.session, uow.now)
    if not expired:
        return 0
    store.expire_attempts(uow.session, [c.lease_id for c in expired if c.lease_id], uow.now)
    camp = store.campaigns(uow.session, rt.state(QueueState),
                           (c.campaign_id for c in expired))
    w = Writes()
    for c in expired:
        uow.acting(EXPIRY).audit("lease.expired", f"call:{c.id}", {"lease": c.lease_id})
        requeue(uow, w, c, camp[c.campaign_id])
    w.send(uow.session)
    return len(expired)


def expire_leases(rt: Runtime) -> int:
    """Scheduled job: return expired leases to the queue. Probed first in a read
    transaction: the write lock only when a lease has expired. Replies to texts not sent
    within their five minutes expire here too, each logged (texts.service.expire_replies)."""
    total = 0
    with rt.read(SYSTEM) as uow:
        replies_due = text_store.any_reply_expired(uow.session, uow.now)
    if replies_due:
        with rt.write(SYSTEM) as uow:
            expire_replies(uow)
    while True:
        with rt.read(SYSTEM) as uow:
            if not store.any_lease_expired(uow.session, uow.now):
                return total
        with rt.write(SYSTEM) as uow:
            n = sweep_expired(rt, uow)
        total += n
        if n < store.SWEEP_LIMIT:
            return total


def expire_deadlines(rt: Runtime) -> int:
    """Scheduled job: queued calls past not_after leave the queue with DEADLINE_PASSED.

    The search runs in a read transaction, without the write lock (with no index on
    not_after it reads every eligible call: seconds for a fresh list of a million, which
    under the lock stalled every poller and outcome); the write lock is taken only for the
    calls found, each re-checked."""
    total = 0
    while True:
        with rt.read(SYSTEM) as uow:
            ids = store.past_deadline(uow.session, uow.now)
        if not ids:
            return total
        with rt.write(SYSTEM) as uow:
            now = uow.now
            rows = [
                c for c in store.calls_by_id(uow.session, ids, lock=True)
                if c.status == "queued" and c.not_after is not None and c.not_after <= now
            ]
            w = Writes()
            for c in rows:
                why = [reason(Code.DEADLINE_PASSED)]
                if c.last_reason:
                    why[0] = reason(
                        Code.DEADLINE_PASSED,
                        f"the call could not be made before not_after (last blocked by "
                        f"{c.last_reason})",
                        details={"blocked_by": [c.last_reason]},
                    )
                refuse(uow, w, c, "expired", why)
            w.send(uow.session)
        total += len(rows)
        if len(ids) < store.SWEEP_LIMIT or not rows:
            return total
