"""Auth on real endpoints: 401 without/unknown/malformed key, 403 wrong role, admin everywhere.

The role matrix is one test per backend (a fresh database per case would cost more than the
cases themselves); each case says which role and endpoint failed."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from config.clock import FakeClock
from core.keys import Role, create_key, revoke_key
from core.models import Campaign
from core.runtime import Runtime
from tests.helpers import PHONE, campaign_body, sqlite_only

Keys = dict[str, dict[str, str]]

ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/campaigns", campaign_body()),
    ("GET", "/v1/audit/verify", None),
    ("DELETE", f"/v1/dnc/{PHONE}", None),
]
# Which roles each endpoint admits (admin is in every row: it may do everything).
ALLOWED = {
    "/v1/campaigns": {"admin", "campaign_manager"},
    "/v1/audit/verify": {"admin", "compliance"},
    f"/v1/dnc/{PHONE}": {"admin"},
}
SUCCESS = {"POST": 201, "GET": 200, "DELETE": 200}

BAD_HEADERS = {
    "none": {},
    "unknown": {"Authorization": "Bearer cg_not-a-real-key-0000000000000000000000000"},
    "empty": {"Authorization": "Bearer "},
    "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    "no-scheme": {"Authorization": "cg_missing-scheme"},
    "scheme-only": {"Authorization": "Bearer"},
    "not-our-prefix": {"Authorization": "Bearer sk_live_0000000000000000"},
}


def assert_envelope(resp: Any, status: int, code: str, case: str) -> None:
    assert resp.status_code == status, (case, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, case
    assert set(body["error"]) == {"code", "message", "details"}, case
    assert body["error"]["code"] == code, case
    assert body["error"]["message"], case


@sqlite_only
def test_401_unauthorized(client: TestClient, keys: Keys) -> None:
    for name, headers in BAD_HEADERS.items():
        for method, path, body in ENDPOINTS:
            case = f"{name} {method} {path}"
            resp = client.request(method, path, json=body, headers=headers)
            assert_envelope(resp, 401, "UNAUTHORIZED", case)
            assert resp.headers["www-authenticate"] == "Bearer", case


def test_role_matrix(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    for role in Role:
        for method, path, body in ENDPOINTS:
            case = f"{role.value} {method} {path}"
            if path.startswith("/v1/dnc/"):  # something to lift
                added = client.post("/v1/dnc", json={"phone": PHONE, "reason": "r"},
                                    headers=keys["admin"])
                assert added.status_code == 201, added.text
            resp = client.request(method, path, json=body, headers=keys[role.value])
            if role.value in ALLOWED[path]:
                assert resp.status_code == SUCCESS[method], (case, resp.text)
            else:
                assert_envelope(resp, 403, "FORBIDDEN", case)
                assert role.value not in resp.json()["error"]["message"].split(": ")[-1], case
    # Exactly the two admitted roles created a campaign; the lifts by others left it listed.
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 2
    status = client.get(f"/v1/dnc/{PHONE}", headers=keys["admin"])
    assert status.status_code == 200
    assert sorted(e["lifted_at"] is None for e in status.json()["entries"]) == [
        False, True, True, True
    ]


def test_revoked_key_is_401(client: TestClient, runtime: Runtime, clock: FakeClock) -> None:
    _, plaintext = create_key(runtime.db, Role.admin, "temp-admin", clock.now())
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/v1/audit/verify", headers=headers).status_code == 200
    revoke_key(runtime.db, "temp-admin", clock.now())
    assert_envelope(client.get("/v1/audit/verify", headers=headers), 401, "UNAUTHORIZED",
                    "revoked")
