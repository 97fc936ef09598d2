"""A number's own serialisation and withdrawal.

Every unit of work that counts or changes a number's attempts or pending calls takes the
number's ledger row first (PostgreSQL; SQLite's write lock serialises everything anyway).
When a number's consent is revoked or it goes on do-not-call, its queued and leased calls
leave the queue at once (live leases end; their outcomes then get 409)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from config.reasons import Code, reason
from core import refusals
from core.models import PENDING, Attempt, Call, NumberLedger
from core.uow import UnitOfWork


def lock_numbers(s: Session, phone_list: Sequence[str], skip_locked: bool) -> set[str]:
    """PostgreSQL: lock the numbers' ledger rows (creating them); returns the locked ones.
    SQLite: the write transaction already serialises everything; all are 'locked'."""
    wanted = sorted(set(phone_list))
    if not wanted:
        return set()
    bind = s.get_bind()
    if bind.dialect.name != "postgresql":
        return set(wanted)
    have = set(s.scalars(select(NumberLedger.phone).where(NumberLedger.phone.in_(wanted))))
    missing = [p for p in wanted if p not in have]
    if missing:
        # Created in a short transaction of their own, committed at once: inserting them
        # inside this (possibly long, multi-round) unit of work could deadlock with another
        # poller inserting an overlapping set in the opposite round order.
        engine = bind if isinstance(bind, Engine) else bind.engine
        with engine.connect() as conn, conn.begin():
            conn.execute(
                postgresql.insert(NumberLedger)
                .values([{"phone": p, "attempts_total": 0} for p in missing])
                .on_conflict_do_nothing(index_elements=["phone"])
            )
    q = (
        select(NumberLedger.phone)
        .where(NumberLedger.phone.in_(wanted))
        .order_by(NumberLedger.phone)
        .with_for_update(skip_locked=skip_locked)
    )
    return set(s.scalars(q))


def withdraw_number(uow: UnitOfWork, phone: str, code: Code, except_call: str | None) -> int:
    """Withdraw every pending call to ``phone`` (but ``except_call``); returns how many.

    On PostgreSQL the caller holds the number's ledger row (:func:`lock_numbers`) from the
    start of its unit of work: every revocation, do-not-call entry and opt-out of a number
    takes it before any other lock, so two of them never wait on each other in a cycle.
    The number's calls are then locked FOR UPDATE: a lease committed before is seen and
    withdrawn; a lease after it sees the revocation."""
    s = uow.session
    q = select(Call).where(Call.phone == phone, Call.status.in_(PENDING))
    if uow.dialect == "postgresql":
        q = q.with_for_update()
    return withdraw_calls(uow, [c for c in s.scalars(q) if c.id != except_call], code)


def withdraw_calls(uow: UnitOfWork, calls: Sequence[Call], code: Code) -> int:
    """Withdraw these pending calls (read, and on PostgreSQL locked, by the caller after it
    took their numbers' ledger rows), each with a refusal-log row and an audit entry."""
    s, now = uow.session, uow.now
    if not calls:
        return 0
    ids = [c.id for c in calls]
    # A live lease ends; the attempt still counts (the dialer may already have dialled).
    s.execute(
        update(Attempt)
        .where(Attempt.call_id.in_(ids), Attempt.state == "live")
        .values(state="withdrawn")
    )
    why = reason(code)
    rows = []
    for c in calls:
        c.status = "withdrawn"
        c.lease_id = None
        c.lease_expires_at = None
        c.next_eligible_at = None
        c.last_reason = code.value
        c.updated_at = now
        rows.append(
            refusals.refusal_row(
                at=now, stage="dispatch", status="withdrawn", reasons=[why],
                policy_version=uow.policy_version, call_id=c.id, external_id=c.external_id,
                campaign_id=c.campaign_id, phone=c.phone,
            )
        )
        uow.audit("call.withdrawn", f"call:{c.id}", {"code": code.value})
    refusals.write(s, rows)
    return len(calls)
