"""Reading one call with its decisions (a read of patient data: audited)."""

from __future__ import annotations

from sqlalchemy import select

from config.errors import NotFound
from core.keys import Identity
from core.models import AuditEntry, Call, Refusal
from core.runtime import Runtime
from dialer.schemas import CallOut, DecisionOut


def get_call(rt: Runtime, who: Identity, call_id: str, via: str = "GET /v1/calls/{call_id}"
             ) -> CallOut:
    import json

    with rt.write(who) as uow:
        s = uow.session
        c = s.get(Call, call_id)
        if c is None:
            raise NotFound("NOT_FOUND", "no such call")
        entries = s.scalars(
            select(AuditEntry)
            .where(AuditEntry.subject == f"call:{c.id}",
                   AuditEntry.kind.not_like("patient\\_data.%", escape="\\"))
            .order_by(AuditEntry.id)
        )
        decisions = [
            DecisionOut(at=e.at, kind=e.kind, actor=e.actor,
                        payload=json.loads(e.payload) if e.payload else {})
            for e in entries
        ]
        refs = [
            {"at": r.at, "stage": r.stage, "status": r.status, "reasons": r.reasons,
             "policy_version": r.policy_version}
            for r in s.scalars(select(Refusal).where(Refusal.call_id == c.id).order_by(Refusal.id))
        ]
        uow.audit("patient_data.read", f"call:{c.id}", {"via": via}, phones=[c.phone])
        return CallOut(
            id=c.id,
            campaign_id=c.campaign_id,
            external_id=c.external_id,
            status=c.status,  # type: ignore[arg-type,unused-ignore]
            phone=c.phone,
            priority=c.priority,
            not_before=c.not_before,
            not_after=c.not_after,
            next_eligible_at=c.next_eligible_at,
            attempts=c.attempts,
            last_reason=c.last_reason,
            candidate_zones=c.candidate_zones or [],
            created_at=c.created_at,
            decisions=decisions,
            refusals=refs,
        )
