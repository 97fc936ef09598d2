"""The audit log as API.md serves it ("Audit log: a verifiable log"): the signed checkpoints,
the verifier key, the entries, inclusion and consistency proofs and the incremental check;
and the dashboard's log browser. Reading the log is not a read of patient data (it holds no
number or patient reference in clear), so none of this writes an entry."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from config.errors import Invalid, NotFound
from core import auditlog, auditverify
from core.auditlog import EntryView, StoredCheckpoint
from core.models import ApiKey, AuditCheckpoint, AuditEntry
from core.runtime import Runtime
from review.schemas import (
    AuditEntriesPage,
    AuditEntryOut,
    AuditKeyOut,
    AuditVerifyOut,
    CheckpointOut,
    CheckpointRef,
    ConsistencyProofOut,
    InclusionProofOut,
)

MAX_ENTRIES = 1000
# The kinds the log browser offers as filters (any other can be typed).
KNOWN_KINDS = (
    "patient_data.read", "patient_data.unmask", "patient_data.list", "patient_data.report",
    "consent.recorded", "consent.revoked", "consent.expired", "dnc.added", "dnc.lifted",
    "campaign.created", "intake.decided", "call.leased", "call.outcome", "call.deferred",
    "call.refused", "call.expired", "call.withdrawn", "lease.released", "lease.expired",
    "outcome.rejected", "attempt.reserved", "key.created", "key.revoked", "policy.loaded",
    "ui.login", "ui.login_refused", "ui.logout", "ui.logoff", "retention.purged",
    "retention.erased", "audit.migrated",
)


def _query_error(field: str, message: str) -> Invalid:
    return Invalid("VALIDATION_ERROR", f"{field}: {message}",
                   [{"field": f"query.{field}", "message": message}])


def _checkpoint_out(rt: Runtime, cp: StoredCheckpoint) -> CheckpointOut:
    sign = auditlog.signer(rt)
    return CheckpointOut(
        size=cp.size, root_hash=cp.root_hash.hex(), at=cp.at, origin=sign.origin,
        key_name=sign.key_name,
        public_key=base64.b64encode(sign.verifier.public_key).decode("ascii"), note=cp.note,
    )


def checkpoint(rt: Runtime, size: int | None = None) -> CheckpointOut:
    """The latest signed checkpoint, or the one made at ``size``."""
    with rt.db.read() as s:
        cp = auditlog.latest_checkpoint(s) if size is None else auditlog.checkpoint_at(s, size)
    if cp is None:
        raise NotFound("NOT_FOUND", "no checkpoint was made at that size" if size is not None
                       else "no checkpoint has been made yet")
    return _checkpoint_out(rt, cp)


def verifier_key(rt: Runtime) -> AuditKeyOut:
    sign = auditlog.signer(rt)
    v = sign.verifier
    return AuditKeyOut(vkey=v.vkey, name=v.name, key_id=v.key_id.hex(), origin=sign.origin,
                       public_key=base64.b64encode(v.public_key).decode("ascii"))


def _entry_out(e: EntryView) -> AuditEntryOut:
    return AuditEntryOut(index=e.index, at=e.at, actor=e.actor, kind=e.kind, subject=e.subject,
                         payload=e.payload, policy_version=e.policy_version, leaf=e.leaf,
                         leaf_hash=e.leaf_hash.hex(), erased_at=e.erased_at)


def list_entries(rt: Runtime, start: int, limit: int) -> AuditEntriesPage:
    if not 1 <= limit <= MAX_ENTRIES:
        raise _query_error("limit", f"must be from 1 to {MAX_ENTRIES}")
    with rt.db.read() as s:
        return AuditEntriesPage(items=[_entry_out(e) for e in auditlog.entries(s, start, limit)])


def get_entry(rt: Runtime, index: int) -> AuditEntryOut:
    with rt.db.read() as s:
        e = auditlog.entry(s, index)
    if e is None:
        raise NotFound("NOT_FOUND", "no audit entry has that index (yet)")
    return _entry_out(e)


def _latest_size(rt: Runtime) -> int:
    with rt.db.read() as s:
        cp = auditlog.latest_checkpoint(s)
    return 0 if cp is None else cp.size


def inclusion(rt: Runtime, index: int, size: int) -> InclusionProofOut:
    latest = _latest_size(rt)
    if not 0 <= index < size:
        raise _query_error("index", "must be at least 0 and less than size")
    if size > latest:
        raise _query_error("size", f"must not exceed the latest checkpoint's size ({latest})")
    with rt.db.read() as s:
        leaf, proof = auditlog.inclusion_proof(s, index, size)
    return InclusionProofOut(index=index, size=size, leaf_hash=leaf.hex(),
                             hashes=[h.hex() for h in proof])


def consistency(rt: Runtime, m: int, n: int) -> ConsistencyProofOut:
    latest = _latest_size(rt)
    if not 1 <= m <= n:
        raise _query_error("from", "must be at least 1 and at most to")
    if n > latest:
        raise _query_error("to", f"must not exceed the latest checkpoint's size ({latest})")
    with rt.db.read() as s:
        proof = auditlog.consistency_proof(s, m, n)
    return ConsistencyProofOut(from_=m, to=n, hashes=[h.hex() for h in proof])


def verify(rt: Runtime) -> AuditVerifyOut:
    v = auditverify.verify_incremental(rt)
    return AuditVerifyOut(
        ok=v.ok, entries=v.entries,
        checkpoint=None if v.checkpoint is None else CheckpointRef(
            size=v.checkpoint.size, root_hash=v.checkpoint.root_hash.hex()),
        behind=v.behind, index=v.index, problem=v.problem,
    )


# --- the dashboard: the log's state, and the browser ----------------------------------------


@dataclass(frozen=True, slots=True)
class LogStatus:
    """What the overview shows: the latest checkpoint and the incremental check."""

    checkpoint: StoredCheckpoint | None
    origin: str
    vkey: str
    verification: auditverify.Verification
    pending: int


def status(rt: Runtime, budget: int = 20_000) -> LogStatus:
    """The latest checkpoint, checked incrementally here: at most ``budget`` entries added
    since this process's anchor, which the background check (every
    ``CALLGATE_AUDIT_VERIFY_SECONDS``) keeps moving up; while another check runs, its last
    result. The page costs the same at 100 million entries as at 100."""
    v = auditverify.verify_incremental(rt, budget, wait=False)
    sign = auditlog.signer(rt)
    with rt.db.read() as s:
        pending = auditlog.pending_count(s)
    return LogStatus(v.checkpoint, sign.origin, sign.vkey, v, pending)


@dataclass(frozen=True, slots=True)
class LogFilter:
    actor: str | None = None
    kind: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class BrowsedEntry:
    index: int
    at: datetime
    actor: str
    key_name: str | None
    kind: str
    subject: str
    payload: str  # canonical JSON ('' once erased)
    erased: bool


def _since_bound(rt: Runtime, since: datetime) -> int:
    """No entry with ``at >= since`` has an index below the size of a checkpoint signed
    before ``since`` (an entry is integrated after its transaction began): the browser's
    scan stops there."""
    with rt.db.read() as s:
        size = s.scalar(select(AuditCheckpoint.size).where(AuditCheckpoint.at < since)
                        .order_by(AuditCheckpoint.size.desc()).limit(1))
    return int(size or 0)


def _where(f: LogFilter, lo: int) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [AuditEntry.leaf_index >= lo]
    if f.actor:
        where.append(AuditEntry.actor == f.actor)
    if f.kind:
        where.append(AuditEntry.kind == f.kind)
    if f.since is not None:
        where.append(AuditEntry.at >= f.since)
    if f.until is not None:
        where.append(AuditEntry.at < f.until)
    return where


def browse(rt: Runtime, f: LogFilter, before: int | None, limit: int
           ) -> tuple[list[BrowsedEntry], int | None]:
    """Integrated entries matching ``f``, newest (highest index) first, below ``before``;
    and the ``before`` of the next page (None on the last)."""
    lo = _since_bound(rt, f.since) if f.since is not None else 0
    where = _where(f, lo)
    if before is not None:
        where.append(AuditEntry.leaf_index < before)
    with rt.db.read() as s:
        rows = s.execute(
            select(AuditEntry.leaf_index, AuditEntry.at, AuditEntry.actor, AuditEntry.kind,
                   AuditEntry.subject, AuditEntry.payload, AuditEntry.erased_at)
            .where(*where).order_by(AuditEntry.leaf_index.desc()).limit(limit + 1)).all()
        names = key_names(s, {r.actor for r in rows})
    items = [BrowsedEntry(int(r.leaf_index), r.at, r.actor, names.get(r.actor), r.kind,
                          r.subject, r.payload, r.erased_at is not None) for r in rows[:limit]]
    return items, (items[-1].index if len(rows) > limit and items else None)


def key_names(s: Session, actors: set[str]) -> dict[str, str]:
    """The names of the API keys among ``actors`` (``key:<id>``)."""
    ids = [a[4:] for a in actors if a.startswith("key:")]
    if not ids:
        return {}
    return {f"key:{i}": n for i, n in s.execute(select(ApiKey.id, ApiKey.name)
                                                 .where(ApiKey.id.in_(ids)))}


AUDIT_CSV_COLUMNS = ("index", "at", "actor", "key_name", "kind", "subject", "payload")


def export_rows(rt: Runtime, f: LogFilter, page: int = 1000) -> Iterator[list[object]]:
    """Every entry matching ``f``, newest first, one page per transaction."""
    before: int | None = None
    while True:
        items, before = browse(rt, f, before, page)
        for e in items:
            yield [e.index, e.at, e.actor, e.key_name, e.kind, e.subject,
                   "(erased)" if e.erased else e.payload]
        if before is None:
            return


def payload_text(payload: str) -> str:
    """A payload for display: its keys and values, compactly (the JSON as stored)."""
    if not payload:
        return "(erased past retention)"
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items())
