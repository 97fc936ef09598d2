"""Idempotency keys (API.md "Idempotency"): every statement, and why each is safe when two
requests with one key arrive at once, on one instance or several.

A request with an ``Idempotency-Key`` first *claims* the key (:func:`claim`): an
``INSERT ... ON CONFLICT DO NOTHING`` of ``(key_id, idem_key)``, the table's primary key.
Of two claims at once exactly one inserts (the database's unique check: on PostgreSQL the
second inserter waits for the first's commit, then does nothing; on SQLite writers take
turns), so exactly one request goes on to do the work; the other reads the row the winner
committed: a different fingerprint (another body) is ``IDEMPOTENCY_KEY_REUSED``, a running
one ``IDEMPOTENCY_IN_PROGRESS``, a done one is answered from the row. The claim commits
before the work starts, so a request on another instance sees it too.

The answer is stored (:func:`complete`) before it is sent. An answer not worth keeping (a
5xx, a 429: nothing was done, a retry should run) gives the claim back (:func:`release`).

A claim whose request died with its process stays ``running``; after
``CALLGATE_IDEMPOTENCY_STALE_SECONDS`` a new request with the same key and body takes it
over (:func:`claim`, a conditional UPDATE that one taker wins). A row older than
``CALLGATE_IDEMPOTENCY_HOURS`` (24) is the key's past: a new claim replaces it, and
:func:`purge` deletes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db import Database
from core.models import IdempotencyRecord

TABLE: Table = IdempotencyRecord.__table__  # type: ignore[assignment]
RUNNING, DONE = "running", "done"


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What "the same request" means: method, path (with its query string) and body."""
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class Stored:
    """The row another request claimed first."""

    fingerprint: str
    state: str
    status: int | None
    content_type: str | None
    body: bytes | None


def claim(
    db: Database, key_id: str, key: str, fp: str, now: datetime, *,
    stale_seconds: float, keep_hours: float,
) -> Stored | None:
    """Claim ``key`` for this request: None when this request is to do the work, else the
    row that stands (see the module's docstring)."""
    values = {"key_id": key_id, "idem_key": key, "fingerprint": fp, "state": RUNNING,
              "created_at": now}
    with db.write() as s:
        ins = (pg_insert(TABLE) if not db.is_sqlite else sqlite_insert(TABLE)).values(values)
        # RETURNING says whether this statement inserted (rowcount is not reliable here:
        # SQLAlchemy's psycopg path may report -1).
        claim_it = ins.on_conflict_do_nothing().returning(TABLE.c.key_id)
        if s.execute(claim_it).first() is not None:
            return None
        row = s.execute(
            select(IdempotencyRecord).where(IdempotencyRecord.key_id == key_id,
                                            IdempotencyRecord.idem_key == key)
        ).scalar_one_or_none()
        if row is None:  # purged between the two statements
            if s.execute(claim_it).first() is not None:
                return None
            raise RuntimeError("idempotency key neither inserted nor found")
        expired = row.created_at < now - timedelta(hours=keep_hours)
        stale = (row.state == RUNNING and row.fingerprint == fp
                 and row.created_at < now - timedelta(seconds=stale_seconds))
        if expired or stale:
            # Only one taker: the UPDATE is conditional on the created_at it read (PostgreSQL
            # re-checks it under the row lock; SQLite has one writer at a time).
            took = s.execute(
                update(TABLE)
                .where(TABLE.c.key_id == key_id, TABLE.c.idem_key == key,
                       TABLE.c.created_at == row.created_at)
                .values(fingerprint=fp, state=RUNNING, created_at=now, completed_at=None,
                        status=None, content_type=None, body=None)
                .returning(TABLE.c.key_id)
            ).first()
            if took is not None:
                return None
        return Stored(row.fingerprint, row.state, row.status, row.content_type, row.body)


def complete(db: Database, key_id: str, key: str, now: datetime, status: int,
             content_type: str | None, body: bytes) -> None:
    """Keep the first answer (before it is sent)."""
    with db.write() as s:
        s.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key_id == key_id, IdempotencyRecord.idem_key == key)
            .values(state=DONE, completed_at=now, status=status, content_type=content_type,
                    body=body)
        )


def release(db: Database, key_id: str, key: str) -> None:
    """Give a running claim back (its answer is not to be replayed)."""
    with db.write() as s:
        s.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.key_id == key_id, IdempotencyRecord.idem_key == key,
                   IdempotencyRecord.state == RUNNING)
        )


def purge(db: Database, now: datetime, keep_hours: float) -> int:
    """Delete the records past their keeping time (ix_idempotency_keys_created_at)."""
    with db.write() as s:
        gone = s.execute(
            delete(TABLE).where(TABLE.c.created_at < now - timedelta(hours=keep_hours))
            .returning(TABLE.c.key_id)
        ).all()
    return len(gone)
