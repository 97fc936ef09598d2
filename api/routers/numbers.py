from __future__ import annotations

import io
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from api.deps import Manager, RuntimeDep
from api.errors import ApiError
from config.errors import Invalid
from consent import rnd, rnd_service
from consent.schemas import ReassignedImportOut
from core.keys import Identity
from core.runtime import Runtime

router = APIRouter(tags=["numbers"])

_EXAMPLE = [{"phone": "3145550100", "date": "2026-03-05", "answer": "no",
             "queried_at": "2026-11-20T15:00:00Z"}]
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            # JSON only in the document (generated clients: api/routers/calls.py); the
            # route takes a CSV body or a multipart upload too, as its description says.
            "application/json": {
                "schema": {"type": "array",
                           "items": {"$ref": "#/components/schemas/ReassignedAnswerIn"}},
                "example": _EXAMPLE,
            },
        },
    }
}


@router.post(
    "/numbers/reassigned",
    name="import_reassigned_answers",
    response_model=ReassignedImportOut,
    summary="Load FCC Reassigned Numbers Database answers (JSON array, CSV, or a multipart "
    "upload); numbers found reassigned since their consent leave the queue",
    description="A JSON array; or a CSV body (`Content-Type: text/csv`, header row "
    "`phone,date,answer,queried_at`) or a multipart upload of such a file.",
    openapi_extra=_BODY,
    responses={
        413: {"description": "Body over the limit"},
        415: {"description": "Unsupported content type"},
    },
)
async def import_reassigned(request: Request, rt: RuntimeDep, who: Manager) -> Response:
    # Body handling as the call-list endpoint's (api/routers/calls.py).
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/json", ""):
        body, kind = await request.body(), "json"
    elif ctype in ("text/csv", "application/csv", "text/plain"):
        body, kind = await request.body(), "csv"
    elif ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
        if not uploads:
            raise ApiError(422, "VALIDATION_ERROR", "the multipart body has no file part",
                           [{"field": "body.file", "message": "required"}])
        body = await uploads[0].read()
        kind = rnd.sniff_kind(body[:64])
        await form.close()
    else:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "send application/json, text/csv or multipart/form-data")
    # Parsing and storing stay off the event loop.
    payload = await run_in_threadpool(_import_json, rt, who, body, kind)
    del body
    return Response(payload, media_type="application/json")


def _import_json(rt: Runtime, who: Identity, body: bytes, kind: str) -> bytes:
    try:
        if kind == "json":
            rnd.check_json(io.BytesIO(body))
            rows = rnd.json_rows(io.BytesIO(body))
        else:
            rows = rnd.csv_rows(io.BytesIO(body))
        result = rnd_service.import_answers(rt, who, rows)
    except rnd.FileError as exc:
        raise Invalid("VALIDATION_ERROR", str(exc), [{"field": "body", "message": str(exc)}]
                      ) from None
    return json.dumps(result.as_dict()).encode()
