"""Idempotent housekeeping jobs, run by the scheduler (dialer.jobs). Each may run any number
of times, in any process, and leaves the same state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, exists, literal, select

from core import auditlog, events, idempotency
from core.models import Attempt, AuditEntry, Call, Consent
from core.runtime import Runtime
from dialer.queue.expiry import SYSTEM, expire_deadlines, expire_leases

BATCH = 500
TERMINAL = ("completed", "refused", "withdrawn", "expired")


def note_expired_consents(rt: Runtime) -> int:
    """Write a ``consent.expired`` audit entry once for every consent past its expiry.
    (Decisions never need it: expiry is derived from ``expires_at`` at every check.)

    Like every job here, it searches in a read transaction and takes the write lock only
    for what it found, re-checked under the lock: the search reads every consent (200,000
    in the benchmark: 24-63 ms a run), which under the lock stalled every poller."""
    total = 0
    while True:
        with rt.read(SYSTEM) as uow:
            ids = list(uow.session.scalars(_expired_consents(uow.now).limit(BATCH)))
        if not ids:
            return total
        with rt.write(SYSTEM) as uow:
            expired = _expired_consents(uow.now).where(Consent.id.in_(ids))
            for cid in uow.session.scalars(expired):
                uow.audit("consent.expired", f"consent:{cid}")
        total += len(ids)
        if len(ids) < BATCH:
            return total


def _expired_consents(now: datetime) -> Select[Any]:
    noted = exists().where(
        AuditEntry.kind == "consent.expired",
        AuditEntry.subject == literal("consent:") + Consent.id,
    )
    return select(Consent.id).where(
        Consent.expires_at.is_not(None), Consent.expires_at <= now, ~noted
    )


def purge_past_retention(rt: Runtime) -> int:
    """Delete finished calls (and their attempts) older than the retention period. The audit
    log and the refusal log are kept. The search (every finished call: no index serves it)
    runs in a read transaction; the deletes re-check each call under the write lock."""
    cutoff = rt.clock.now() - timedelta(days=rt.settings.retention_days)
    total = 0
    while True:
        with rt.read(SYSTEM) as uow:
            ids = list(uow.session.scalars(select(Call.id).where(*_past(cutoff)).limit(BATCH)))
        if not ids:
            return total
        with rt.write(SYSTEM) as uow:
            s = uow.session
            gone = list(s.scalars(select(Call.id).where(Call.id.in_(ids), *_past(cutoff))))
            if gone:
                s.execute(delete(Attempt).where(Attempt.call_id.in_(gone)))
                s.execute(delete(Call).where(Call.id.in_(gone)))
                uow.audit("retention.purged", "calls",
                          {"calls": len(gone), "cutoff": cutoff.isoformat()})
        total += len(gone)
        if len(ids) < BATCH:
            return total


def _past(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    return Call.status.in_(TERMINAL), Call.updated_at < cutoff


def purge_idempotency_keys(rt: Runtime) -> int:
    """Idempotency-Key records past CALLGATE_IDEMPOTENCY_HOURS (API.md: kept 24 hours)."""
    return idempotency.purge(rt.db, rt.clock.now(), rt.settings.idempotency_hours)
def prune_events(rt: Runtime) -> int:
    """Events past ``CALLGATE_EVENTS_KEEP_DAYS`` that no subscription still needs
    (core.events.prune)."""
    return events.prune(rt.db, rt.clock.now() - timedelta(days=rt.settings.events_keep_days))


JOBS: dict[str, Callable[[Runtime], int]] = {
    "expire_leases": expire_leases,
    "expire_deadlines": expire_deadlines,
    "note_expired_consents": note_expired_consents,
    "purge_past_retention": purge_past_retention,
    "erase_audit_payloads": auditlog.erase_past_retention,
    "purge_idempotency_keys": purge_idempotency_keys,
    "prune_events": prune_events,
}
