"""ASGI middleware: request-body limit (413), security headers, a privacy-safe access log.

The access log names the route *template* (``/v1/dnc/{phone}``), never the raw path or the
query string, which may carry a phone number."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    await _send_413(send, self.max_bytes)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


async def _send_error(
    send: Send, status: int, code: str, message: str, details: Any = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
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
                "unhandled error on %s %s: %s", scope.get("method"), template, type(exc).__name__
            )
            error_log.debug("unhandled error detail", exc_info=exc)
            if not started:
                await _send_error(send, 500, "INTERNAL_ERROR", "an internal error occurred")


class SecurityHeadersMiddleware:
    """Security headers on every response; ``no-store`` on everything but docs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder: dict[str, Any] = {}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in SECURITY_HEADERS}
                ]
                headers.extend(SECURITY_HEADERS)
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            template = route_template(scope)
            access_log.info(
                "%s %s %s %.1fms",
                scope.get("method"),
                template,
                status_holder.get("status", "-"),
                (time.perf_counter() - start) * 1000,
            )
