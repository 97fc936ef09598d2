from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from api.deps import Admin, Manager, ManagerOrCompliance, RuntimeDep
from api.errors import ApiError
from consent import service
from consent.schemas import DncIn, DncLiftIn, DncOut, DncStatus

router = APIRouter(tags=["do-not-call"])

PhonePath = Annotated[str, Path(min_length=1, max_length=40)]


@router.post(
    "/dnc",
    name="add_dnc",
    status_code=201,
    response_model=DncOut,
    summary="Put a number on the internal do-not-call list (withdraws its calls)",
)
def add_dnc(body: DncIn, rt: RuntimeDep, who: Manager) -> DncOut:
    return service.add_dnc(rt, who, body)


@router.get(
    "/dnc/{phone}",
    name="get_dnc",
    response_model=DncStatus,
    summary="Whether a number is on the do-not-call list (404 when it never was or is lifted)",
    responses={404: {"description": "Not on the list"}},
)
def get_dnc(phone: PhonePath, rt: RuntimeDep, who: ManagerOrCompliance) -> DncStatus:
    status = service.dnc_status(rt, who, phone)
    if not status.on_list:
        raise ApiError(404, "NOT_FOUND", "the number is not on the do-not-call list")
    return status


@router.delete(
    "/dnc/{phone}",
    name="lift_dnc",
    response_model=DncStatus,
    summary="Lift a do-not-call entry (admin only; the entry stays, the lift is audited)",
    responses={404: {"description": "Not on the list"}},
)
def lift_dnc(
    phone: PhonePath,
    rt: RuntimeDep,
    who: Admin,
    body: Annotated[DncLiftIn | None, Body()] = None,
) -> DncStatus:
    reason = body.reason if body else "lifted by an administrator"
    return service.lift_dnc(rt, who, phone, reason)
