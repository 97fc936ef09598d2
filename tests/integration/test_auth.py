"""Auth on real endpoints: 401 without/unknown/malformed key, 403 wrong role, admin everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.clock import FakeClock
from dialer.keys import Role, create_key, revoke_key
from dialer.runtime import Runtime
from tests.helpers import PHONE, campaign_body

Keys = dict[str, dict[str, str]]


def _assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer cg_not-a-real-key-0000000000000000000000000"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "cg_missing-scheme"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "unknown", "empty", "basic", "no-scheme", "scheme-only"],
)
def test_401_unauthorized(client: TestClient, headers: dict[str, str]) -> None:
    for method, path, body in [
        ("POST", "/v1/campaigns", campaign_body()),
        ("GET", "/v1/audit/verify", None),
        ("DELETE", f"/v1/dnc/{PHONE}", None),
    ]:
        resp = client.request(method, path, json=body, headers=headers)
        _assert_envelope(resp, 401, "UNAUTHORIZED")
        assert resp.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(client: TestClient, runtime: Runtime, clock: FakeClock) -> None:
    _, plaintext = create_key(runtime.db, Role.admin, "temp-admin", clock.now())
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/v1/audit/verify", headers=headers).status_code == 200
    revoke_key(runtime.db, "temp-admin", clock.now())
    _assert_envelope(client.get("/v1/audit/verify", headers=headers), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("admin", True), ("campaign_manager", True), ("compliance", False), ("dialer", False)],
)
def test_create_campaign_roles(client: TestClient, keys: Keys, role: str, allowed: bool) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(), headers=keys[role])
    if allowed:
        assert resp.status_code == 201, resp.text
    else:
        _assert_envelope(resp, 403, "FORBIDDEN")


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("admin", True), ("compliance", True), ("campaign_manager", False), ("dialer", False)],
)
def test_audit_verify_roles(client: TestClient, keys: Keys, role: str, allowed: bool) -> None:
    resp = client.get("/v1/audit/verify", headers=keys[role])
    if allowed:
        assert resp.status_code == 200, resp.text
        assert resp.json()["ok"] is True
    else:
        _assert_envelope(resp, 403, "FORBIDDEN")


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("admin", True), ("campaign_manager", False), ("compliance", False), ("dialer", False)],
)
def test_lift_dnc_roles(client: TestClient, keys: Keys, role: str, allowed: bool) -> None:
    added = client.post(
        "/v1/dnc", json={"phone": PHONE, "reason": "asked by letter"}, headers=keys["admin"]
    )
    assert added.status_code == 201, added.text
    resp = client.delete(f"/v1/dnc/{PHONE}", headers=keys[role])
    if allowed:
        assert resp.status_code == 200, resp.text
        assert resp.json()["on_list"] is False
    else:
        _assert_envelope(resp, 403, "FORBIDDEN")
        # Still on the list.
        assert client.get(f"/v1/dnc/{PHONE}", headers=keys["admin"]).status_code == 200


def test_forbidden_creates_nothing(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    from sqlalchemy import func, select

    from dialer.models import Campaign

    resp = client.post("/v1/campaigns", json=campaign_body(), headers=keys["dialer"])
    _assert_envelope(resp, 403, "FORBIDDEN")
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0
