"""Small builders shared by the integration tests (plain functions, no fixtures)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.db import Database
from core.keys import Identity, Role, create_key
from core.models import ApiKey, AuditEntry
from core.runtime import Runtime

PHONE = "+13145550100"
PHONE_RAW = "+1 314 555 0100"
# The digits that must never appear in a message (any grouping of them would contain these).
PHONE_DIGITS = "5550100"
CALLBACK = "+13145550199"


def consent_body(
    obtained_at: datetime,
    phone: str = PHONE_RAW,
    *,
    method: str = "written",
    channels: list[str] | None = None,
    purposes: list[str] | None = None,
    expires_at: datetime | None = None,
    recording: bool = False,
) -> dict[str, Any]:
    return {
        "recording": recording,
        "patient_ref": "MRN-1001",
        "phone": phone,
        "channels": channels or ["autodialed_voice", "prerecorded_voice", "sms"],
        "purposes": purposes or ["*"],
        "method": method,
        "obtained_at": obtained_at.isoformat(),
        "evidence_ref": "scan://consents/1001.pdf#sha256=ab12",
        "expires_at": expires_at.isoformat() if expires_at else None,
    }


def campaign_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Cardiology discharge follow-up",
        "purpose": "discharge_followup",
        "channel": "autodialed_voice",
        "provider_name": "Mercy Heart Clinic",
        "callback_number": "+1 314 555 0199",
        "calling_window": {"start": "09:00", "end": "18:00"},
        "max_attempts": 3,
    }
    body.update(overrides)
    return body


def identity(rt: Runtime, role: Role) -> Identity:
    """The Identity of the test key of ``role`` (created by the ``keys`` fixture)."""
    with rt.db.read() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.name == f"test-{role.value}")).one()
        return Identity(row.id, row.name, Role(row.role))


def new_identity(rt: Runtime, role: Role, name: str) -> Identity:
    """A new key of ``role`` named ``name``, as its Identity."""
    row, _ = create_key(rt.db, role, name, rt.clock.now())
    return Identity(row.id, row.name, role)


def written_consents(rt: Runtime, who: Identity, phones: list[str], obtained_at: datetime,
                     evidence_ref: str) -> None:
    """A written auto-dialer consent for every purpose for each number (patient MRN-<i>),
    recorded through the service, one at a time."""
    from consent.schemas import ConsentIn
    from consent.service import record_consent

    for i, phone in enumerate(phones):
        record_consent(rt, who, ConsentIn(
            patient_ref=f"MRN-{i}", phone=phone, channels=["autodialed_voice"],
            purposes=["*"], method="written", obtained_at=obtained_at,
            evidence_ref=evidence_ref,
        ))


def audit_entries(rt: Runtime, kind: str | None = None) -> list[AuditEntry]:
    with rt.db.read() as s:
        q = select(AuditEntry).order_by(AuditEntry.id)
        if kind is not None:
            q = q.where(AuditEntry.kind == kind)
        return list(s.scalars(q))


def new_id() -> str:
    return str(uuid.uuid4())


def days(n: float) -> timedelta:
    return timedelta(days=n)


# For tests of the HTTP layer whose behaviour cannot depend on the database (envelopes,
# headers, OpenAPI): run them on SQLite only; every test that touches storage runs on both.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# --- the audit log ----------------------------------------------------------------------------


def seal(rt: Runtime) -> int:
    """What the audit_seal job does, now: integrate every committed entry and sign a
    checkpoint (not waiting for CALLGATE_AUDIT_CHECKPOINT_SECONDS). Returns how many."""
    from core import auditlog

    return auditlog.seal(rt, force=True)


def write_entries(rt: Runtime, n: int, start: int = 0, kind: str = "test.entry") -> None:
    """``n`` audit entries ``{"i": start..start+n-1}``, 500 per unit of work."""
    for lo in range(start, start + n, 500):
        with rt.write("system:test") as uow:
            for i in range(lo, min(lo + 500, start + n)):
                uow.audit(kind, f"test:{i}", {"i": i})


def rewrite_log(rt: Runtime, drop: set[int], pad: int = 0) -> None:
    """The insider's rewrite (issue 17): delete the sealed entries at the indices ``drop``,
    renumber the rest, append ``pad`` forged entries (so the size can stay the same),
    recompute every leaf hash and tree node, and re-sign the database's checkpoints at their
    sizes with the log's own key. The checkpoint files are left alone (another host)."""
    from sqlalchemy import delete, update

    from core import auditlog, merkle
    from core.audit import leaf_hash_of, leaf_text
    from core.models import AuditAccess, AuditCheckpoint, AuditNode

    sign = auditlog.signer(rt)
    with rt.db.write() as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.leaf_index.is_not(None))
                              .order_by(AuditEntry.leaf_index)))
        sizes = list(s.scalars(select(AuditCheckpoint.size)))
        gone = [r.id for r in rows if r.leaf_index in drop]
        s.execute(delete(AuditAccess).where(AuditAccess.entry_id.in_(gone)))
        s.execute(delete(AuditEntry).where(AuditEntry.id.in_(gone)))
        s.execute(update(AuditEntry).values(leaf_index=None, leaf_hash=None)
                  .where(AuditEntry.leaf_index.is_not(None)))
        keep = [r for r in rows if r.id not in gone]
        template = keep[-1]
        for j in range(pad):
            forged = AuditEntry(at=template.at, actor="system:test", kind="test.entry",
                                subject=f"test:forged-{j}", payload='{"forged":true}',
                                policy_version=template.policy_version)
            s.add(forged)
            keep.append(forged)
        s.flush()
        hashes = []
        for i, r in enumerate(keep):
            h = leaf_hash_of(leaf_text(i, r.at, r.actor, r.kind, r.subject, r.payload,
                                       r.policy_version))
            s.execute(update(AuditEntry).where(AuditEntry.id == r.id)
                      .values(leaf_index=i, leaf_hash=h))
            hashes.append(h)
        s.expire_all()
        s.execute(delete(AuditNode))
        nodes: dict[tuple[int, int], bytes] = {}
        for level, idx, h in merkle.append(0, hashes, lambda lv, i: nodes[(lv, i)]):
            nodes[(level, idx)] = h
            if level:
                s.add(AuditNode(level=level, idx=idx, hash=h))
        s.execute(delete(AuditCheckpoint))
        now = rt.clock.now()
        for size in sorted({min(size, len(keep)) for size in sizes}):
            root = merkle.root(size, lambda lv, i: nodes[(lv, i)])
            s.add(AuditCheckpoint(size=size, root_hash=root, at=now, note=sign.sign(size, root)))


def log_holds(db: Database, seal_pending: bool = True) -> int:
    """Integrate what is pending (as the sequencer would), then rebuild the whole tree and
    check it against the database's checkpoints (``callgate audit verify`` without files);
    asserts it holds and returns its size."""
    from config.settings import Settings
    from core import auditlog, auditverify

    if seal_pending:
        auditlog.integrate(db)
    sign, _ = auditlog.load_signer(Settings())
    report = auditverify.verify_full(db, sign.verifier, sign.origin, None)
    assert report.ok, report
    return report.size
