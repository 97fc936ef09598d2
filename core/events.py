"""The event outbox: what the organisation's other systems hear (API.md, "Webhooks and
events"), written in the transaction of the change it reports.

A service announces what happened through its unit of work (``uow.emit("consent.revoked",
{...}, phone=...)``); the events are inserted when the unit commits, in one
``executemany``, and dropped with it on a rollback: no event is lost, and none reports a
change that did not happen. Like the audit log's entries (core.audit), an event is inserted
with no position and no lock: writers never queue on a head row.

**The sequencer** (:func:`sequence`) gives committed events their ``seq``, the feed's order,
in the order it finds them committed, exactly as the audit log's sequencer does
(core.auditlog): an event's id is taken at insert but its transaction may commit after a
later id's (PostgreSQL), so it numbers *every* committed event whose ``seq`` is still NULL
(``ix_events_pending``, a partial index of the few pending rows), lowest id first, however
late it committed, above the highest ``seq`` so far. Passes take turns (a transaction-level
advisory lock on PostgreSQL, the write lock on SQLite) and each reads what was committed
when its statement began, so ``seq`` grows by one with no gap, and a reader that follows
``seq`` (the feed, the webhook fan-out) never skips an event that committed late: it had no
``seq`` yet when the reader passed.

No phone number, patient reference or clinical datum goes into an event's ``data`` unless
API.md lets it (revocation and do-not-call events carry the E.164 ``phone``: the subscriber
must sync it); the order key is the number's keyed pseudonym (core.pseudonyms).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, event, exists, func, select, text
from sqlalchemy.orm import Session

from core.audit import canonical_json, iso
from core.bulk import insert_rows, read_conn, update_rows
from core.db import Database
from core.models import Event, WebhookDelivery, WebhookSubscription

# API.md, "Webhooks and events": the event types, exactly.
EVENT_TYPES = (
    "consent.created", "consent.revoked", "dnc.added", "dnc.lifted",
    "call.refused", "call.completed", "call.flagged", "audit.checkpoint",
)

_PENDING = "callgate_events_pending"
_EMITTED = "callgate_events_emitted"
SEQUENCE_BATCH = 5000
# pg_advisory_xact_lock key of a sequencer pass.
SEQUENCE_LOCK = zlib.crc32(b"callgate.events.sequence")

_EVENTS = cast(Table, Event.__table__)


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as the feed and the webhooks serve it."""

    id: int
    seq: int
    type: str
    at: datetime
    key: str
    data: str  # canonical JSON

    @property
    def public_id(self) -> str:
        return f"evt_{self.id}"

    def body(self) -> str:
        """The delivered body (Standard Webhooks): ``{"type", "timestamp", "data"}``."""
        return (f'{{"type":{canonical_json(self.type)},"timestamp":"{iso(self.at)}",'
                f'"data":{self.data}}}')


def record(session: Session, at: datetime, type_: str, data: dict[str, Any], key: str) -> None:
    """Queue an event of this transaction (inserted when it commits)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_}")
    pending: list[dict[str, Any]] = session.info.setdefault(_PENDING, [])
    pending.append({"type": type_, "at": at, "key": key[:64], "data": canonical_json(data)})


def flush_pending(session: Session) -> int:
    """Insert the queued events now (called on commit; the rows take their ids here, so a
    transaction that goes on working after this commits "late"). Returns how many."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return 0
    insert_rows(session, _EVENTS, pending)
    session.info[_EMITTED] = True
    return len(pending)


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    flush_pending(session)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.info.pop(_EMITTED, False):
        committed.notify()


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_EMITTED, None)


