from __future__ import annotations

from fastapi import APIRouter

from api.deps import Compliance, RuntimeDep
from core import audit
from dialer.schemas import AuditVerifyOut

router = APIRouter(tags=["compliance"])


@router.get(
    "/audit/verify",
    name="verify_audit",
    response_model=AuditVerifyOut,
    summary="Recompute the audit hash chain; report the first broken link",
)
def verify_audit(rt: RuntimeDep, who: Compliance) -> AuditVerifyOut:
    with rt.db.read() as s:
        return AuditVerifyOut(**audit.verify(s).as_dict())
