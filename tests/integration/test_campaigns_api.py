"""Campaigns: purpose and channel against the catalogue, windows only narrow, callback number."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from core.keys import Role
from core.models import Call
from core.runtime import Runtime
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


NOT_ALLOWED = ["billing", "collections", "marketing", "fundraising", "survey"]


def _refused(client: TestClient, keys: Keys, case: object, **overrides: object) -> dict[str, Any]:
    resp = client.post("/v1/campaigns", json=campaign_body(**overrides), headers=keys["admin"])
    assert resp.status_code == 422, (case, resp.text)
    assert "0199" not in resp.text and "555" not in resp.text, case
    return resp.json()["error"]  # type: ignore[no-any-return]


def test_not_allowed_purposes(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    for purpose in NOT_ALLOWED:
        err = _refused(client, keys, purpose, purpose=purpose)
        assert err["code"] == "PURPOSE_NOT_ALLOWED", purpose
        assert err["details"]["field"] == "purpose", purpose
        assert err["details"]["rule"] == runtime.policy.purposes[purpose].rule, purpose
    assert audit_entries(runtime, "campaign.created") == []


def test_unknown_purpose(client: TestClient, keys: Keys) -> None:
    err = _refused(client, keys, "unknown", purpose="car_warranty")
    assert err["code"] == "PURPOSE_UNKNOWN"
    assert err["details"]["field"] == "purpose"


def test_windows(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    wider = [("07:30", "18:00"), ("09:00", "21:30"), ("00:00", "24:00")]
    for start, end in wider:
        err = _refused(client, keys, (start, end), calling_window={"start": start, "end": end})
        assert err["code"] == "WINDOW_WIDER_THAN_POLICY", (start, end)
        assert err["details"]["field"] == "calling_window"
        assert err["details"]["policy"] == {"start": "08:00", "end": "21:00"}

    malformed = [("18:00", "09:00"), ("12:00", "12:00"), ("25:00", "26:00"), ("9:00", "18:00")]
    for start, end in malformed:
        err = _refused(client, keys, (start, end), calling_window={"start": start, "end": end})
        assert err["code"] == "VALIDATION_ERROR", (start, end)
        fields = [d["field"] for d in err["details"]]
        assert any(f.startswith("body.calling_window") for f in fields), (start, end)
        # The problem itself is said, not just "invalid".
        assert all(d["message"] and "validation error for" not in d["message"]
                   for d in err["details"]), err
    assert audit_entries(runtime, "campaign.created") == []

    resp = client.post("/v1/campaigns", json=campaign_body(
        calling_window={"start": "08:00", "end": "21:00"}), headers=keys["admin"])
    assert resp.status_code == 201, resp.text


def test_invalid_callback_numbers(client: TestClient, keys: Keys) -> None:
    cases = [("+1 314 555 01", "is not a valid number"), ("+1 900 200 0199", "premium-rate"),
             ("+44 20 7946 0199", "allowed region"), ("not a number", "not a phone number")]
    for number, failed in cases:
        err = _refused(client, keys, number, callback_number=number)
        assert err["code"] == "INVALID_PHONE", number
        assert err["details"] == {"field": "callback_number"}, number
        assert err["message"].startswith("callback_number"), number
        assert failed in err["message"], number


def test_body_validation(client: TestClient, keys: Keys) -> None:
    resp = client.post("/v1/campaigns", json=campaign_body(channel="fax", max_attempts=0,
                                                            callback_number="+1 314 555 0199"),
                       headers=keys["admin"])
    assert resp.status_code == 422
    fields = {d["field"] for d in resp.json()["error"]["details"]}
    assert fields == {"body.channel", "body.max_attempts"}
    assert "0199" not in resp.text
