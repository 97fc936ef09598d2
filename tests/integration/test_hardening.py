"""Issue 16: what a hostile tester found. One section per point of the issue; each test
failed before its fix."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.middleware import BATCH_BODY, DIALER_BODY, SMALL_BODY, body_limit
from core.runtime import Runtime
from tests.helpers import sqlite_only

Keys = dict[str, dict[str, str]]
JSON = {"Content-Type": "application/json"}


# --- 1. the key before the body; a body limit per route ------------------------------------


def _asgi(app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]],
          body_parts: int) -> tuple[int, int, dict[str, Any]]:
    """Calls the app with a body that is never-ending unless read: returns the status, how
    many body messages the app read, and the decoded answer."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": reads < body_parts}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000), "app": app,
    }

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, reads, json.loads(body)


@sqlite_only
@pytest.mark.parametrize("path", ["/v1/queue/lease", "/v1/consents", "/v1/campaigns/x/calls",
                                  "/v1/queue/outcomes", "/v1/nowhere"])
def test_no_key_is_refused_before_the_body_is_read(app: FastAPI, path: str) -> None:
    # A chunked body of 64 MiB (no Content-Length): not one message of it is read.
    status, reads, answer = _asgi(app, "POST", path, [(b"content-type", b"application/json")],
                                  1024)
    assert (status, reads) == (401, 0)
    assert answer["error"]["code"] == "UNAUTHORIZED"
    status, reads, _ = _asgi(app, "POST", path, [(b"content-type", b"application/json"),
                                                 (b"authorization", b"Bearer nope")], 1024)
    assert (status, reads) == (401, 0)


@sqlite_only
def test_a_known_key_over_its_route_limit_is_413_early(app: FastAPI, keys: Keys) -> None:
    auth = keys["dialer"]["Authorization"].encode()
    status, reads, answer = _asgi(
        app, "POST", "/v1/queue/lease",
        [(b"content-type", b"application/json"), (b"authorization", auth)], 1024)
    assert status == 413
    assert answer["error"]["details"] == {"limit_bytes": DIALER_BODY}
    assert reads <= DIALER_BODY // 65536 + 1  # stopped at the limit, not at 64 MiB


@sqlite_only
def test_route_limits(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    large = runtime.settings.max_body_bytes
    assert body_limit("/v1/campaigns/abc/calls", large) == large
    assert body_limit("/v1/numbers/reassigned", large) == large
    assert body_limit("/v1/queue/outcomes", large) == BATCH_BODY
    for p in ("/v1/queue/lease", "/v1/queue/c1/outcome", "/v1/queue/c1/release",
              "/v1/queue/c1/dial", "/v1/check"):
        assert body_limit(p, large) == DIALER_BODY
    for p in ("/v1/consents", "/v1/consents/revocations", "/v1/dnc", "/v1/campaigns",
              "/ui/login"):
        assert body_limit(p, large) == SMALL_BODY
    # Announced by Content-Length: refused before anything is read.
    resp = client.post("/v1/queue/lease", content=b"[" + b"0," * DIALER_BODY + b"0]",
                       headers={**keys["dialer"], **JSON})
    assert resp.status_code == 413
    assert resp.json()["error"]["details"] == {"limit_bytes": DIALER_BODY}
    resp = client.post("/v1/consents", content=b" " * (SMALL_BODY + 1),
                       headers={**keys["admin"], **JSON})
    assert resp.status_code == 413
    # A call list still takes up to the large limit.
    resp = client.post("/v1/campaigns/nope/calls", content=b"[" + b" " * SMALL_BODY * 2 + b"]",
                       headers={**keys["admin"], **JSON})
    assert resp.status_code == 404
