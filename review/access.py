"""The access report (API.md "Access report"): who looked at a patient's data, when, and
through what — HIPAA's accounting of disclosures, and what the SSM Health investigation had
to reconstruct by hand.

Every read of patient data writes an audit entry naming the numbers it showed by keyed
pseudonym (core.pseudonyms), indexed in ``audit_access``. The report computes the pseudonyms
of the patient's numbers — the number asked about, or every number the patient's consents
and calls name (``patient_ref``) — and lists their entries in time order. Entries written
before the access index existed (migration 0005) name no patient and are not found. The
report's own use is an audit entry too, naming the same numbers.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from config.errors import Invalid
from consent.service import normalise_phone
from core.keys import Identity
from core.models import AuditAccess, AuditEntry, Call, Consent
from core.runtime import Runtime
from review import audit as audit_view
from review.logs import check_range, decode_cursor, encode_cursor
from review.schemas import AccessItem, AccessReport

REPORT_KIND = "patient_data.report"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def numbers_of(s: Session, patient_ref: str) -> list[str]:
    """The numbers a patient's consents and calls name."""
    q = union(select(Consent.phone).where(Consent.patient_ref == patient_ref),
              select(Call.phone).where(Call.patient_ref == patient_ref))
    return sorted({str(p) for (p,) in s.execute(q)})


def via_of(kind: str, payload: str) -> str:
    """The endpoint or page an access entry names (``via``; ``view`` in older entries)."""
    try:
        data = json.loads(payload) if payload else {}
    except ValueError:
        data = {}
    via = data.get("via") or data.get("view") if isinstance(data, dict) else None
    return str(via) if via else kind


def access_report(
    rt: Runtime,
    who: Identity,
    *,
    phone: str | None = None,
    patient_ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    via: str = "GET /v1/access-report",
) -> AccessReport:
    """Every access to the patient's data in ``[since, until)``, oldest first."""
    if (phone is None) == (patient_ref is None) or (phone == "" or patient_ref == ""):
        raise Invalid("VALIDATION_ERROR", "give exactly one of phone and patient_ref",
                      [{"field": "query.phone", "message": "phone or patient_ref, not both"},
                       {"field": "query.patient_ref",
                        "message": "phone or patient_ref, not both"}])
    check_range(since, until)
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("VALIDATION_ERROR", f"limit: must be from 1 to {MAX_LIMIT}",
                      [{"field": "query.limit", "message": f"must be from 1 to {MAX_LIMIT}"}])
    after = decode_cursor("access", cursor, int) if cursor else None
    numbers = [normalise_phone(rt, phone)] if phone is not None else []
    with rt.write(who) as uow:
        s = uow.session
        if patient_ref is not None:
            numbers = numbers_of(s, patient_ref)
        names = [rt.pseudonym(n) for n in numbers]
        rows = []
        if names:
            entries = select(AuditAccess.entry_id).where(AuditAccess.pseudonym.in_(names))
            q = (select(AuditEntry.id, AuditEntry.leaf_index, AuditEntry.at, AuditEntry.actor,
                        AuditEntry.kind, AuditEntry.payload)
                 .where(AuditEntry.id.in_(entries)))
            if since is not None:
                q = q.where(AuditEntry.at >= since)
            if until is not None:
                q = q.where(AuditEntry.at < until)
            if after is not None:
                q = q.where((AuditEntry.at > after.at)
                            | ((AuditEntry.at == after.at) & (AuditEntry.id > int(after.id))))
            rows = list(s.execute(q.order_by(AuditEntry.at, AuditEntry.id).limit(limit + 1)))
        shown = rows[:limit]
        keys = audit_view.key_names(s, {r.actor for r in shown})
        uow.audit(REPORT_KIND, "access_report", {
            "via": via, "by": "phone" if phone is not None else "patient_ref",
            "numbers": len(numbers), "rows": len(shown),
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        }, phones=numbers)
    items = [AccessItem(at=r.at, actor=r.actor, key_name=keys.get(r.actor), kind=r.kind,
                        via=via_of(r.kind, r.payload),
                        index=None if r.leaf_index is None else int(r.leaf_index))
             for r in shown]
    nxt = encode_cursor("access", shown[-1].at, int(shown[-1].id)) if len(rows) > limit else None
    return AccessReport(items=items, next_cursor=nxt)
