"""Campaigns: purpose and channel against the catalogue, windows only narrow, callback number."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from dialer.keys import Role
from dialer.models import Call
from dialer.runtime import Runtime
from tests.helpers import CALLBACK, audit_entries, campaign_body, identity, new_id

Keys = dict[str, dict[str, str]]


def test_create_and_get(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(), headers=keys["campaign_manager"])
    assert resp.status_code == 201, resp.text
    c = resp.json()
    assert c["callback_number"] == CALLBACK
    assert c["purpose"] == "discharge_followup" and c["channel"] == "autodialed_voice"
    assert c["calling_window"] == {"start": "09:00", "end": "18:00"}
    assert c["max_attempts"] == 3
    assert c["policy_version"] == runtime.policy_version
    assert c["created_by"] == identity(runtime, Role.campaign_manager).key_id
    assert c["counts"] == dict.fromkeys(
        ["queued", "leased", "completed", "refused", "withdrawn", "expired"], 0
    )
    [entry] = audit_entries(runtime, "campaign.created")
    assert entry.subject == f"campaign:{c['id']}"
    assert json.loads(entry.payload)["purpose"] == "discharge_followup"

    now = runtime.clock.now()
    with runtime.db.write() as s:
        for i, status in enumerate(["queued", "queued", "completed", "refused"]):
            s.add(Call(id=new_id(), campaign_id=c["id"], external_id=f"e{i}",
                       phone=f"+1314555010{i}", status=status, created_at=now, updated_at=now,
                       created_by="t", policy_version=runtime.policy_version))
    got = client.get(f"/v1/campaigns/{c['id']}", headers=keys["admin"])
    assert got.status_code == 200, got.text
    counts = got.json()["counts"]
    assert (counts["queued"], counts["completed"], counts["refused"], counts["leased"]) == (
        2, 1, 1, 0
    )
    assert got.json()["name"] == c["name"]


def test_defaults(client: TestClient, keys: Keys) -> None:
    body = campaign_body()
    del body["calling_window"], body["max_attempts"], body["channel"]
    resp = client.post("/v1/campaigns", json=body, headers=keys["admin"])
    assert resp.status_code == 201, resp.text
    assert resp.json()["calling_window"] is None
    assert resp.json()["max_attempts"] == 3
    assert resp.json()["channel"] == "autodialed_voice"


def test_unknown_campaign_404(client: TestClient, keys: Keys) -> None:
    resp = client.get(f"/v1/campaigns/{new_id()}", headers=keys["admin"])
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("purpose", ["billing", "collections", "marketing", "fundraising", "survey"])
def test_not_allowed_purpose(client: TestClient, keys: Keys, runtime: Runtime, purpose: str) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(purpose=purpose), headers=keys["admin"])
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "PURPOSE_NOT_ALLOWED"
    assert err["details"]["field"] == "purpose"
    assert err["details"]["rule"] == runtime.policy.purposes[purpose].rule
    assert audit_entries(runtime, "campaign.created") == []


def test_unknown_purpose(client: TestClient, keys: Keys) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(purpose="car_warranty"),
                       headers=keys["admin"])
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "PURPOSE_UNKNOWN"
    assert resp.json()["error"]["details"]["field"] == "purpose"


@pytest.mark.parametrize(
    "window", [{"start": "07:30", "end": "18:00"}, {"start": "09:00", "end": "21:30"},
               {"start": "00:00", "end": "24:00"}]
)
def test_wider_window_refused(client: TestClient, keys: Keys, window: dict[str, str]) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(calling_window=window),
                       headers=keys["admin"])
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "WINDOW_WIDER_THAN_POLICY"
    assert err["details"]["field"] == "calling_window"
    assert err["details"]["policy"] == {"start": "08:00", "end": "21:00"}


def test_full_policy_window_is_allowed(client: TestClient, keys: Keys) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(
        calling_window={"start": "08:00", "end": "21:00"}), headers=keys["admin"])
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    "window",
    [{"start": "18:00", "end": "09:00"}, {"start": "12:00", "end": "12:00"},
     {"start": "25:00", "end": "26:00"}, {"start": "9:00", "end": "18:00"}],
)
def test_malformed_window(client: TestClient, keys: Keys, window: dict[str, str]) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(calling_window=window),
                       headers=keys["admin"])
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    fields = [d["field"] for d in err["details"]]
    assert any(f.startswith("body.calling_window") for f in fields)
    # The problem itself is said, not just "invalid".
    assert all(d["message"] and "validation error for" not in d["message"]
               for d in err["details"])


@pytest.mark.parametrize(
    ("number", "failed"),
    [("+1 314 555 01", "is not a valid number"), ("+1 900 200 0199", "premium-rate"),
     ("+44 20 7946 0199", "allowed region"), ("not a number", "not a phone number")],
)
def test_invalid_callback_number(client: TestClient, keys: Keys, number: str, failed: str) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(callback_number=number),
                       headers=keys["admin"])
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "INVALID_PHONE"
    assert err["details"] == {"field": "callback_number"}
    assert err["message"].startswith("callback_number")
    assert failed in err["message"]
    assert "0199" not in resp.text and "555" not in resp.text


def test_body_validation(client: TestClient, keys: Keys) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(channel="fax", max_attempts=0,
                                                            callback_number="+1 314 555 0199"),
                       headers=keys["admin"])
    assert resp.status_code == 422
    fields = {d["field"] for d in resp.json()["error"]["details"]}
    assert fields == {"body.channel", "body.max_attempts"}
    assert "0199" not in resp.text
