from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel

from api.deps import Checker, DialerKey, RuntimeDep
from api.fastroute import DialerRoute
from core import metrics
from dialer.queue import service as queue
from dialer.schemas import (
    CheckIn,
    CheckOut,
    DialIn,
    GoOut,
    LeaseIn,
    LeaseOut,
    LeaseRefIn,
    OutcomeIn,
    OutcomeItemOut,
    OutcomeOut,
    OutcomesIn,
    OutcomesOut,
    ReleasedOut,
    TaskOut,
)

# DialerRoute: the routes taking (body, rt, who) skip FastAPI's dependency solving for a
# valid request (api/fastroute.py); the others are handled by FastAPI as usual.
router = APIRouter(tags=["queue"], route_class=DialerRoute)


def _json(model: BaseModel) -> Response:
    """The model as JSON in one pass (pydantic-core), for the two routes a dialer calls most:
    returned as a model, FastAPI would dump it, validate the dump against ``response_model``
    and dump it again (the same bytes; ``response_model`` still documents the answer)."""
    return Response(model.model_dump_json(), media_type="application/json")
def _outcome(body: OutcomeIn) -> queue.Outcome:
    return queue.Outcome(body.lease_id, body.result, body.agent_id, body.agent_name,
                         body.disclosed_callback_number, body.started_at, body.ended_at,
                         body.recorded, body.phi_disclosed, tuple(body.identity_verified_with))


CallId = Annotated[str, Path(max_length=36)]
_409: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such call"},
    409: {"description": "`LEASE_NOT_HELD`, or the reason the call may not be dialled"},
}


@router.post(
    "/queue/lease",
    name="lease_calls",
    response_model=LeaseOut,
    summary="Lease up to `limit` calls that are legal to place right now",
)
def lease_calls(body: LeaseIn, rt: RuntimeDep, who: DialerKey) -> Response:
    tasks = queue.lease(rt, who, queue.LeaseRequest(
        body.dialer_id, body.limit, body.lease_seconds,
        tuple(body.channels) if body.channels is not None else None))
    metrics.LEASE_POLLS.labels("tasks" if tasks else "empty").inc()
    response = _json(LeaseOut(tasks=[TaskOut(**t) for t in tasks]))
    if not tasks:
        # API.md "Every response": when to poll again (whole seconds, 1-60).
        response.headers["Retry-After"] = str(queue.retry_after(rt, who))
    return response


@router.post(
    "/queue/{call_id}/dial",
    name="dial_check",
    response_model=GoOut,
    summary="Ask once more, the moment before dialling a leased call",
    responses=_409,
)
def dial_check(
    call_id: CallId, rt: RuntimeDep, who: DialerKey,
    body: Annotated[DialIn | None, Body()] = None,
) -> GoOut:
    queue.dial_check(rt, who, call_id, body.lease_id if body else None)
    return GoOut(go=True)


@router.post(
    "/queue/{call_id}/outcome",
    name="report_outcome",
    response_model=OutcomeOut,
    summary="Report a leased call's outcome, with the agent's identification",
    responses={**_409, 422: {"description": "`AGENT_ID_MISSING`, `CALLBACK_MISMATCH`, ..."}},
)
def report_outcome(call_id: CallId, body: OutcomeIn, rt: RuntimeDep, who: DialerKey) -> OutcomeOut:
    return OutcomeOut(**queue.report_outcome(rt, who, call_id, _outcome(body)))


@router.post(
    "/queue/outcomes",
    name="report_outcomes",
    response_model=OutcomesOut,
    summary="Report up to 100 leased calls' outcomes at once (one answer per item, in order)",
)
def report_outcomes(body: OutcomesIn, rt: RuntimeDep, who: DialerKey) -> Response:
    answers = queue.report_outcomes(rt, who, [(i.call_id, _outcome(i)) for i in body.outcomes])
    return _json(OutcomesOut(results=[OutcomeItemOut(**a) for a in answers]))


@router.post(
    "/queue/{call_id}/release",
    name="release_lease",
    response_model=ReleasedOut,
    summary="Return a leased call undialled (the attempt does not count)",
    responses=_409,
)
def release_lease(call_id: CallId, body: LeaseRefIn, rt: RuntimeDep, who: DialerKey) -> ReleasedOut:
    queue.release(rt, who, call_id, body.lease_id)
    return ReleasedOut(released=True)


@router.post(
    "/check",
    name="preflight_check",
    response_model=CheckOut,
    summary="Preflight for manual dials and callbacks; `reserve` counts the attempt at once",
    responses={404: {"description": "No such campaign (campaign_id)"}},
)
def preflight_check(body: CheckIn, rt: RuntimeDep, who: Checker) -> CheckOut:
    out = queue.check(
        rt, who,
        queue.CheckRequest(body.phone, body.purpose, body.channel, body.state,
                           body.postal_code, body.at, body.reserve, body.agent_id,
                           body.agent_name, body.campaign_id),
    )
    return CheckOut(**out)
