from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from api.deps import CallReader, Manager, RuntimeDep
from api.errors import ApiError
from core.keys import Identity
from core.runtime import Runtime
from dialer import calls
from dialer.intake import service as intake
from dialer.schemas import CallOut, IntakeOut

router = APIRouter(tags=["calls"])

_EXAMPLE_ROWS = [
    {"external_id": "enc-778", "patient_ref": "MRN-1001", "phone": "3145550100",
     "not_before": None, "not_after": "2026-11-26T00:00:00Z", "postal_code": "63110",
     "state": "MO", "priority": 5}
]
_CSV_EXAMPLE = ("external_id,patient_ref,phone,not_after,postal_code,state,priority\n"
                "enc-778,MRN-1001,3145550100,2026-11-26T00:00:00Z,63110,MO,5\n")
# The documents of the two routes (their handling is one: every body kind on either). The
# JSON route documents JSON only, so that generated clients get a plain typed function for
# it (code generators do not all take text/csv, and some fail on a body of several kinds);
# CSV files go to /upload, documented as a multipart upload or the raw bytes.
_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array",
                           "items": {"$ref": "#/components/schemas/IntakeRowIn"}},
                "example": _EXAMPLE_ROWS,
            },
        },
    }
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"$ref": "#/components/schemas/CsvUpload"},
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "example": _CSV_EXAMPLE,
            },
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such campaign"},
    413: {"description": "Body over the limit (`PAYLOAD_TOO_LARGE`) or more rows than "
          "CALLGATE_MAX_LIST_ROWS (`LIST_TOO_LARGE`)"},
    415: {"description": "Unsupported content type (`UNSUPPORTED_MEDIA_TYPE`)"},
}
CampaignPath = Annotated[str, Path(max_length=36)]
DryRun = Annotated[bool, Query(description="Answer as a real submission, store nothing")]


@router.post(
    "/campaigns/{campaign_id}/calls",
    name="submit_calls",
    response_model=IntakeOut,
    summary="Submit a call list as a JSON array; one result per row",
    description="One result per input row, in input order; bad rows never fail the good "
    "ones. This path also takes a CSV body (`Content-Type: text/csv`, header row, the same "
    "column names) or a multipart upload, as `/upload` documents.",
    openapi_extra=_JSON_BODY,
    responses=_RESPONSES,
)
async def submit_calls(
    request: Request, campaign_id: CampaignPath, rt: RuntimeDep, who: Manager,
    dry_run: DryRun = False,
) -> Response:
    return await _submit(request, campaign_id, rt, who, dry_run)


@router.post(
    "/campaigns/{campaign_id}/calls/upload",
    name="upload_calls",
    response_model=IntakeOut,
    summary="Submit a call list as a CSV file (multipart upload, or the raw bytes)",
    description="API extension: the CSV form of `POST /v1/campaigns/{campaign_id}/calls`, "
    "documented apart. A `multipart/form-data` body with one file part, or the file's "
    "bytes as `text/csv` or `application/octet-stream` (header row; columns as the JSON "
    "fields). The answer is the JSON route's.",
    openapi_extra=_UPLOAD_BODY,
    responses=_RESPONSES,
)
async def upload_calls(
    request: Request, campaign_id: CampaignPath, rt: RuntimeDep, who: Manager,
    dry_run: DryRun = False,
) -> Response:
    return await _submit(request, campaign_id, rt, who, dry_run)


async def _submit(
    request: Request, campaign_id: str, rt: Runtime, who: Identity, dry_run: bool
) -> Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/json", ""):
        body, kind = await request.body(), "json"
    elif ctype in ("text/csv", "application/csv", "text/plain", "application/octet-stream"):
        body, kind = await request.body(), "csv"
    elif ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
        if not uploads:
            raise ApiError(422, "VALIDATION_ERROR", "the multipart body has no file part",
                           [{"field": "body.file", "message": "required"}])
        body, kind = await uploads[0].read(), "csv"
        await form.close()
    else:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "send application/json, text/csv or multipart/form-data")
    # Deciding and encoding the answer (one result per row, up to max_list_rows) both stay
    # off the event loop, which would otherwise stall every other request meanwhile.
    payload = await run_in_threadpool(
        _decide_json, rt, who, campaign_id, body, kind, dry_run
    )
    del body
    return Response(payload, media_type="application/json")


def _decide_json(
    rt: Runtime, who: Identity, campaign_id: str, body: bytes, kind: str, dry_run: bool
) -> bytes:
    return intake.submit_body(rt, who, campaign_id, body, kind, dry_run=dry_run).to_json()


@router.get(
    "/calls/{call_id}",
    name="get_call",
    response_model=CallOut,
    summary="A call's status, next_eligible_at, attempts and every decision about it",
    responses={404: {"description": "No such call"}},
)
def get_call(
    call_id: Annotated[str, Path(max_length=36)], rt: RuntimeDep, who: CallReader
) -> CallOut:
    return calls.get_call(rt, who, call_id)
