"""Templates and texts over HTTP, on both databases (issue 18; API.md "Templates and texts"):
one-segment boundaries (GSM-7 160/161, UCS-2 70/71, an extension character, an emoji), every
refusal code, SMS campaigns rendering their template at intake, STOP and its one
confirmation (duplicates and concurrent STOPs, expiry after five minutes on the fake clock),
HELP, texts held for review, and the caps shared by voice and text.

Time: T0 is Tuesday 2026-11-24 17:00 UTC = 11:00 in Chicago (every 314 number here)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from config.clock import FakeClock
from config.policy import load_policy
from core.keys import Role
from core.models import Call, SmsInbound, SmsReply, Template
from core.runtime import Runtime
from dialer.queue import expiry
from tests.conftest import T0
from tests.helpers import PHONE_DIGITS, audit_entries, identity
from tests.integration.test_queue import CALLBACK, Api, Keys, iso, num
from texts import rules as text_rules
from texts import service as texts
from texts.schemas import InboundIn

# 57 characters in the worst case: provider name 30, callback number 14.
BASE = "{provider_name} {callback_number} Reply STOP "
assert text_rules.validate_template(BASE, "sms", "appointment_reminder",
                                    load_policy()).max_length == 57
REMINDER = ("{provider_name}: appointment {appointment_date} at {appointment_time}. "
            "Questions: {callback_number}. Reply STOP to opt out.")


@pytest.fixture
def api(client: TestClient, keys: Keys, clock: FakeClock, runtime: Runtime) -> Api:
    return Api(client, keys, clock, runtime)


def template(api: Api, text: str, *, channel: str = "sms", purpose: str = "appointment_reminder",
             status: int = 201) -> dict[str, Any]:
    r = api.client.post("/v1/templates", headers=api.mgr, json={
        "name": "t", "channel": channel, "purpose": purpose, "text": text})
    assert r.status_code == status, r.text
    return dict(r.json())


def refused_codes(api: Api, text: str, **kw: Any) -> list[str]:
    body = template(api, text, status=422, **kw)
    assert body["error"]["code"] == "TEMPLATE_INVALID"
    reasons = body["error"]["details"]["reasons"]
    for r in reasons:  # each names what is wrong and cites its rule
        assert r["message"] and r["rule"]
    return [r["code"] for r in reasons]


def sms_campaign(api: Api, text: str = REMINDER, **kw: Any) -> tuple[str, str]:
    tpl = template(api, text)
    cid = api.campaign(channel="sms", purpose="appointment_reminder", template_id=tpl["id"],
                       **kw)
    return cid, str(tpl["id"])


def inbound(api: Api, body: str, message_id: str, phone: str = num(1),
            received_at: Any = None) -> dict[str, Any]:
    r = api.client.post("/v1/sms/inbound", headers=api.dialer, json={
        "message_id": message_id, "from": phone, "to": CALLBACK, "body": body,
        "received_at": iso(received_at or api.clock.now())})
    assert r.status_code == 200, r.text
    return dict(r.json())


def lease(api: Api, channels: list[str] | None = None, limit: int = 10) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"dialer_id": "gw-1", "limit": limit, "lease_seconds": 60}
    if channels is not None:
        body["channels"] = channels
    r = api.client.post("/v1/queue/lease", headers=api.dialer, json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["tasks"])


def replies(runtime: Runtime, phone: str = num(1)) -> list[SmsReply]:
    with runtime.db.read() as s:
        return list(s.scalars(select(SmsReply).where(SmsReply.phone == phone)))


# --- templates: one segment --------------------------------------------------------------


def test_gsm7_boundary_160_161(api: Api) -> None:
    t = template(api, BASE + "a" * 103)
    assert (t["encoding"], t["max_length"], t["limit"], t["segments"]) == ("GSM-7", 160, 160, 1)
    assert refused_codes(api, BASE + "a" * 104) == ["TEMPLATE_TOO_LONG"]


def test_extension_character_counts_two(api: Api) -> None:
    t = template(api, BASE + "a" * 101 + "€")
    assert (t["encoding"], t["max_length"]) == ("GSM-7", 160)
    assert refused_codes(api, BASE + "a" * 102 + "€") == ["TEMPLATE_TOO_LONG"]


def test_ucs2_boundary_70_71(api: Api) -> None:
    t = template(api, BASE + "ç" + "a" * 12)
    assert (t["encoding"], t["max_length"], t["limit"]) == ("UCS-2", 70, 70)
    body = template(api, BASE + "ç" + "a" * 13, status=422)
    [r] = body["error"]["details"]["reasons"]
    assert r["code"] == "TEMPLATE_TOO_LONG" and "U+00E7" in r["message"]


def test_emoji_is_ucs2_and_counts_two(api: Api) -> None:
    t = template(api, BASE + "\U0001F600" + "a" * 11)
    assert (t["encoding"], t["max_length"]) == ("UCS-2", 70)
    assert refused_codes(api, BASE + "\U0001F600" + "a" * 12) == ["TEMPLATE_TOO_LONG"]


# --- templates: every refusal code -------------------------------------------------------


@pytest.mark.parametrize("text,codes", [
    ("{provider_name} {callback_number} {patient_name} Reply STOP", ["TEMPLATE_IDENTIFIER"]),
    ("{provider_name} {callback_number} born {date_of_birth} Reply STOP",
     ["TEMPLATE_IDENTIFIER"]),
    ("Call {callback_number}. Reply STOP", ["TEMPLATE_NO_PROVIDER"]),
    ("{provider_name} says hi. Reply STOP", ["TEMPLATE_NO_CALLBACK"]),
    ("{provider_name} {callback_number} see you soon", ["TEMPLATE_NO_OPT_OUT"]),
    ("{provider_name} {callback_number} pay your bill today. Reply STOP",
     ["TEMPLATE_PROHIBITED_CONTENT", "TEMPLATE_PROHIBITED_CONTENT"]),
    ("{provider_name} {callback_number} a { b. Reply STOP", ["TEMPLATE_SYNTAX"]),
])
def test_every_refusal_code(api: Api, text: str, codes: list[str]) -> None:
    assert refused_codes(api, text) == codes


def test_identifier_message_names_the_placeholder(api: Api) -> None:
    body = template(api, "{provider_name} {callback_number} {date_of_birth} Reply STOP",
                    status=422)
    [r] = body["error"]["details"]["reasons"]
    assert "{date_of_birth}" in r["message"] and "45 CFR 164.502(b)" in r["rule"]
    assert body["error"]["details"]["rule"]


def test_voice_template_needs_no_stop_and_purpose_is_checked(api: Api) -> None:
    t = template(api, "This is {provider_name}. Call us at {callback_number}.",
                 channel="prerecorded_voice")
    assert t["limit"] is None and t["segments"] is None
    r = api.client.post("/v1/templates", headers=api.mgr, json={
        "name": "t", "channel": "sms", "purpose": "billing",
        "text": BASE})
    assert r.status_code == 422 and r.json()["error"]["code"] == "PURPOSE_NOT_ALLOWED"


def test_templates_are_listed_read_and_immutable(api: Api, keys: Keys) -> None:
    t = template(api, BASE)
    got = api.client.get(f"/v1/templates/{t['id']}", headers=keys["compliance"])
    assert got.status_code == 200 and got.json() == t
    listed = api.client.get("/v1/templates", headers=keys["compliance"]).json()["items"]
    assert [x["id"] for x in listed] == [t["id"]]
    for method in ("put", "patch", "delete"):
        assert getattr(api.client, method)(f"/v1/templates/{t['id']}",
                                           headers=keys["admin"]).status_code == 405
    assert api.client.get("/v1/templates/nope", headers=api.mgr).status_code == 404
    assert api.client.post("/v1/templates", headers=keys["dialer"], json={
        "name": "t", "channel": "sms", "purpose": "appointment_reminder",
        "text": BASE}).status_code == 403


# --- SMS campaigns -------------------------------------------------------------------------


def test_sms_campaign_needs_a_template_of_its_channel_and_purpose(api: Api) -> None:
    r = api.client.post("/v1/campaigns", headers=api.mgr, json={
        "name": "t", "purpose": "appointment_reminder", "channel": "sms",
        "provider_name": "Mercy", "callback_number": CALLBACK})
    assert r.status_code == 422 and r.json()["error"]["code"] == "TEMPLATE_REQUIRED"
    voice = template(api, "This is {provider_name}, call {callback_number}.",
                     channel="autodialed_voice")
    other = template(api, BASE, purpose="test_results")
    for tid in (voice["id"], other["id"], "no-such-template"):
        r = api.client.post("/v1/campaigns", headers=api.mgr, json={
            "name": "t", "purpose": "appointment_reminder", "channel": "sms",
            "provider_name": "Mercy", "callback_number": CALLBACK, "template_id": tid})
        assert r.status_code == 422 and r.json()["error"]["code"] == "TEMPLATE_MISMATCH"
    ok = template(api, BASE)
    r = api.client.post("/v1/campaigns", headers=api.mgr, json={
        "name": "t", "purpose": "appointment_reminder", "channel": "sms",
        "provider_name": "M" * 31, "callback_number": CALLBACK, "template_id": ok["id"]})
    assert r.status_code == 422  # an SMS provider name is at most 30 GSM-7 characters


def test_sms_rows_render_their_text_and_leases_carry_only_it(api: Api) -> None:
    cid, tid = sms_campaign(api, provider_name="Mercy Heart Clinic")
    for i in (1, 2):
        api.consent(num(i))
    rows = [
        {"external_id": "a", "patient_ref": "MRN-7731", "phone": num(1),
         "appointment_at": "2026-11-30T15:30:00Z"},
        {"external_id": "b", "patient_ref": "MRN-7732", "phone": num(2)},  # no appointment
    ]
    r = api.client.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=api.mgr)
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["queued", "invalid"]
    assert res[1]["reasons"][0]["details"]["field"] == "appointment_at"
    assert api.client.get(f"/v1/campaigns/{cid}", headers=api.mgr).json()["template_id"] == tid
    assert lease(api, ["autodialed_voice"]) == []  # a voice dialer gets no text
    [task] = lease(api, ["sms"])
    assert (task["kind"], task["channel"], task["template_id"]) == ("call", "sms", tid)
    assert task["text"] == ("Mercy Heart Clinic: appointment Mon, Nov 30 at 9:30 AM. "
                            "Questions: (314) 555-0199. Reply STOP to opt out.")
    assert "MRN" not in str(task) and "patient_ref" not in task
    assert text_rules.fits_one_segment(task["text"])


def test_rendered_text_never_over_one_segment(api: Api) -> None:
    # The longest template that fits, rendered with the longest provider name and the
    # longest dates and times: still one segment.
    pad = 160 - text_rules.validate_template(
        REMINDER, "sms", "appointment_reminder", api.runtime.policy).max_length
    cid, _ = sms_campaign(api, REMINDER + "x" * pad, provider_name="W" * 30)
    appointments = ["2026-09-30T17:30:00Z", "2026-12-31T05:59:00Z", "2026-11-28T04:05:00Z"]
    for i in range(len(appointments)):
        api.consent(num(10 + i))
    rows = [{"external_id": f"r{i}", "phone": num(10 + i), "appointment_at": at}
            for i, at in enumerate(appointments)]
    r = api.client.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=api.mgr)
    assert [x["status"] for x in r.json()["results"]] == ["queued"] * 3
    with api.runtime.db.read() as s:
        texts_ = list(s.scalars(select(Call.sms_text).where(Call.campaign_id == cid)))
    assert len(texts_) == 3
    for t in texts_:
        assert t is not None and text_rules.length(t, "GSM-7") <= 160


def test_voice_and_text_share_the_caps(api: Api) -> None:
    cid, _ = sms_campaign(api, BASE)
    voice = api.campaign()
    api.consent(num(3))
    api.submit(cid, {"phone": num(3)})
    [sms_task] = lease(api, ["sms"])
    [call_id] = api.submit(voice, {"phone": num(3)})
    assert lease(api, ["autodialed_voice"]) == []
    assert api.call(call_id)["last_reason"] == "DAILY_CAP"
    assert sms_task["kind"] == "call"


# --- inbound texts -------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "STOP", "stop", " Stop! ", "sToP.", "STOPALL", "QUIT", "end", "Revoke", "OPT OUT",
    "opt-out", "Opt   Out", "OPTOUT", "cancel", "UNSUBSCRIBE", "\"Unsubscribe\"",
])
def test_stop_variants_revoke(api: Api, body: str) -> None:
    out = inbound(api, body, "m-1")
    assert (out["action"], out["duplicate"]) == ("revoked", False) and out["reply_id"]
    r = api.client.get(f"/v1/dnc/{num(1)}", headers=api.mgr)
    assert r.status_code == 200
    revs = api.client.get("/v1/consents", params={"phone": num(1)},
                          headers=api.mgr).json()["revocations"]
    assert [x["source"] for x in revs] == ["sms_stop"]


@pytest.mark.parametrize("body,action", [
    ("please stop texting me", "review"),
    ("I need to cancel my appointment", "review"),
    ("STOP!!! now", "review"),
    ("please don't text me", "review"),
    ("stopped by yesterday", "none"),
    ("thanks, see you then", "none"),
    ("HELP", "help"),
    ("info", "help"),
])
def test_other_texts(api: Api, body: str, action: str) -> None:
    assert inbound(api, body, "m-1")["action"] == action
    r = api.client.get(f"/v1/dnc/{num(1)}", headers=api.mgr)
    assert r.status_code == 404  # nothing revoked by these


def test_stop_while_a_call_is_leased(api: Api) -> None:
    voice = api.campaign()
    api.consent(num(1))
    [call_id] = api.submit(voice, {"phone": num(1)})
    [task] = api.lease()
    out = inbound(api, "Stop", "m-1")
    assert out["withdrawn_calls"] == 1
    assert api.call(call_id)["status"] == "withdrawn"
    r = api.dial(task)
    assert r.status_code == 409
    late = api.outcome(task, "connected")  # a late outcome is recorded, flagged
    assert late.status_code == 200 and "AFTER_REVOCATION" in late.json()["flags"]
    assert api.call(call_id)["status"] == "withdrawn"


def test_stop_is_confirmed_once_leased_first_and_outside_the_caps(api: Api) -> None:
    voice = api.campaign()
    for i in (1, 2):
        api.consent(num(i))
    api.submit(voice, {"phone": num(1)})
    [first] = api.lease()
    assert api.outcome(first, "connected").status_code == 200  # num(1)'s cap for the day
    api.submit(voice, {"phone": num(2)})
    inbound(api, "STOP", "m-1")
    again = inbound(api, "STOP", "m-1")  # the gateway delivered it twice
    assert again["duplicate"] is True
    second = inbound(api, "stop", "m-2")  # the patient sent it twice
    assert (second["action"], second["reply_id"]) == ("revoked", None)
    [reply] = replies(api.runtime)
    tasks = lease(api, limit=2)
    assert tasks[0]["kind"] == "sms_confirmation" and tasks[0]["call_id"] == reply.id
    assert tasks[0]["phone"] == num(1) and "(314) 555-0199" in tasks[0]["text"]
    assert text_rules.fits_one_segment(tasks[0]["text"])
    assert tasks[1]["kind"] == "call"
    r = api.client.post(f"/v1/sms/replies/{reply.id}/outcome", headers=api.dialer,
                        json={"lease_id": tasks[0]["lease_id"], "result": "sent"})
    assert r.status_code == 200 and r.json()["status"] == "sent"
    assert lease(api, ["sms"]) == []
    with api.runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(SmsInbound)) == 2


def test_a_new_consent_starts_a_new_spell(api: Api) -> None:
    inbound(api, "STOP", "m-1")
    api.clock.advance(timedelta(days=1))
    api.consent(num(1), obtained_at=api.clock.now())
    assert inbound(api, "STOP", "m-2")["reply_id"] is not None
    assert len(replies(api.runtime)) == 2


def test_confirmation_expires_five_minutes_after_the_stop(
    api: Api, clock: FakeClock, runtime: Runtime
) -> None:
    inbound(api, "STOP", "m-1", received_at=clock.now() - timedelta(minutes=1))
    clock.advance(timedelta(minutes=3, seconds=59))
    [reply] = replies(runtime)
    assert reply.status == "queued"
    clock.advance(timedelta(seconds=2))  # 5 min 1 s after received_at
    assert lease(api, ["sms"]) == []
    [reply] = replies(runtime)
    assert reply.status == "expired"
    [entry] = audit_entries(runtime, "sms.reply.expired")
    assert '"SMS_CONFIRMATION_EXPIRED"' in entry.payload
    assert PHONE_DIGITS not in entry.payload


def test_expiry_job_and_a_lease_never_outlive_the_five_minutes(
    api: Api, clock: FakeClock, runtime: Runtime
) -> None:
    inbound(api, "STOP", "m-1")
    clock.advance(timedelta(minutes=4, seconds=30))
    [task] = lease(api, ["sms"])  # asks for 60 s; gets the 30 s left
    assert task["lease_expires_at"].startswith(iso(clock.now() + timedelta(seconds=30))[:19])
    clock.advance(timedelta(seconds=31))
    r = api.client.post(f"/v1/sms/replies/{task['call_id']}/outcome", headers=api.dialer,
                        json={"lease_id": task["lease_id"], "result": "sent"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "LEASE_NOT_HELD"
    expiry.expire_leases(runtime)
    assert [r.status for r in replies(runtime)] == ["expired"]


def test_help_names_provider_and_callback(api: Api) -> None:
    api.campaign(provider_name="Mercy Heart Clinic")
    out = inbound(api, "Help", "m-1")
    assert out["action"] == "help"
    [task] = lease(api, ["sms"])
    assert task["kind"] == "sms_help"
    assert "Mercy Heart Clinic" in task["text"] and "(314) 555-0199" in task["text"]
    assert text_rules.fits_one_segment(task["text"])


def test_review_holds_the_number_until_a_human_decides(api: Api, keys: Keys) -> None:
    voice = api.campaign()
    api.consent(num(1))
    [call_id] = api.submit(voice, {"phone": num(1)})
    out = inbound(api, "please stop calling me", "m-1")
    assert out["action"] == "review"
    assert api.lease() == []  # held, not sent
    with api.runtime.db.read() as s:
        row = s.scalars(select(SmsInbound)).one()
    r = api.client.post(f"/v1/sms/inbound/{row.id}/decision", headers=api.mgr,
                        json={"decision": "release"})
    assert r.status_code == 403  # compliance or admin decide
    r = api.client.post(f"/v1/sms/inbound/{row.id}/decision", headers=keys["compliance"],
                        json={"decision": "revoke"})
    assert r.status_code == 200, r.text
    assert (r.json()["withdrawn_calls"], bool(r.json()["reply_id"])) == (1, True)
    assert api.call(call_id)["status"] == "withdrawn"
    with api.runtime.db.read() as s:
        assert s.get(SmsInbound, row.id).body is None  # type: ignore[union-attr]
    r = api.client.post(f"/v1/sms/inbound/{row.id}/decision", headers=keys["compliance"],
                        json={"decision": "release"})
    assert r.status_code == 409


def test_review_release_lets_the_call_go(api: Api, keys: Keys) -> None:
    voice = api.campaign()
    api.consent(num(1))
    api.submit(voice, {"phone": num(1)})
    inbound(api, "don't text me", "m-1")
    with api.runtime.db.read() as s:
        row = s.scalars(select(SmsInbound)).one()
    r = api.client.post(f"/v1/sms/inbound/{row.id}/decision", headers=keys["admin"],
                        json={"decision": "release"})
    assert r.status_code == 200 and r.json()["review_status"] == "released"
    assert len(api.lease()) == 1


# --- exactly one confirmation under concurrency (real threads, both databases) ------------


def _together(n: int, fn: Any) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("same_message", [True, False])
def test_one_confirmation_when_stops_arrive_together(
    runtime: Runtime, keys: Keys, same_message: bool
) -> None:
    who = identity(runtime, Role.dialer)
    answers: list[Any] = []

    def stop(i: int) -> None:
        answers.append(texts.receive(runtime, who, InboundIn.model_validate({
            "message_id": "m-0" if same_message else f"m-{i}", "from": num(5),
            "body": "STOP", "received_at": T0})))

    assert _together(4, stop) == []
    with runtime.db.read() as s:
        n_replies = s.scalar(select(func.count()).select_from(SmsReply))
        n_inbound = s.scalar(select(func.count()).select_from(SmsInbound))
    assert n_replies == 1
    assert n_inbound == (1 if same_message else 4)
    assert sum(1 for a in answers if a.reply_id and not a.duplicate) == 1
    assert sum(1 for a in answers if a.duplicate) == (3 if same_message else 0)


def test_message_id_is_unique_in_the_database(runtime: Runtime, keys: Keys) -> None:
    from sqlalchemy.exc import IntegrityError

    who = identity(runtime, Role.dialer)
    texts.receive(runtime, who, InboundIn.model_validate(
        {"message_id": "m-1", "from": num(5), "body": "hi"}))
    with pytest.raises(IntegrityError), runtime.db.write() as s:
        s.add(SmsInbound(id="x", message_id="m-1", phone=num(6), received_at=T0,
                         recorded_at=T0, recorded_by="k", action="none"))
        s.flush()
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Template)) == 0


def test_inbound_to_a_short_code_and_bad_input(api: Api) -> None:
    r = api.client.post("/v1/sms/inbound", headers=api.dialer, json={
        "message_id": "m-1", "from": num(1), "to": "12345", "body": "STOP"})
    assert r.status_code == 200 and r.json()["action"] == "revoked"
    r = api.client.post("/v1/sms/inbound", headers=api.dialer, json={
        "message_id": "m-2", "from": "12", "body": "STOP"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_PHONE"
    assert r.json()["error"]["details"] == {"field": "from"}
    r = api.client.post("/v1/sms/inbound", headers=api.dialer, json={
        "message_id": "m-3", "body": "STOP"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = api.client.post("/v1/sms/inbound", headers=api.dialer, json={
        "message_id": "m-4", "from": num(2), "body": "STOP",
        "received_at": iso(api.clock.now() + timedelta(hours=1))})
    assert r.status_code == 422  # a STOP from the future is a clock problem, not a STOP


def test_inbound_messages_name_no_number(api: Api, runtime: Runtime) -> None:
    inbound(api, "STOP", "m-1")
    inbound(api, "please don't text me", "m-2", phone=num(2))
    for e in audit_entries(runtime):
        assert "5550101" not in e.payload and "5550102" not in e.payload
        assert "don't text" not in e.payload  # the body stays out of the log


def test_one_message_id_from_two_numbers_at_once(runtime: Runtime, keys: Keys) -> None:
    """The number's lock does not serialise two numbers: the unique index does, and the
    loser answers the winner's decision."""
    who = identity(runtime, Role.dialer)
    answers: list[Any] = []

    def stop(i: int) -> None:
        answers.append(texts.receive(runtime, who, InboundIn.model_validate({
            "message_id": "same", "from": num(20 + i), "body": "STOP", "received_at": T0})))

    assert _together(3, stop) == []
    assert sorted(a.duplicate for a in answers) == [False, True, True]
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(SmsInbound)) == 1
        assert s.scalar(select(func.count()).select_from(SmsReply)) == 1


