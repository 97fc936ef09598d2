"""Withdrawal: when a number's consent is revoked or it goes on do-not-call, its queued and
leased calls leave the queue at once (live leases end; their outcomes then get 409)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.reasons import Code, reason
from dialer import audit, refusals
from dialer.models import PENDING, Attempt, Call


def withdraw_number(
    s: Session,
    phone: str,
    now: datetime,
    code: Code,
    actor: str,
    policy_version: str,
    except_call: str | None,
) -> int:
    """Withdraw every pending call to ``phone`` (but ``except_call``); returns how many."""
    q = select(Call).where(Call.phone == phone, Call.status.in_(PENDING))
    if s.bind is not None and s.bind.dialect.name == "postgresql":
        q = q.with_for_update()
    calls = [c for c in s.scalars(q) if c.id != except_call]
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
                at=now,
                stage="dispatch",
                status="withdrawn",
                reasons=[why],
                policy_version=policy_version,
                call_id=c.id,
                external_id=c.external_id,
                campaign_id=c.campaign_id,
                phone=c.phone,
            )
        )
        audit.record(
            s,
            at=now,
            actor=actor,
            kind="call.withdrawn",
            subject=f"call:{c.id}",
            policy_version=policy_version,
            payload={"code": code.value},
        )
    refusals.write(s, rows)
    return len(calls)
