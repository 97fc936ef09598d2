"""The tamper-evident audit log: an append-only hash chain.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's own canonical
JSON. Services call :func:`record` anywhere in a unit of work; the entries are written when
the unit commits, after the chain head is locked (``FOR UPDATE`` on PostgreSQL; on SQLite the
write transaction already holds the database's write lock), so concurrent writers always
extend one unbroken chain and the head is held only for the last moment of a transaction.
No phone number, patient reference or clinical datum goes into a payload: subjects are ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, event, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.bulk import insert_rows
from core.models import AuditEntry, AuditHead

GENESIS = "0" * 64
_PENDING = "callgate_audit_pending"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    kind: str,
    subject: str,
    payload: str,
    policy_version: str,
) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "at": _iso(at),
            "actor": actor,
            "kind": kind,
            "subject": subject,
            "payload": payload,
            "policy_version": policy_version,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Pending:
    at: datetime
    actor: str
    kind: str
    subject: str
    payload: str
    policy_version: str


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    kind: str,
    subject: str,
    policy_version: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """Queue an audit entry; it is chained and written when ``session`` commits."""
    pending: list[_Pending] = session.info.setdefault(_PENDING, [])
    pending.append(
        _Pending(at, actor, kind, subject, canonical_json(payload or {}), policy_version)
    )


def flush_pending(session: Session) -> int:
    """Chain and write the queued entries now (called on commit). Returns how many."""
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    if not pending:
        return 0
    head = _lock_head(session)
    if head is None:
        # First entry ever. Two first writers may race here: create the head row with
        # INSERT .. ON CONFLICT DO NOTHING (the loser waits for the winner's commit and
        # inserts nothing), then lock whichever row exists. A plain INSERT would make the
        # loser fail with a duplicate key.
        session.execute(_insert_head(session))
        head = _lock_head(session)
        assert head is not None
    seq, prev = head
    rows: list[dict[str, Any]] = []
    for p in pending:
        seq += 1
        h = entry_hash(prev, seq, p.at, p.actor, p.kind, p.subject, p.payload, p.policy_version)
        rows.append({
            "seq": seq, "at": p.at, "actor": p.actor, "kind": p.kind, "subject": p.subject,
            "payload": p.payload, "policy_version": p.policy_version, "prev_hash": prev,
            "hash": h,
        })
        prev = h
    # One executemany and one update, built once: no ORM objects to build and flush.
    insert_rows(session, _ENTRIES, rows)
    session.execute(_MOVE_HEAD, {"seq": seq, "hash": prev})
    return len(pending)


_ENTRIES = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(
    seq=bindparam("seq"), hash=bindparam("hash"))


def _lock_head(session: Session) -> tuple[int, str] | None:
    """The head's (seq, hash), locked (FOR UPDATE on PostgreSQL; SQLite's write lock is
    held already)."""
    row = session.execute(_READ_HEAD).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


def _insert_head(session: Session) -> Any:
    values = {"id": 1, "seq": 0, "hash": GENESIS}
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return pg_insert(AuditHead).values(values).on_conflict_do_nothing(index_elements=["id"])
    return sqlite_insert(AuditHead).values(values).on_conflict_do_nothing(index_elements=["id"])


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    if session.info.get(_PENDING):
        flush_pending(session)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    broken_at: int | None = None
    problem: str | None = None
    last_hash: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "entries": self.entries}
        if self.last_hash is not None:
            out["last_hash"] = self.last_hash
        if not self.ok:
            out["broken_at"] = self.broken_at
            out["problem"] = self.problem
        return out


def verify(session: Session) -> Verification:
    """Recompute the chain from the start; report the first broken link."""
    prev, expected_seq, count = GENESIS, 1, 0
    # The entries and the head in one statement, so one snapshot: on PostgreSQL (READ
    # COMMITTED) a head read by a later statement may already count entries appended by a
    # concurrent commit, and a sound chain would be reported broken.
    head_row = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).subquery()
    rows = session.execute(
        select(AuditEntry, head_row.c.seq, head_row.c.hash)
        .outerjoin(head_row, true())
        .order_by(AuditEntry.seq)
    ).yield_per(2000)
    head: tuple[int, str] | None = None
    for e, head_seq, head_hash in rows:
        head = (head_seq, head_hash) if head_seq is not None else None
        if e.seq != expected_seq:
            return Verification(False, count, e.seq, f"sequence gap: expected {expected_seq}")
        if e.prev_hash != prev:
            return Verification(False, count, e.seq, "prev_hash does not match previous entry")
        h = entry_hash(prev, e.seq, e.at, e.actor, e.kind, e.subject, e.payload, e.policy_version)
        if h != e.hash:
            return Verification(False, count, e.seq, "entry content does not match its hash")
        prev, expected_seq, count = h, expected_seq + 1, count + 1
    if count == 0:
        row = session.get(AuditHead, 1)
        head = (row.seq, row.hash) if row is not None else None
    if head is not None and head != (count, prev):
        return Verification(False, count, count + 1, "entries missing after the last one")
    return Verification(True, count, last_hash=prev if count else None)
