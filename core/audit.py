"""The audit log's entries: what a unit of work appends, and the bytes of a leaf.

Services call :func:`record` (through ``uow.audit``) anywhere in a unit of work; the entries
are inserted when the unit commits, in one ``executemany``, with no lock of any kind: an
entry's position in the log (its leaf index) is not known yet. The sequencer
(:mod:`core.auditlog`) integrates committed entries into the Merkle tree a moment later, in
the order they became visible (docs/audit.md). A rolled-back unit leaves no entry.

No phone number, patient reference or clinical datum goes into a payload: subjects are ids.
An access to patient data names the numbers it showed by keyed pseudonym
(:mod:`core.pseudonyms`): in the payload's ``patients`` list, which the leaf commits to, and
in ``audit_access``, the index the access report reads.

A leaf's bytes (API.md, "Audit log: a verifiable log") are the UTF-8 bytes of the canonical
JSON (sorted keys, no insignificant whitespace, UTF-8) of ``index``, ``at``, ``actor``,
``kind``, ``subject``, ``payload`` (the object) and ``policy_version``: :func:`leaf_text`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, cast

from sqlalchemy import Table, event, insert
from sqlalchemy.orm import Session

from core import merkle
from core.bulk import insert_rows
from core.models import AuditAccess, AuditEntry

_PENDING = "callgate_audit_pending"
PATIENTS = "patients"  # the payload key naming the numbers an access showed, by pseudonym


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 (not ``\\u`` escapes); no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def iso(at: datetime | str) -> str:
    """An instant as the leaf holds it: UTC, microseconds, ``+00:00``. Also from the text
    SQLite stores (naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff``, as read by a driver-level
    query), without building a datetime."""
    if isinstance(at, str):
        if len(at) == 26 and at[10] == " " and at[19] == ".":
            return f"{at[:10]}T{at[11:]}+00:00"
        parsed = datetime.fromisoformat(at)
        at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


_string = encode_basestring  # a JSON string literal, non-ASCII kept (ensure_ascii=False)


def leaf_text(
    index: int, at: datetime | str, actor: str, kind: str, subject: str, payload: str,
    policy_version: str,
) -> str:
    """The canonical JSON of an entry as its leaf (``payload``: the stored JSON text).

    The payload is stored as canonical JSON when it is written (:func:`record`), so the leaf
    is assembled around it, keys in sorted order, rather than parsed and encoded again (a
    third of the sequencer's time): ``canonical_json({"index": ..., "payload":
    json.loads(payload), ...})`` exactly, for any payload :func:`record` wrote. A payload
    that is not JSON raises ValueError."""
    if not payload or payload[0] != "{" or payload[-1] != "}":
        raise ValueError("the payload is not a JSON object")
    return (f'{{"actor":{_string(actor)},"at":"{iso(at)}","index":{int(index)},'
            f'"kind":{_string(kind)},"payload":{payload},'
            f'"policy_version":{_string(policy_version)},"subject":{_string(subject)}}}')


def leaf_hash_of(leaf: str) -> bytes:
    """RFC 9162: SHA-256(0x00 || leaf bytes)."""
    return merkle.leaf_hash(leaf.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class _Pending:
    at: datetime
    actor: str
    kind: str
    subject: str
    payload: str
    policy_version: str
    pseudonyms: tuple[str, ...]


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    kind: str,
    subject: str,
    policy_version: str,
    payload: dict[str, Any] | None = None,
    pseudonyms: Iterable[str] = (),
) -> None:
    """Queue an audit entry; it is inserted when ``session`` commits. ``pseudonyms``: the
    patients' numbers this entry is about (an access), by pseudonym."""
    names = tuple(sorted(set(pseudonyms)))
    body = dict(payload or {})
    if names:
        body[PATIENTS] = list(names)
    pending: list[_Pending] = session.info.setdefault(_PENDING, [])
    pending.append(
        _Pending(at, actor, kind, subject, canonical_json(body), policy_version, names)
    )


_ENTRIES = cast(Table, AuditEntry.__table__)
_ACCESS = cast(Table, AuditAccess.__table__)
_INSERT_ONE = insert(_ENTRIES).returning(_ENTRIES.c.id)


def flush_pending(session: Session) -> int:
    """Insert the queued entries now (called on commit). Returns how many."""
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    if not pending:
        return 0
    # In the order recorded (ids follow it): runs of plain entries in one executemany each.
    plain: list[dict[str, Any]] = []
    access: list[dict[str, Any]] = []
    for p in pending:
        row = {"at": p.at, "actor": p.actor, "kind": p.kind, "subject": p.subject,
               "payload": p.payload, "policy_version": p.policy_version}
        if not p.pseudonyms:
            plain.append(row)
            continue
        insert_rows(session, _ENTRIES, plain)
        plain = []
        # An access names patients: its id goes into the access index, so insert it alone.
        entry_id = session.execute(_INSERT_ONE, row).scalar_one()
        access.extend({"pseudonym": n, "entry_id": entry_id} for n in p.pseudonyms)
    insert_rows(session, _ENTRIES, plain)
    insert_rows(session, _ACCESS, access)
    return len(pending)


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    if session.info.get(_PENDING):
        flush_pending(session)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