def test_a_voice_lease_is_not_starved_by_texts_ahead(api: Api, runtime: Runtime) -> None:
    """300 texts of priority 10 ahead of one call of priority 1: a lease for the voice
    channels reads only the voice campaigns' calls; a lease for sms gets texts only."""
    from consent.schemas import ConsentIn
    from consent.service import import_consents

    import_consents(runtime, identity(runtime, Role.campaign_manager), [
        ConsentIn(patient_ref=f"MRN-{i}", phone=num(i), channels=["autodialed_voice", "sms"],
                  purposes=["*"], method="written", obtained_at=T0 - timedelta(days=20),
                  evidence_ref="scan://x") for i in range(301)])
    cid, _ = sms_campaign(api, BASE)
    r = api.client.post(f"/v1/campaigns/{cid}/calls", headers=api.mgr, json=[
        {"external_id": f"t{i}", "phone": num(i), "priority": 10} for i in range(300)])
    assert r.json()["accepted"] == 300
    voice = api.campaign()
    [call_id] = api.submit(voice, {"phone": num(300), "priority": 1})
    [task] = lease(api, ["autodialed_voice", "prerecorded_voice"], limit=1)
    assert task["call_id"] == call_id
    texts_ = lease(api, ["sms"], limit=5)
    assert len(texts_) == 5 and {t["channel"] for t in texts_} == {"sms"}


def test_a_stop_is_a_consent_revoked_event_in_its_transaction(api: Api,
                                                             runtime: Runtime) -> None:
    """The inbound STOP's revocation is the same revocation as any other: the outbox gets
    its consent.revoked in the same transaction (issue 20's events), once, even when the
    gateway sends the STOP twice."""
    import json

    from sqlalchemy import select

    from core.models import Event

    api.consent(num(1))
    inbound(api, "stop", "m-1")
    assert inbound(api, "stop", "m-1")["duplicate"] is True
    with runtime.db.read() as s:
        revoked = [json.loads(e.data) for e in s.scalars(
            select(Event).where(Event.type == "consent.revoked"))]
    assert len(revoked) == 1
    assert revoked[0]["phone"] == num(1)
