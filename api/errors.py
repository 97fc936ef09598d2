"""The error envelope for every 4xx/5xx: ``{"error": {"code", "message", "details"}}``.

Validation details name fields and never echo input values (they may be phone numbers)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.middleware import BodyTooLarge, route_template
from config.errors import KIND_STATUS, DomainError

log = logging.getLogger("callgate.api")

STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def envelope(
    status: int, code: str, message: str, details: Any = None, headers: Any = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_errors(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"field": ".".join(loc), "message": e.get("msg", ""), "type": e.get("type")})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return envelope(KIND_STATUS.get(exc.kind, 422), exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(
            422, "VALIDATION_ERROR", "the request is not valid", _field_errors(list(exc.errors()))
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI/Starlette answer a body they cannot decode (not UTF-8, a broken
            # multipart) with a bare 400; API.md: an invalid request is 422 VALIDATION_ERROR,
            # as for malformed JSON.
            return envelope(422, "VALIDATION_ERROR", "the request body cannot be parsed",
                            [{"field": "body", "message": "cannot be parsed"}])
        code = STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
        if exc.status_code == 404:
            message = "no such resource"
        elif exc.status_code == 405:
            message = "method not allowed on this resource"
        details = {"limit_bytes": exc.limit} if isinstance(exc, BodyTooLarge) else None
        return envelope(exc.status_code, code, message, details, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # The type only: no request data, no stack trace in the body or at INFO.
        log.error(
            "unhandled error on %s %s: %s",
            request.method,
            _route_template(request),
            type(exc).__name__,
        )
        log.debug("unhandled error detail", exc_info=exc)
        return envelope(500, "INTERNAL_ERROR", "an internal error occurred", None)


def _route_template(request: Request) -> str:
    return route_template(request.scope)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "Missing or unknown API key (`UNAUTHORIZED`)"},
    403: {"model": ErrorEnvelope, "description": "The key's role may not do this (`FORBIDDEN`)"},
    413: {"model": ErrorEnvelope,
          "description": "The body is over this route's limit (`PAYLOAD_TOO_LARGE`, "
          "`details.limit_bytes`), or a list over its row limit (`LIST_TOO_LARGE`)"},
    422: {"model": ErrorEnvelope, "description": "Invalid request (`VALIDATION_ERROR`, ...)"},
}


def json_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``ERROR_RESPONSES`` for a route whose success body is not JSON (CSV exports): FastAPI
    documents a ``model`` response in the route's own media type, so these name
    ``application/json`` explicitly (the ``ErrorEnvelope`` component exists: every other
    route documents it)."""
    ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
    return {
        s: {
            "description": ERROR_RESPONSES[s]["description"],
            "content": {"application/json": {"schema": ref}},
        }
        for s in statuses
    }
