"""POST/GET /v1/consents and POST /v1/consents/revocations on both databases."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from config.clock import FakeClock
from config.reasons import Code
from consent.rules import decide
from consent.store import facts_for
from core.keys import Role
from core.models import Attempt, Call, Refusal
from core.runtime import Runtime
from tests.helpers import (
    PHONE,
    PHONE_DIGITS,
    audit_entries,
    campaign_body,
    consent_body,
    days,
    identity,
    new_id,
)

Keys = dict[str, dict[str, str]]


def _decide(rt: Runtime, phone: str = PHONE, channel: str = "autodialed_voice",
            purpose: str = "test_results") -> Any:
    with rt.db.read() as s:
        consents, revocations = facts_for(s, [phone])[phone]
    return decide(consents, revocations, channel, purpose, rt.clock.now())


def _payload(entry: Any) -> dict[str, Any]:
    return json.loads(entry.payload)  # type: ignore[no-any-return]


def test_record_consent(client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock) -> None:
    body = consent_body(clock.now() - days(20), purposes=["test_results", "appointment_reminder"])
    resp = client.post("/v1/consents", json=body, headers=keys["campaign_manager"])
    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert out["phone"] == PHONE
    assert out["id"]
    assert out["status"] == "active"
    assert out["purposes"] == ["appointment_reminder", "test_results"]
    assert out["recorded_by"] == identity(runtime, Role.campaign_manager).key_id
    [entry] = audit_entries(runtime, "consent.recorded")
    assert entry.subject == f"consent:{out['id']}"
    assert PHONE_DIGITS not in entry.payload and "MRN-1001" not in entry.payload
    assert _decide(runtime).allowed
    assert _decide(runtime, purpose="billing").reasons[0].code is Code.CONSENT_PURPOSE_MISMATCH


def test_compliance_may_read_but_not_record(
    client: TestClient, keys: Keys, clock: FakeClock
) -> None:
    resp = client.post("/v1/consents", json=consent_body(clock.now()), headers=keys["compliance"])
    assert resp.status_code == 403
    resp = client.get("/v1/consents", params={"phone": PHONE}, headers=keys["compliance"])
    assert resp.status_code == 200
    resp = client.get("/v1/consents", params={"phone": PHONE}, headers=keys["dialer"])
    assert resp.status_code == 403


def test_history_with_statuses_and_the_read_is_audited(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    mgr = keys["campaign_manager"]
    expired = consent_body(clock.now() - days(30), expires_at=clock.now() - days(1))
    active = consent_body(clock.now() - days(2))
    ids = []
    for body in (expired, active):
        r = client.post("/v1/consents", json=body, headers=mgr)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    resp = client.get("/v1/consents", params={"phone": "(314) 555-0100"},
                      headers=keys["compliance"])
    assert resp.status_code == 200, resp.text
    hist = resp.json()
    assert hist["phone"] == PHONE
    assert [(c["id"], c["status"]) for c in hist["consents"]] == [
        (ids[0], "expired"),
        (ids[1], "active"),
    ]
    assert hist["revocations"] == []

    [read] = audit_entries(runtime, "patient_data.read")
    reader = identity(runtime, Role.compliance)
    assert read.actor == f"key:{reader.key_id}"
    assert _payload(read)["consents"] == ids
    assert PHONE_DIGITS not in read.payload + read.subject


def test_oral_consent_is_stored_but_refused_for_autodialed_calls(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    body = consent_body(clock.now() - days(1), method="oral")
    body["evidence_ref"] = ""
    resp = client.post("/v1/consents", json=body, headers=keys["campaign_manager"])
    assert resp.status_code == 201, resp.text
    assert resp.json()["method"] == "oral"
    for channel in ("autodialed_voice", "prerecorded_voice", "sms"):
        d = _decide(runtime, channel=channel)
        assert not d.allowed
        assert d.reasons[0].code is Code.CONSENT_NOT_WRITTEN


def test_written_consent_needs_evidence(client: TestClient, keys: Keys, clock: FakeClock) -> None:
    body = consent_body(clock.now())
    body["evidence_ref"] = "  "
    resp = client.post("/v1/consents", json=body, headers=keys["admin"])
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["field"] == "body.evidence_ref"


def test_consent_input_checks(client: TestClient, keys: Keys, clock: FakeClock) -> None:
    h = keys["campaign_manager"]
    cases = [
        (consent_body(clock.now(), purposes=["debt_reminder"]), "PURPOSE_UNKNOWN"),
        (consent_body(clock.now() + timedelta(hours=1)), "VALIDATION_ERROR"),
        (consent_body(clock.now(), expires_at=clock.now()), "VALIDATION_ERROR"),
        (consent_body(clock.now(), phone="+1 900 200 0100"), "INVALID_PHONE"),
        (consent_body(clock.now(), phone="+44 20 7946 0100"), "INVALID_PHONE"),
        (consent_body(clock.now(), phone="314 555 01"), "INVALID_PHONE"),
    ]
    for body, code in cases:
        resp = client.post("/v1/consents", json=body, headers=h)
        assert resp.status_code == 422, (code, resp.text)
        assert resp.json()["error"]["code"] == code
        assert "0100" not in resp.text and PHONE_DIGITS not in resp.text
    naive = consent_body(clock.now())
    naive["obtained_at"] = "2026-11-01T15:00:00"
    resp = client.post("/v1/consents", json=naive, headers=h)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["field"] == "body.obtained_at"


def test_re_consent_after_revocation(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    mgr = keys["campaign_manager"]
    old = client.post("/v1/consents", json=consent_body(clock.now() - days(10)), headers=mgr)
    assert old.status_code == 201
    assert _decide(runtime).allowed

    rev = client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "sms_stop"},
                      headers=mgr)
    assert rev.status_code == 201, rev.text
    assert rev.json()["received_at"] == clock.now().isoformat().replace("+00:00", "Z")
    assert _decide(runtime).reasons[0].code is Code.CONSENT_REVOKED

    clock.advance(timedelta(hours=2))
    new = client.post(
        "/v1/consents", json=consent_body(clock.now() - timedelta(hours=1)), headers=mgr
    )
    assert new.status_code == 201, new.text
    assert new.json()["status"] == "active"
    d = _decide(runtime)
    assert d.allowed and d.consent_id == new.json()["id"]

    recorded = audit_entries(runtime, "consent.recorded")
    assert [_payload(e)["re_consent_after_revocation"] for e in recorded] == [False, True]

    hist = client.get("/v1/consents", params={"phone": PHONE}, headers=mgr).json()
    assert [c["status"] for c in hist["consents"]] == ["revoked", "active"]
    assert [r["source"] for r in hist["revocations"]] == ["sms_stop"]


def test_backdated_consent_before_a_revocation_is_not_a_re_consent(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    mgr = keys["campaign_manager"]
    rev = client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "letter"},
                      headers=mgr)
    assert rev.status_code == 201
    late = client.post("/v1/consents", json=consent_body(clock.now() - days(3)), headers=mgr)
    assert late.status_code == 201
    assert late.json()["status"] == "revoked"
    assert _decide(runtime).reasons[0].code is Code.CONSENT_REVOKED
    [entry] = audit_entries(runtime, "consent.recorded")
    assert _payload(entry)["re_consent_after_revocation"] is False


def _campaign(client: TestClient, keys: Keys) -> str:
    resp = client.post("/v1/campaigns", json=campaign_body(), headers=keys["campaign_manager"])
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _call(rt: Runtime, campaign_id: str, phone: str, status: str, ext: str) -> str:
    now = rt.clock.now()
    call = Call(
        id=new_id(),
        campaign_id=campaign_id,
        external_id=ext,
        phone=phone,
        status=status,
        next_eligible_at=now if status == "queued" else None,
        created_at=now,
        updated_at=now,
        created_by="test",
        policy_version=rt.policy_version,
    )
    with rt.db.write() as s:
        s.add(call)
        s.flush()
        if status == "leased":
            lease = new_id()
            call.lease_id = lease
            call.lease_expires_at = now + timedelta(minutes=2)
            s.add(
                Attempt(
                    id=lease,
                    call_id=call.id,
                    campaign_id=campaign_id,
                    phone=phone,
                    kind="lease",
                    state="live",
                    counted=True,
                    at=now,
                    expires_at=now + timedelta(minutes=2),
                    dialer_id="acme-1",
                    key_id="test",
                    flags=[],
                )
            )
    return call.id


def _setup_calls(client: TestClient, keys: Keys, rt: Runtime) -> dict[str, str]:
    c1, c2 = _campaign(client, keys), _campaign(client, keys)
    return {
        "queued": _call(rt, c1, PHONE, "queued", "e1"),
        "queued2": _call(rt, c2, PHONE, "queued", "e2"),
        "leased": _call(rt, _campaign(client, keys), PHONE, "leased", "e3"),
        "completed": _call(rt, c1, PHONE, "completed", "e4"),
        "other": _call(rt, c1, "+13145550111", "queued", "e5"),
    }


def _assert_withdrawn(rt: Runtime, calls: dict[str, str], code: str) -> None:
    with rt.db.read() as s:
        status = {k: s.get(Call, v).status for k, v in calls.items()}  # type: ignore[union-attr]
        leased = s.get(Call, calls["leased"])
        attempt = s.scalars(select(Attempt).where(Attempt.call_id == calls["leased"])).one()
        refusals = list(s.scalars(select(Refusal).order_by(Refusal.id)))
    assert status == {
        "queued": "withdrawn",
        "queued2": "withdrawn",
        "leased": "withdrawn",
        "completed": "completed",
        "other": "queued",
    }
    assert leased is not None and leased.lease_id is None and leased.last_reason == code
    assert attempt.state == "withdrawn" and attempt.counted
    withdrawn = {calls[k] for k in ("queued", "queued2", "leased")}
    assert {r.call_id for r in refusals} == withdrawn
    assert all(
        (r.stage, r.status, r.code, r.policy_version) == ("dispatch", "withdrawn", code,
                                                         rt.policy_version)
        for r in refusals
    )
    assert all(r.reasons[0]["code"] == code and r.reasons[0]["rule"] for r in refusals)
    entries = audit_entries(rt, "call.withdrawn")
    assert {e.subject for e in entries} == {f"call:{c}" for c in withdrawn}


def test_revocation_adds_to_dnc_and_withdraws_calls(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    mgr = keys["campaign_manager"]
    client.post("/v1/consents", json=consent_body(clock.now() - days(5)), headers=mgr)
    calls = _setup_calls(client, keys, runtime)
    assert client.get(f"/v1/dnc/{PHONE}", headers=mgr).status_code == 404

    resp = client.post(
        "/v1/consents/revocations",
        json={"phone": "314-555-0100", "source": "ivr_keypress"},
        headers=mgr,
    )
    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert out["withdrawn_calls"] == 3
    assert out["phone"] == PHONE and out["source"] == "ivr_keypress"

    dnc = client.get(f"/v1/dnc/{PHONE}", headers=mgr)
    assert dnc.status_code == 200
    assert dnc.json()["on_list"] is True
    assert dnc.json()["entries"][0]["source"] == "ivr_keypress"
    _assert_withdrawn(runtime, calls, "CONSENT_REVOKED")
    assert [e.kind for e in audit_entries(runtime, "consent.revoked")] == ["consent.revoked"]

    # A second revocation finds nothing left to withdraw.
    again = client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "web"},
                        headers=mgr)
    assert again.json()["withdrawn_calls"] == 0


def test_dnc_add_withdraws_calls(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    calls = _setup_calls(client, keys, runtime)
    resp = client.post("/v1/dnc", json={"phone": "3145550100", "reason": "asked by letter"},
                       headers=keys["campaign_manager"])
    assert resp.status_code == 201, resp.text
    assert resp.json()["withdrawn_calls"] == 3
    _assert_withdrawn(runtime, calls, "DO_NOT_CALL")


def test_revocation_input_checks(client: TestClient, keys: Keys) -> None:
    h = keys["campaign_manager"]
    resp = client.post("/v1/consents/revocations", json={"phone": "+1 314 555 01", "source": "web"},
                       headers=h)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "INVALID_PHONE"
    assert "555" not in resp.text
    resp = client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "carrier"},
                       headers=h)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "VALIDATION_ERROR"
    assert PHONE_DIGITS not in resp.text
    assert client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "web"},
                       headers=keys["dialer"]).status_code == 403

