"""The dashboard's texts (issue 18): inbound STOPs and confirmations per day, texts held for
review (read audited; decided from the page with the session's CSRF token), templates, and a
number's story showing its texts and their templates."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from config.clock import FakeClock
from core.models import SmsInbound
from core.runtime import Runtime
from tests.helpers import audit_entries, consent_body, days
from tests.integration.test_ui import _signed_in, csrf_of

PHONE = "+13145550100"
OTHER = "+13145550111"
CALLBACK = "+13145550199"
TEMPLATE = ("{provider_name}: see you {appointment_date} at {appointment_time}. "
            "Call {callback_number}. Reply STOP to opt out.")


def _seed(client: TestClient, keys: dict[str, dict[str, str]], clock: FakeClock) -> str:
    mgr, dialer = keys["campaign_manager"], keys["dialer"]
    for phone in (PHONE, OTHER):
        assert client.post("/v1/consents", headers=mgr, json=consent_body(
            clock.now() - days(10), phone)).status_code == 201
    tpl = client.post("/v1/templates", headers=mgr, json={
        "name": "Visit reminder", "channel": "sms", "purpose": "appointment_reminder",
        "text": TEMPLATE}).json()
    camp = client.post("/v1/campaigns", headers=mgr, json={
        "name": "Texts", "purpose": "appointment_reminder", "channel": "sms",
        "provider_name": "Mercy", "callback_number": CALLBACK, "template_id": tpl["id"]}).json()
    r = client.post(f"/v1/campaigns/{camp['id']}/calls", headers=mgr, json=[
        {"external_id": "a", "phone": PHONE, "appointment_at": "2026-11-30T15:00:00Z"}])
    assert r.json()["accepted"] == 1, r.text
    for mid, phone, body in (("m1", PHONE, "STOP"), ("m2", OTHER, "please stop texting me")):
        assert client.post("/v1/sms/inbound", headers=dialer, json={
            "message_id": mid, "from": phone, "body": body,
            "received_at": clock.now().isoformat()}).status_code == 200
    [task] = client.post("/v1/queue/lease", headers=dialer, json={
        "dialer_id": "gw", "channels": ["sms"]}).json()["tasks"]
    assert client.post(f"/v1/sms/replies/{task['call_id']}/outcome", headers=dialer, json={
        "lease_id": task["lease_id"], "result": "sent"}).status_code == 200
    return str(tpl["id"])


def test_texts_page(client: TestClient, keys: dict[str, dict[str, str]], clock: FakeClock,
                    runtime: Runtime) -> None:
    tid = _seed(client, keys, clock)
    _signed_in(client, keys)
    page = client.get("/ui/texts")
    assert page.status_code == 200
    text = page.text
    assert "Visit reminder" in text and "GSM-7" in text  # the template
    assert "please stop texting me" in text  # held for a human
    assert OTHER not in text and "+1314555****" in text
    row = text[text.index('id="stops-per-day"'):]
    day = clock.now().date().isoformat()
    assert f'<th scope="row">{day}</th><td class="num">1</td><td class="num">1</td>' in row
    reads = [json.loads(e.payload) for e in audit_entries(runtime, "patient_data.read")
             if '"sms_review"' in e.payload or "held for review" in e.payload]
    assert reads and reads[-1]["via"] == "ui: texts held for review"
    # Decided from the page: needs the session's token.
    with runtime.db.read() as s:
        held = s.scalars(select(SmsInbound).where(SmsInbound.review_status == "pending")).one()
    bad = client.post("/ui/texts/review", data={"csrf": "forged", "inbound_id": held.id,
                                                "decision": "revoke"}, follow_redirects=False)
    assert bad.status_code == 403
    token = csrf_of(client, "/ui/texts")
    ok = client.post("/ui/texts/review", data={"csrf": token, "inbound_id": held.id,
                                               "decision": "revoke"}, follow_redirects=False)
    assert ok.status_code == 303
    assert client.get(f"/v1/dnc/{OTHER}", headers=keys["admin"]).status_code == 200
    assert "None waiting." in client.get("/ui/texts").text
    assert tid


def test_number_story_shows_texts_and_templates(
    client: TestClient, keys: dict[str, dict[str, str]], clock: FakeClock
) -> None:
    _seed(client, keys, clock)
    _signed_in(client, keys)
    token = csrf_of(client, "/ui/numbers")
    text = client.post("/ui/numbers/lookup", data={"csrf": token, "phone": PHONE}).text
    assert "Accepted at intake (text)" in text and "template Visit reminder" in text
    assert "Mercy: see you Mon, Nov 30 at 9:00 AM" in text
    assert "Text received: STOP: consent revoked" in text
    assert "Opt-out confirmation text (sent)" in text and "47 CFR 64.1200(a)(12)" in text


def test_texts_page_needs_a_session(client: TestClient) -> None:
    r = client.get("/ui/texts", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    r = client.post("/ui/texts/review", data={"csrf": "x", "inbound_id": "1",
                                              "decision": "revoke"}, follow_redirects=False)
    assert r.status_code == 303


