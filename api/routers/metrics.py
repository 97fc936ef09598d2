"""``GET /metrics``: Prometheus text format (core/metrics.py, dialer/metrics.py).

Who may read it (API.md: an admin key): an admin key, or the scrape token
``CALLGATE_METRICS_TOKEN`` when one is set, so that a Prometheus server need not hold a key
that opens patient data. The figures carry no patient data (core/metrics.py: bounded labels)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import RuntimeDep, admit, key_identity
from api.errors import ApiError
from core import metrics
from core.keys import Role
from core.runtime import Runtime
from dialer.metrics import gauges

router = APIRouter(tags=["metrics"])
_bearer = HTTPBearer(auto_error=False, description="An admin key, or CALLGATE_METRICS_TOKEN")

_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format 0.0.4"},
}


@router.get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics (an admin key or the scrape token CALLGATE_METRICS_TOKEN)",
    response_class=Response,
    responses=_TEXT,
)
async def get_metrics(
    request: Request,
    rt: RuntimeDep,
    _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    authorization = request.headers.get("authorization") or ""
    token = rt.settings.metrics_token
    scheme, _, presented = authorization.partition(" ")
    if not (token is not None and scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), token.get_secret_value().encode())):
        identity = await key_identity(rt, authorization)
        if isinstance(identity, str):
            raise ApiError(401, "UNAUTHORIZED", identity, headers={"WWW-Authenticate": "Bearer"})
        admit(identity, frozenset({Role.admin}))
    body = await run_in_threadpool(_render, rt)
    return Response(body, media_type=metrics.CONTENT_TYPE)


def _render(rt: Runtime) -> bytes:
    return metrics.render(gauges(rt))
