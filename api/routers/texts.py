"""Templates and texts (API.md "Templates and texts"): HTTP only; texts.service decides."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import Compliance, DialerKey, Manager, ManagerOrCompliance, RuntimeDep
from texts import service
from texts.schemas import (
    InboundIn,
    InboundOut,
    ReplyOutcomeIn,
    ReplyOutcomeOut,
    ReviewDecisionIn,
    ReviewOut,
    TemplateIn,
    TemplateList,
    TemplateOut,
)

router = APIRouter(tags=["texts"])

IdPath = Annotated[str, Path(min_length=1, max_length=36)]


@router.post(
    "/templates",
    name="create_template",
    status_code=201,
    response_model=TemplateOut,
    summary="Create a message template (validated; immutable)",
    responses={422: {"description": "`TEMPLATE_INVALID` (`details.reasons` lists each code), "
                                    "`PURPOSE_NOT_ALLOWED`, `PURPOSE_UNKNOWN`"}},
)
def create_template(body: TemplateIn, rt: RuntimeDep, who: Manager) -> TemplateOut:
    return service.create_template(rt, who, body)


@router.get(
    "/templates",
    name="list_templates",
    response_model=TemplateList,
    summary="The templates, newest first",
)
def list_templates(
    rt: RuntimeDep, who: ManagerOrCompliance,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
) -> TemplateList:
    return TemplateList(items=service.list_templates(rt, limit))


@router.get(
    "/templates/{template_id}",
    name="get_template",
    response_model=TemplateOut,
    summary="One template",
    responses={404: {"description": "No such template"}},
)
def get_template(template_id: IdPath, rt: RuntimeDep, who: ManagerOrCompliance) -> TemplateOut:
    return service.get_template(rt, template_id)


@router.post(
    "/sms/inbound",
    name="sms_inbound",
    response_model=InboundOut,
    summary="An inbound text, forwarded by the SMS gateway (STOP revokes at once)",
)
def sms_inbound(body: InboundIn, rt: RuntimeDep, who: DialerKey) -> InboundOut:
    return service.receive(rt, who, body)


@router.post(
    "/sms/inbound/{inbound_id}/decision",
    name="sms_review_decision",
    response_model=ReviewOut,
    summary="Decide a text held for review: revoke (as a STOP) or release",
    responses={404: {"description": "No such text waiting for review"},
               409: {"description": "`ALREADY_DECIDED`"}},
)
def sms_review_decision(
    inbound_id: IdPath, body: ReviewDecisionIn, rt: RuntimeDep, who: Compliance
) -> ReviewOut:
    return service.decide_review(rt, who, inbound_id, body.decision)


@router.post(
    "/sms/replies/{reply_id}/outcome",
    name="sms_reply_outcome",
    response_model=ReplyOutcomeOut,
    summary="Report a leased reply text (confirmation, help): sent or failed",
    responses={404: {"description": "No such reply"},
               409: {"description": "`LEASE_NOT_HELD`"}},
)
def sms_reply_outcome(
    reply_id: IdPath, body: ReplyOutcomeIn, rt: RuntimeDep, who: DialerKey
) -> ReplyOutcomeOut:
    return service.reply_outcome(rt, who, reply_id, body)
