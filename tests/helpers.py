"""Small builders shared by the integration tests (plain functions, no fixtures)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

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
        q = select(AuditEntry).order_by(AuditEntry.seq)
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
