"""The error envelope for every 4xx/5xx, no input echoed, security headers, body limits,
/healthz and the OpenAPI document."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.middleware import SECURITY_HEADERS, SMALL_BODY
from core.runtime import Runtime
from tests.helpers import PHONE_DIGITS, campaign_body, consent_body, sqlite_only

Keys = dict[str, dict[str, str]]
LIMIT = 2 * 1024 * 1024
JSON = {"content-type": "application/json"}


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def assert_security_headers(resp: Any) -> None:
    for name, value in SECURITY_HEADERS:
        assert resp.headers[name.decode()] == value.decode()
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"


@sqlite_only
def test_validation_error_names_fields_and_echoes_no_values(
    client: TestClient, keys: Keys, clock: Any
) -> None:
    body = consent_body(clock.now(), phone="+1 314 555 0100")
    body["method"] = "carrier pigeon +1 314 555 0100"
    body["channels"] = ["fax"]
    body["obtained_at"] = "yesterday +13145550100"
    body["surprise"] = "3145550100"
    resp = client.post("/v1/consents", json=body, headers=keys["campaign_manager"])
    err = assert_envelope(resp, 422, "VALIDATION_ERROR")
    fields = {d["field"] for d in err["details"]}
    assert {"body.method", "body.channels.0", "body.obtained_at", "body.surprise"} <= fields
    assert all(set(d) == {"field", "message", "type"} for d in err["details"])
    assert PHONE_DIGITS not in resp.text
    assert "pigeon" not in resp.text and "yesterday" not in resp.text
    assert_security_headers(resp)


@sqlite_only
def test_validation_error_on_query_and_path(client: TestClient, keys: Keys) -> None:
    resp = client.get("/v1/consents", headers=keys["admin"])
    err = assert_envelope(resp, 422, "VALIDATION_ERROR")
    assert [d["field"] for d in err["details"]] == ["query.phone"]
    resp = client.get("/v1/dnc/" + "3145550100" * 5, headers=keys["admin"])
    err = assert_envelope(resp, 422, "VALIDATION_ERROR")
    assert err["details"][0]["field"] == "path.phone"
    assert PHONE_DIGITS not in resp.text


@sqlite_only
def test_invalid_json_is_a_validation_error(client: TestClient, keys: Keys) -> None:
    resp = client.post(
        "/v1/campaigns",
        content=b'{"callback_number": "+1 314 555 0100",',
        headers={**keys["admin"], "content-type": "application/json"},
    )
    assert_envelope(resp, 422, "VALIDATION_ERROR")
    assert PHONE_DIGITS not in resp.text


@sqlite_only
def test_wrong_type_body_echoes_nothing(client: TestClient, keys: Keys) -> None:
    resp = client.post("/v1/dnc", json=["+1 314 555 0100"], headers=keys["admin"])
    assert_envelope(resp, 422, "VALIDATION_ERROR")
    assert PHONE_DIGITS not in resp.text


@sqlite_only
def test_unknown_route_404(client: TestClient, keys: Keys) -> None:
    resp = client.get("/v1/no-such-thing/3145550100", headers=keys["admin"])
    assert_envelope(resp, 404, "NOT_FOUND")
    assert PHONE_DIGITS not in resp.text
    assert_security_headers(resp)


@sqlite_only
def test_wrong_method_405(client: TestClient, keys: Keys) -> None:
    resp = client.put("/v1/campaigns", json={}, headers=keys["admin"])
    assert_envelope(resp, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in resp.headers["allow"]
    assert_security_headers(resp)


@sqlite_only
def test_body_over_limit_by_content_length_413(client: TestClient, keys: Keys) -> None:
    big = json.dumps(campaign_body(name="x" * (LIMIT + 10))).encode()
    resp = client.post(
        "/v1/campaigns", content=big, headers={**keys["admin"], "content-type": "application/json"}
    )
    err = assert_envelope(resp, 413, "PAYLOAD_TOO_LARGE")
    # A campaign's body is small: its route's limit, not the call lists' (issue 16).
    assert err["details"] == {"limit_bytes": SMALL_BODY}
    assert_security_headers(resp)


@sqlite_only
def test_body_over_limit_chunked_413(client: TestClient, keys: Keys) -> None:
    chunk = b" " * (256 * 1024)

    def body() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):  # 2.5 MiB with no Content-Length
            yield chunk
        yield b'"}'

    resp = client.post("/v1/campaigns", content=body(), headers={**keys["admin"], **JSON})
    assert "content-length" not in resp.request.headers
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert_envelope(resp, 413, "PAYLOAD_TOO_LARGE")


@sqlite_only
def test_body_under_limit_chunked_is_read(client: TestClient, keys: Keys) -> None:
    payload = json.dumps(campaign_body()).encode()

    def body() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    resp = client.post("/v1/campaigns", content=body(), headers={**keys["admin"], **JSON})
    assert resp.status_code == 201, resp.text


@pytest.fixture
def failing_app(runtime: Runtime) -> FastAPI:
    app = create_app(runtime, migrate=False)

    @app.get("/boom", summary="raises")
    def boom() -> None:
        raise RuntimeError("secret detail for +1 314 555 0100 in /home/x/app.py line 3")

    return app


@sqlite_only
def test_unhandled_error_500_without_stack_trace(
    failing_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG),
        TestClient(failing_app, raise_server_exceptions=False) as c,
    ):
        resp = c.get("/boom")
    err = assert_envelope(resp, 500, "INTERNAL_ERROR")
    assert err["details"] is None
    for leak in ("Traceback", "RuntimeError", "secret", PHONE_DIGITS, "app.py"):
        assert leak not in resp.text
    assert_security_headers(resp)
    # Logged by type and route template only at ERROR.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("RuntimeError" in r.getMessage() and "/boom" in r.getMessage() for r in errors)
    assert all(PHONE_DIGITS not in r.getMessage() for r in errors)


@sqlite_only
def test_unhandled_error_does_not_escape_the_app(failing_app: FastAPI) -> None:
    """The exception is answered, not re-raised to the server (which would log its traceback,
    message included, where a phone number may sit)."""
    with TestClient(failing_app, raise_server_exceptions=True) as c:
        resp = c.get("/boom")
    assert_envelope(resp, 500, "INTERNAL_ERROR")


@sqlite_only
def test_success_responses_carry_security_headers(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert_security_headers(resp)
    assert resp.headers["cache-control"] == "no-store"


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": "ok"}


@sqlite_only
def test_healthz_reports_an_unreachable_database(runtime: Runtime) -> None:
    from core.db import Database

    broken = Runtime(
        db=Database("postgresql+psycopg://nobody:wrong@127.0.0.1:1/none"),
        policy=runtime.policy,
        clock=runtime.clock,
        settings=runtime.settings,
    )
    with TestClient(create_app(broken, migrate=False), raise_server_exceptions=False) as c:
        resp = c.get("/healthz")
    broken.db.dispose()
    err = assert_envelope(resp, 503, "UNAVAILABLE")
    assert err["details"] == {"database": "error"}


@sqlite_only
def test_openapi_document(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "callgate"
    assert doc["info"]["version"] == "0.1.0"
    ids = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("operationId"), (method, path)
            assert op.get("summary"), (method, path)
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids))
    for path in ("/healthz", "/v1/consents", "/v1/consents/revocations", "/v1/dnc",
                 "/v1/dnc/{phone}", "/v1/campaigns", "/v1/campaigns/{campaign_id}",
                 "/v1/audit/verify"):
        assert path in doc["paths"], path
    assert doc["paths"]["/v1/campaigns"]["post"]["operationId"] == "create_campaign"
    assert "bearer" in json.dumps(doc["components"]["securitySchemes"]).lower()
