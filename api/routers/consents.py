from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Manager, ManagerOrCompliance, RuntimeDep
from consent import service
from consent.schemas import ConsentHistory, ConsentIn, ConsentOut, RevocationIn, RevocationOut

router = APIRouter(tags=["consents"])


@router.post(
    "/consents",
    name="record_consent",
    status_code=201,
    response_model=ConsentOut,
    summary="Record a consent (oral is stored but never satisfies an auto-dialer check)",
)
def record_consent(body: ConsentIn, rt: RuntimeDep, who: Manager) -> ConsentOut:
    return service.record_consent(rt, who, body)


@router.post(
    "/consents/revocations",
    name="revoke_consent",
    status_code=201,
    response_model=RevocationOut,
    summary="Revoke every consent for a number, add it to do-not-call, withdraw its calls",
)
def revoke_consent(body: RevocationIn, rt: RuntimeDep, who: Manager) -> RevocationOut:
    return service.revoke(rt, who, body)


@router.get(
    "/consents",
    name="consent_history",
    response_model=ConsentHistory,
    summary="A number's consents and revocations (the read is audited)",
)
def consent_history(
    rt: RuntimeDep,
    who: ManagerOrCompliance,
    phone: Annotated[str, Query(min_length=1, max_length=40)],
) -> ConsentHistory:
    return service.history(rt, who, phone)
