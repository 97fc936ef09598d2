"""``Idempotency-Key`` on the POSTs that create or change something (API.md "Idempotency").

An ASGI layer inside the request gate (the key is known and the body limit holds) and
outside the routes: the same handling for JSON, CSV and multipart bodies, whichever route
answers. The records live in the database (core/idempotency.py), so a retry that reaches
another instance is answered the same.

- same key, method, path and body -> the first answer again (status and body), with
  ``Idempotent-Replayed: true``; nothing is done twice;
- same key, another body -> 422 ``IDEMPOTENCY_KEY_REUSED``;
- same key while the first request still runs -> 409 ``IDEMPOTENCY_IN_PROGRESS``.

Answers kept: every status but 429 and 503, which say that nothing was done (the key is
given back, a retry runs). A 500 is kept: the work may have been done before it failed, and
"nothing is done twice" comes first (retry it with a new key). When the answer cannot be
stored (the database went away meanwhile), it is sent all the same and the key stays "in
progress" until it is stale: a retry then gets 409, never a second effect.

``POST /v1/check`` is covered only with ``"reserve": true`` (without, it changes nothing and
a replay would answer an old question). A multipart body carries a random boundary: re-send
the same bytes, not a re-encoded form.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.middleware import BodyTooLarge, _send_413, _send_error, route_template
from core import idempotency
from core.keys import Identity
from core.runtime import Runtime

log = logging.getLogger("callgate.api")

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
# API.md "Idempotency": 1-255 printable ASCII characters.
_KEY = re.compile(rb"[\x20-\x7e]{1,255}")

# The POST routes that take a key (API.md's list; one place, for routes yet to come too).
IDEMPOTENT_ROUTES: list[re.Pattern[str]] = [
    re.compile(p) for p in (
        r"/v1/consents",
        r"/v1/consents/revocations",
        r"/v1/dnc",
        r"/v1/campaigns",
        r"/v1/campaigns/[^/]+/calls",
        r"/v1/campaigns/[^/]+/calls/upload",
        r"/v1/queue/[^/]+/outcome",
        r"/v1/queue/outcomes",
        r"/v1/queue/[^/]+/release",
        r"/v1/check",
        r"/v1/numbers/reassigned",
        r"/v1/templates",
        r"/v1/webhooks",
        r"/v1/sms/inbound",
    )
]
_RESERVE_ONLY = "/v1/check"


def covered(method: str, path: str) -> bool:
    return method == "POST" and any(r.fullmatch(path) for r in IDEMPOTENT_ROUTES)


def _keep(status: int) -> bool:
    return status not in (429, 503)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not covered(scope.get("method", ""), scope["path"]):
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k == HEADER), None)
        identity = (scope.get("state") or {}).get("identity")
        if raw is None or not isinstance(identity, Identity):
            await self.app(scope, receive, send)
            return
        if not _KEY.fullmatch(raw):
            await _send_error(send, 422, "VALIDATION_ERROR",
                              "Idempotency-Key must be 1-255 printable ASCII characters",
                              [{"field": "header.Idempotency-Key", "message": "malformed"}],
                              close=False)
            return
        try:
            body = await _read_body(receive)
        except BodyTooLarge as exc:
            await _send_413(send, exc.limit)
            return
        replay_receive = _replay(body, receive)
        if scope["path"] == _RESERVE_ONLY and not _reserves(body):
            await self.app(scope, replay_receive, send)
            return
        rt: Runtime = scope["app"].state.runtime
        key = raw.decode("ascii")
        fp = idempotency.fingerprint(scope["method"], scope["path"],
                                     scope.get("query_string", b""), body)
        settings = rt.settings
        stored = await run_in_threadpool(
            idempotency.claim, rt.db, identity.key_id, key, fp, rt.clock.now(),
            stale_seconds=settings.idempotency_stale_seconds,
            keep_hours=settings.idempotency_hours,
        )
        if stored is not None:
            await _answer_stored(send, stored, fp)
            return
        await self._run(scope, replay_receive, send, rt, identity.key_id, key)

    async def _run(self, scope: Scope, receive: Receive, send: Send, rt: Runtime,
                   key_id: str, key: str) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            # Also when the request is cancelled (the client went away): give the key back
            # before the cancellation goes on.
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(idempotency.release, rt.db, key_id, key)
            raise
        if start is None:  # nothing answered (the client went away): nothing to keep
            await run_in_threadpool(idempotency.release, rt.db, key_id, key)
            return
        body = b"".join(chunks)
        status = int(start["status"])
        try:
            if _keep(status):
                ctype = next((v.decode("latin-1") for k, v in start.get("headers", [])
                              if k.lower() == b"content-type"), None)
                await run_in_threadpool(idempotency.complete, rt.db, key_id, key,
                                        rt.clock.now(), status, ctype, body)
            else:
                await run_in_threadpool(idempotency.release, rt.db, key_id, key)
        except Exception as exc:  # the answer goes out; the key stays in progress
            log.error("idempotency: the answer of %s %s could not be stored: %s",
                      scope.get("method"), route_template(scope), type(exc).__name__)
        await send(start)
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)
        elif message["type"] == "http.disconnect":
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _reserves(body: bytes) -> bool:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("reserve") is True


async def _answer_stored(send: Send, stored: idempotency.Stored, fp: str) -> None:
    if stored.fingerprint != fp:
        await _send_error(send, 422, "IDEMPOTENCY_KEY_REUSED",
                          "this Idempotency-Key was used with another request (method, path "
                          "or body); use a new key for a new request", close=False)
    elif stored.state != idempotency.DONE or stored.status is None:
        await _send_error(send, 409, "IDEMPOTENCY_IN_PROGRESS",
                          "the first request with this Idempotency-Key is still running; "
                          "retry later", headers=[(b"retry-after", b"1")], close=False)
    else:
        body = stored.body or b""
        headers = [(b"content-length", str(len(body)).encode()), REPLAYED]
        if stored.content_type:
            headers.append((b"content-type", stored.content_type.encode("latin-1")))
        await send({"type": "http.response.start", "status": stored.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})