class _Signal:
    """This process's "an event was committed" signal: the delivery worker and the feed's
    long polls wake at once instead of at their next poll (other processes' events are
    found by polling)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Until the generation moves past ``seen`` or ``timeout`` seconds; the generation."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)
            return self._generation


committed = _Signal()


# --- the sequencer ------------------------------------------------------------------------------


def has_pending(s: Session) -> bool:
    return read_conn(s).scalar(_HAS_PENDING) is not None


_HAS_PENDING = select(Event.id).where(Event.seq.is_(None)).limit(1)


def head(s: Session) -> int:
    """The highest ``seq`` given so far (0 before the first)."""
    top = s.scalar(select(func.max(Event.seq)).where(Event.seq.is_not(None)))
    return 0 if top is None else int(top)


def sequence(db: Database, batch: int = SEQUENCE_BATCH) -> int:
    """Number every committed event that has no ``seq`` yet; returns how many."""
    total = 0
    while True:
        with db.read() as s:
            if not has_pending(s):
                return total
        with db.write() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEQUENCE_LOCK})
            # Both reads after the lock: they see every pass committed before this one.
            top = head(s)
            ids = list(s.scalars(select(Event.id).where(Event.seq.is_(None))
                                 .order_by(Event.id).limit(batch)))
            update_rows(s, _EVENTS, [{"b_id": i, "seq": top + n}
                                     for n, i in enumerate(ids, start=1)])
        total += len(ids)
        if len(ids) < batch:
            return total


# --- reading ------------------------------------------------------------------------------------


def _view(r: Any) -> EventView:
    return EventView(int(r.id), int(r.seq), r.type, r.at, r.key, r.data)


_COLUMNS = (Event.id, Event.seq, Event.type, Event.at, Event.key, Event.data)


def after(s: Session, cursor: int, limit: int, types: Sequence[str] = ()) -> list[EventView]:
    """Sequenced events with ``seq > cursor``, in ``seq`` order (``types``: only these)."""
    q = select(*_COLUMNS).where(Event.seq > cursor)
    if types:
        q = q.where(Event.type.in_(list(types)))
    return [_view(r) for r in s.execute(q.order_by(Event.seq).limit(limit))]


def by_id(s: Session, event_id: int) -> EventView | None:
    r = s.execute(select(*_COLUMNS).where(Event.id == event_id)).first()
    return None if r is None or r.seq is None else _view(r)


def by_ids(s: Session, ids: Sequence[int]) -> dict[int, EventView]:
    if not ids:
        return {}
    rows = s.execute(select(*_COLUMNS).where(Event.id.in_(list(set(ids)))))
    return {int(r.id): _view(r) for r in rows if r.seq is not None}


# --- keeping ------------------------------------------------------------------------------------

PRUNE_BATCH = 5000


def prune(db: Database, cutoff: datetime) -> int:
    """Delete events older than ``cutoff`` (``CALLGATE_EVENTS_KEEP_DAYS``) that every
    subscription has fanned out and no pending delivery still needs, and finished
    deliveries older than it. Events are a transport: the record of what happened is the
    audit log and the tables themselves. Searched in a read transaction; the write lock is
    taken only for what was found, re-checked under it. Returns how many events went."""
    total = 0
    while True:
        with db.read() as s:
            ids = list(s.scalars(_prunable(s, cutoff).limit(PRUNE_BATCH)))
            old = s.scalar(select(WebhookDelivery.id).where(*_finished(cutoff)).limit(1))
        if not ids and old is None:
            return total
        with db.write() as s:
            if old is not None:
                s.execute(delete(WebhookDelivery).where(*_finished(cutoff)))
            if ids:
                gone = list(s.scalars(_prunable(s, cutoff).where(Event.id.in_(ids))))
                s.execute(delete(Event).where(Event.id.in_(gone)))
                total += len(gone)
        if len(ids) < PRUNE_BATCH:
            return total


def _finished(cutoff: datetime) -> tuple[Any, ...]:
    return WebhookDelivery.status != "pending", WebhookDelivery.created_at < cutoff


def _prunable(s: Session, cutoff: datetime) -> Any:
    fanned = s.scalar(select(func.min(WebhookSubscription.fanout_seq))
                      .where(WebhookSubscription.deleted_at.is_(None)))
    needed = exists().where(WebhookDelivery.event_id == Event.id,
                            WebhookDelivery.status == "pending")
    q = select(Event.id).where(Event.seq.is_not(None), Event.at < cutoff, ~needed)
    if fanned is not None:
        q = q.where(Event.seq <= fanned)
    return q.order_by(Event.seq)
