"""Compliance review endpoints: refusal log, summary, CSV export, call log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from api.deps import Compliance, RuntimeDep
from api.errors import json_error_responses
from config.reasons import Code
from consent.schemas import IsoDatetime
from review import exports
from review import logs as review
from review.logs import CallLogFilter, RefusalFilter
from review.schemas import CallLogPage, RefusalPage, RefusalSummary, Stage

router = APIRouter(tags=["compliance"])


class CsvResponse(StreamingResponse):
    media_type = "text/csv"


Since = Annotated[
    IsoDatetime | None,
    Query(description="From this instant, inclusive (ISO-8601 with offset)",
          examples=["2026-11-01T00:00:00Z"]),
]
Until = Annotated[
    IsoDatetime | None,
    Query(description="Up to this instant, exclusive (ISO-8601 with offset)",
          examples=["2026-12-01T00:00:00Z"]),
]
CampaignId = Annotated[str | None, Query(max_length=36, description="Only this campaign")]
Limit = Annotated[
    int, Query(ge=1, le=review.MAX_LIMIT, description="Items per page (1-1000)")
]
CursorQ = Annotated[
    str | None,
    Query(max_length=512, description="The next_cursor of the previous page (opaque)"),
]
Unmask = Annotated[
    bool,
    Query(description="Show full phone numbers; the read is itself audit-logged "
          "(patient_data.unmask)"),
]


def refusal_filter(
    since: Since = None,
    until: Until = None,
    campaign_id: CampaignId = None,
    code: Annotated[
        Code | None,
        Query(description="Rows with a reason of this code (any reason, not only the first)"),
    ] = None,
    stage: Annotated[Stage | None, Query(description="intake | dispatch")] = None,
) -> RefusalFilter:
    return RefusalFilter(since=since, until=until, campaign_id=campaign_id, code=code,
                         stage=stage)


def call_log_filter(
    since: Since = None,
    until: Until = None,
    campaign_id: CampaignId = None,
    agent_id: Annotated[str | None, Query(max_length=128, description="Only this agent")] = None,
    result: Annotated[
        str | None,
        Query(max_length=32, pattern=r"^[a-z_]+$",
              description="connected | voicemail | no_answer | busy | failed | wrong_number "
              "| opted_out"),
    ] = None,
) -> CallLogFilter:
    return CallLogFilter(since=since, until=until, campaign_id=campaign_id, agent_id=agent_id,
                         result=result)


RefusalFilterDep = Annotated[RefusalFilter, Depends(refusal_filter)]
CallLogFilterDep = Annotated[CallLogFilter, Depends(call_log_filter)]


def _csv(filename: str, example: str) -> dict[int | str, dict[str, Any]]:
    return {
        **json_error_responses(401, 403, 422),
        200: {
            "description": f"CSV (header row first), streamed; attachment {filename}",
            "content": {"text/csv": {"schema": {"type": "string"}, "example": example}},
        }
    }


def _attachment(chunks: Any, filename: str) -> CsvResponse:
    return CsvResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/refusals",
    name="list_refusals",
    response_model=RefusalPage,
    summary="The refusal log, newest first, one keyset page at a time",
)
def list_refusals(
    rt: RuntimeDep,
    who: Compliance,
    f: RefusalFilterDep,
    limit: Limit = review.DEFAULT_LIMIT,
    cursor: CursorQ = None,
    unmask: Unmask = False,
) -> RefusalPage:
    return review.list_refusals(rt, who, f, limit=limit, cursor=cursor, unmask=unmask)


@router.get(
    "/refusals/summary",
    name="refusal_summary",
    response_model=RefusalSummary,
    summary="Refusal counts by code (every reason), campaign, stage and UTC day",
)
def refusal_summary(
    rt: RuntimeDep, who: Compliance, since: Since = None, until: Until = None
) -> RefusalSummary:
    return review.refusal_summary(rt, since, until)


@router.get(
    "/refusals.csv",
    name="export_refusals_csv",
    response_class=CsvResponse,
    summary="The refusal log as CSV (same filters; phones masked unless unmask=true)",
    responses=_csv(
        "refusals.csv",
        "id,at,call_id,external_id,campaign_id,phone,stage,status,codes,message,rule,"
        "policy_version,row\r\n4182,2026-11-24T17:00:00+00:00,0c4b1a9e-...,enc-778,"
        "7d2f6c1b-...,'+1314555****,intake,refused,NO_CONSENT;DEADLINE_PASSED,"
        "no written auto-dialer consent is on file for this number,47 CFR 64.1200(a)(1)-(2),"
        "2026-11-01+3f9a1c2b4d5e,12\r\n",
    ),
)
def export_refusals_csv(
    rt: RuntimeDep, who: Compliance, f: RefusalFilterDep, unmask: Unmask = False
) -> CsvResponse:
    return _attachment(exports.export_refusals_csv(rt, who, f, unmask=unmask), "refusals.csv")


@router.get(
    "/call-log",
    name="list_call_log",
    response_model=CallLogPage,
    summary="The call log (every attempt, leased or manual), newest first, keyset pages",
)
def list_call_log(
    rt: RuntimeDep,
    who: Compliance,
    f: CallLogFilterDep,
    limit: Limit = review.DEFAULT_LIMIT,
    cursor: CursorQ = None,
    unmask: Unmask = False,
) -> CallLogPage:
    return review.list_call_log(rt, who, f, limit=limit, cursor=cursor, unmask=unmask)


@router.get(
    "/call-log.csv",
    name="export_call_log_csv",
    response_class=CsvResponse,
    summary="The call log as CSV (same filters; phones masked unless unmask=true)",
    responses=_csv(
        "call-log.csv",
        "id,at,call_id,campaign_id,phone,kind,state,counted,dialer_id,agent_id,agent_name,"
        "disclosed_callback_number,started_at,ended_at,result,flags,recorded_at\r\n"
        "b1e0d7c4-...,2026-11-24T17:00:30+00:00,0c4b1a9e-...,7d2f6c1b-...,'+1314555****,"
        "lease,reported,true,acme-1,A-17,Dana,'+13145550199,2026-11-24T17:01:00+00:00,"
        "2026-11-24T17:03:10+00:00,connected,,2026-11-24T17:03:12+00:00\r\n",
    ),
)
def export_call_log_csv(
    rt: RuntimeDep, who: Compliance, f: CallLogFilterDep, unmask: Unmask = False
) -> CsvResponse:
    return _attachment(exports.export_call_log_csv(rt, who, f, unmask=unmask), "call-log.csv")
