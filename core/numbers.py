"""A number's own serialisation and withdrawal.

Every unit of work that counts or changes a number's attempts or pending calls takes the
number's lock first (PostgreSQL; SQLite's write lock serialises everything anyway).
When a number's consent is revoked or it goes on do-not-call, its queued and leased calls
leave the queue at once (live leases end; their outcomes then get 409).

The lock is a transaction-scoped advisory lock (``pg_advisory_xact_lock``) on a 64-bit hash
of the number, released at commit or rollback. It used to be the number's ``number_ledger``
row locked ``FOR UPDATE``: a row lock is a tuple write (the row's xmax, WAL, a dirtied
page), the rows had to be created first in a transaction of their own, and a lease of a
fresh list paid an extra round trip for that; an advisory lock is an entry in the shared
lock table. Two numbers whose hashes collide share a lock: more waiting, never less
safety. Every holder takes its numbers' locks in the order of their keys, so two holders of
several numbers never wait on each other in a cycle. An instance of before this change
locks the ledger rows instead and does not exclude an instance after it: upgrade every
instance of a database at once (docs/deployment.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.orm import Session

from config.reasons import Code, reason
from core import refusals
from core.models import PENDING, Attempt, Call
from core.uow import UnitOfWork

_KEY_SALT = b"callgate.number:"


def number_key(phone: str) -> int:
    """The number's advisory-lock key: a signed 64-bit hash, the same in every process."""
    digest = hashlib.blake2b(_KEY_SALT + phone.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# unnest() yields the keys in the array's order, and each row's lock is taken as the row is
# produced: in key order (the caller sorts them). The try variant returns the keys it got.
_LOCK = text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(:keys) AS t(k)").bindparams(
    bindparam("keys", type_=ARRAY(BIGINT)))
_TRY_LOCK = text(
    "SELECT k FROM unnest(:keys) AS t(k) WHERE pg_try_advisory_xact_lock(k)"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def lock_numbers(s: Session, phone_list: Sequence[str], skip_locked: bool) -> set[str]:
    """PostgreSQL: take the numbers' advisory locks until the transaction ends (waiting; or,
    ``skip_locked``, only those free now); returns the numbers locked. SQLite: the write
    transaction already serialises everything; all are 'locked'."""
    wanted = set(phone_list)
    if not wanted:
        return set()
    if s.get_bind().dialect.name != "postgresql":
        return wanted
    by_key: dict[int, list[str]] = {}
    for p in wanted:
        by_key.setdefault(number_key(p), []).append(p)
    keys = sorted(by_key)
    if not skip_locked:
        s.execute(_LOCK, {"keys": keys})
        return wanted
    got = s.scalars(_TRY_LOCK, {"keys": keys})
    return {p for k in got for p in by_key[k]}


def withdraw_number(uow: UnitOfWork, phone: str, code: Code, except_call: str | None) -> int:
    """Withdraw every pending call to ``phone`` (but ``except_call``); returns how many.

    On PostgreSQL the caller holds the number's lock (:func:`lock_numbers`) from the
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
    took their numbers' locks), each with a refusal-log row and an audit entry."""
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
