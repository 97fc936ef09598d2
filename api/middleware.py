"""ASGI middleware: request-body limit (413), security headers, a privacy-safe access log.

The access log names the route *template* (``/v1/dnc/{phone}``), never the raw path or the
query string, which may carry a phone number."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import observe_request

access_log = logging.getLogger("callgate.access")
error_log = logging.getLogger("callgate.api")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
]


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/v1/dnc/{phone}``), or ``(unmatched)``.

    FastAPI 0.12x+ hands an included router's own route to the handler, whose ``path`` lacks
    the include prefix (``/dnc/{phone}``); the full template is on the effective route
    context it records in the scope."""
    ctx = (scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(ctx, "path_format", None) or getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else "(unmatched)"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


# Request bodies, by route (issue 16): a dialer's per-call request is a few hundred bytes, a
# batch of 100 outcomes tens of KiB; only call lists and reassigned-number imports are large
# (CALLGATE_MAX_BODY_BYTES). Anything not named here gets SMALL_BODY.
DIALER_BODY = 16 * 1024
BATCH_BODY = 256 * 1024
SMALL_BODY = 64 * 1024
_LARGE_ROUTES = (
    re.compile(r"/v1/campaigns/[^/]+/calls(?:/upload)?"),
    re.compile(r"/v1/numbers/reassigned"),
)
_DIALER_ROUTES = (
    re.compile(r"/v1/queue/lease"),
    re.compile(r"/v1/queue/[^/]+/(?:dial|outcome|release)"),
    re.compile(r"/v1/check"),
)
_BATCH_ROUTES = (re.compile(r"/v1/queue/outcomes"),)


def body_limit(path: str, large: int) -> int:
    """The most bytes a request to ``path`` may carry."""
    if any(r.fullmatch(path) for r in _LARGE_ROUTES):
        return large
    if any(r.fullmatch(path) for r in _DIALER_ROUTES):
        return min(DIALER_BODY, large)
    if any(r.fullmatch(path) for r in _BATCH_ROUTES):
        return min(BATCH_BODY, large)
    return min(SMALL_BODY, large)


def needs_key(path: str) -> bool:
    """Every ``/v1`` route takes an API key (the dashboard under ``/ui`` has its sessions,
    ``/healthz`` and the docs none)."""
    return path.startswith("/v1/") or path == "/v1"


# (scope, Authorization header) -> the caller's identity, or the message of a 401.
Authenticator = Callable[[Scope, str], Awaitable[Any]]


class RequestGate:
    """Before a byte of the body is read: the API key of every ``/v1`` request (401 at once,
    the body left unread, the connection closed), then the route's body limit (413 when
    ``Content-Length`` says more, or as soon as a streamed body passes it).

    FastAPI decodes and validates a body before any dependency runs, so a key checked in a
    dependency was checked after an unauthenticated client's 57 MiB body had been parsed
    (twice): 2 GiB and seconds of the event loop (issue 16). The identity found here is
    left in the request's state for the routes' own dependency (``api.deps.identify``),
    which then does not look the key up again."""

    def __init__(self, app: ASGIApp, max_bytes: int, authenticate: Authenticator) -> None:
        self.app, self.max_bytes, self.authenticate = app, max_bytes, authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if needs_key(path):
            authorization = ""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            identity = await self.authenticate(scope, authorization)
            if isinstance(identity, str):  # why not
                await _send_error(send, 401, "UNAUTHORIZED", identity,
                                  headers=[(b"www-authenticate", b"Bearer")])
                return
            scope.setdefault("state", {})["identity"] = identity
        limit = body_limit(path, self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > limit:
                    await _send_413(send, limit)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


async def _send_error(
    send: Send, status: int, code: str, message: str, details: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None, close: bool = True,
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *([(b"connection", b"close")] if close else []),
                *(headers or []),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_413(send: Send, limit: int) -> None:
    await _send_error(
        send,
        413,
        "PAYLOAD_TOO_LARGE",
        f"the request body is larger than the limit of {limit} bytes",
        {"limit_bytes": limit},
    )


class InternalErrorMiddleware:
    """Answers an unhandled exception with the 500 envelope and does not re-raise it.

    Starlette's outermost error middleware would answer too, but outside the security
    headers, and then re-raise to the server, which logs the traceback *with the exception's
    message* -- a database driver's message can carry the bound parameters, phone numbers
    included. Here the type and route template are logged at ERROR, the detail at DEBUG only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def wrapped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        except Exception as exc:
            template = route_template(scope)
            error_log.error(
                "unhandled error on %s %s: %s rid=%s", scope.get("method"), template,
                type(exc).__name__, (scope.get("state") or {}).get("request_id", "-"),
            )
            error_log.debug("unhandled error detail", exc_info=exc)
            if not started:
                await _send_error(send, 500, "INTERNAL_ERROR", "an internal error occurred")


HSTS = (b"strict-transport-security", b"max-age=31536000")
_REPLACED = {h for h, _ in SECURITY_HEADERS} | {b"x-request-id"}


# API.md "Every response": a client's X-Request-Id of at most 128 printable ASCII characters
# is echoed; anything else (empty, longer, control or non-ASCII bytes) is replaced.
_REQUEST_ID = re.compile(rb"[\x20-\x7e]{1,128}")


def request_id(scope: Scope) -> str:
    """The request's id: the client's well-formed ``X-Request-Id``, or a new UUID."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            if _REQUEST_ID.fullmatch(value) and value.strip():
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


class SecurityHeadersMiddleware:
    """Security headers on every response; ``no-store`` on everything but docs; HSTS when
    the request came over HTTPS (the scheme uvicorn took from a trusted proxy's
    X-Forwarded-Proto) or the service is declared HTTPS (``CALLGATE_HTTPS``).

    Outermost, so it also gives every answer (401 and 413 of the request gate, 404 of an
    unknown route, 500) its ``X-Request-Id`` and writes the access log line with it; the id
    is left in ``scope["state"]["request_id"]`` for the layers inside."""

    def __init__(self, app: ASGIApp, https: bool = False) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder: dict[str, Any] = {}
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("ascii"))

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in _REPLACED
                ]
                headers.extend(SECURITY_HEADERS)
                headers.append(rid_header)
                if self.https or scope.get("scheme") == "https":
                    headers.append(HSTS)
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            template = route_template(scope)
            elapsed = time.perf_counter() - start
            status = status_holder.get("status")
            access_log.info(
                "%s %s %s %.1fms rid=%s",
                scope.get("method"),
                template,
                status or "-",
                elapsed * 1000,
                rid,
            )
            if status is not None:
                observe_request(scope.get("method", "-"), template, status, elapsed)
