"""On the call itself (API.md "Recording and identity verification", "Reassigned numbers"), on
both databases: every new code and flag at every decision point it reaches -- intake, lease,
dial check, preflight (/v1/check), outcome -- and the import of Reassigned Numbers Database
answers (HTTP and service), with a race between leases and an import.

T0 is Tuesday 2026-11-24 17:00 UTC = 11:00 in Chicago (the 314 numbers' zone).
"""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from config.clock import FakeClock
from consent import rnd_service
from core.keys import Role
from core.models import Attempt, AuditEntry, Call, ReassignedAnswer
from core.runtime import Runtime
from dialer.queue import service as queue
from dialer.rules.dispatch import MIN_LEASE, STALE_RECHECK
from tests.conftest import T0
from tests.helpers import PHONE_DIGITS, days, identity
from tests.integration.test_queue import (
    Api,
    deferred,
    iso,
    left,
    num,
    swap_policy,
    ts,
)
from tests.integration.test_queue import api as api

CONSENT_AT = T0 - days(20)  # 2026-11-04 17:00 UTC
CONSENT_DAY = CONSENT_AT.date()
# An older consent, for answers queried up to a month ago (never before the date asked about).
OLD_AT = T0 - days(60)
OLD_DAY = OLD_AT.date()


def answer(phone: str, day: date, ans: str, queried_at: datetime = T0 - timedelta(hours=1)
           ) -> dict[str, Any]:
    return {"phone": phone, "date": day.isoformat(), "answer": ans,
            "queried_at": iso(queried_at)}


def load(api: Api, *rows: dict[str, Any], headers: dict[str, str] | None = None
         ) -> dict[str, Any]:
    r = api.client.post("/v1/numbers/reassigned", json=list(rows),
                        headers=headers or api.mgr)
    assert r.status_code == 200, r.text
    return dict(r.json())


def outcome_flags(api: Api, task: dict[str, Any], **fields: Any) -> list[str]:
    r = api.outcome(task, "connected", **fields)
    assert r.status_code == 200, r.text
    return list(r.json()["flags"])


def stale_policy(api: Api, days_: int = 30) -> None:
    swap_policy(api.runtime, "# require_answer_within_days = 31",
                f"require_answer_within_days = {days_}")


# --- recording ---------------------------------------------------------------------------------


def test_recording_is_forbidden_without_consent_and_flagged_with_the_agent(api: Api) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    assert task["recording"] == "forbidden"
    flags = outcome_flags(api, task, recorded=True)
    assert flags == ["RECORDING_WITHOUT_CONSENT"]
    assert api.call(call)["status"] == "completed"  # accepted: the call happened
    # In the call log, its CSV and the dashboard's flagged calls, with the agent.
    r = api.client.get("/v1/call-log", headers=api.keys["compliance"])
    [item] = r.json()["items"]
    assert item["flags"] == ["RECORDING_WITHOUT_CONSENT"]
    assert (item["recording"], item["recorded"], item["agent_id"]) == ("forbidden", True, "A-17")
    r = api.client.get("/v1/call-log.csv", headers=api.keys["compliance"])
    [row] = list(csv.DictReader(io.StringIO(r.text)))
    assert (row["flags"], row["recording"], row["recorded"]) == (
        "RECORDING_WITHOUT_CONSENT", "forbidden", "true")
    from review import dashboard

    ov = dashboard.overview(api.runtime)
    [flagged] = ov.flagged
    assert (flagged.agent_id, flagged.agent_name, flagged.flags) == (
        "A-17", "Dana", ["RECORDING_WITHOUT_CONSENT"])
    bar = next(b for b in ov.flags if b.key == "RECORDING_WITHOUT_CONSENT")
    assert (bar.label, bar.values) == ("Recorded without consent", (1, 1))


def test_recording_allowed_by_a_written_consent_that_says_so(api: Api) -> None:
    api.consent(num(1), recording=True)
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    assert task["recording"] == "allowed"
    assert outcome_flags(api, task, recorded=True) == []
    with api.runtime.db.read() as s:
        [a] = s.scalars(select(Attempt))
        assert (a.recording_allowed, a.recorded) == (True, True)


def test_recording_needs_a_consent_that_covers_the_call(api: Api) -> None:
    # Recording consented only for another purpose, and orally: neither covers this call;
    # the written consent that does cover it says nothing about recording.
    api.consent(num(1), purposes=["appointment_reminder"], recording=True)
    api.consent(num(1), method="oral", recording=True)
    api.consent(num(1), purposes=["discharge_followup"])
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    assert task["recording"] == "forbidden"
    assert outcome_flags(api, task, recorded=True) == ["RECORDING_WITHOUT_CONSENT"]


def test_a_recorded_prerecorded_call_without_consent_is_flagged(api: Api) -> None:
    api.consent(num(1))
    api.submit(api.campaign(channel="prerecorded_voice", purpose="appointment_reminder"),
               {"phone": num(1)})
    [task] = api.lease()
    r = api.outcome(task, "connected", agent_id="ivr", recorded=True,
                    ended_at=iso(T0 + timedelta(seconds=20)))
    assert r.json()["flags"] == ["RECORDING_WITHOUT_CONSENT"], r.text


def test_preflight_says_what_a_task_would(api: Api) -> None:
    api.consent(num(1), recording=True)
    api.consent(num(2))
    r = api.check(phone=num(1)).json()
    assert (r["allowed"], r["recording"], r["identity_identifiers"]) == (True, "allowed", 2)
    r = api.check(phone=num(2), purpose="appointment_reminder").json()
    assert (r["allowed"], r["recording"], r["identity_identifiers"]) == (True, "forbidden", 0)


def test_consent_recording_is_stored_and_strict(api: Api) -> None:
    body = {"patient_ref": "MRN-1", "phone": num(1), "channels": ["autodialed_voice"],
            "purposes": ["*"], "method": "written", "obtained_at": iso(CONSENT_AT),
            "evidence_ref": "scan://1", "recording": True}
    r = api.client.post("/v1/consents", json=body, headers=api.mgr)
    assert r.status_code == 201 and r.json()["recording"] is True
    r = api.client.post("/v1/consents", json={**body, "recording": "yes"}, headers=api.mgr)
    assert r.status_code == 422
    got = api.client.get("/v1/consents", params={"phone": num(1)}, headers=api.mgr).json()
    assert [c["recording"] for c in got["consents"]] == [True]
    with api.runtime.db.read() as s:
        payload = json.loads(s.scalars(select(AuditEntry.payload).where(
            AuditEntry.kind == "consent.recorded")).one())
    assert payload["recording"] is True


# --- identity verification -------------------------------------------------------------------


def test_tasks_carry_the_purposes_identity_identifiers(api: Api) -> None:
    api.consent(num(1))
    api.consent(num(2))
    api.submit(api.campaign(), {"phone": num(1)})
    api.submit(api.campaign(purpose="appointment_reminder"), {"phone": num(2)})
    got = {t["purpose"]: t["identity_identifiers"] for t in api.lease()}
    assert got == {"discharge_followup": 2, "appointment_reminder": 0}


def test_phi_disclosed_with_fewer_distinct_identifiers_is_flagged(api: Api) -> None:
    for i in range(1, 5):
        api.consent(num(i))
    cid = api.campaign()
    api.submit(cid, *({"phone": num(i)} for i in range(1, 5)))
    tasks = {t["phone"]: t for t in api.lease()}
    # The same identifier twice is one identifier.
    assert outcome_flags(api, tasks[num(1)], phi_disclosed=True,
                         identity_verified_with=["date_of_birth", "date_of_birth"]) == [
        "IDENTITY_NOT_VERIFIED"]
    assert outcome_flags(api, tasks[num(2)], phi_disclosed=True,
                         identity_verified_with=["date_of_birth", "address"]) == []
    # Nothing disclosed: nothing to verify.
    assert outcome_flags(api, tasks[num(3)], phi_disclosed=False) == []
    # Both at once.
    assert outcome_flags(api, tasks[num(4)], phi_disclosed=True, recorded=True) == [
        "RECORDING_WITHOUT_CONSENT", "IDENTITY_NOT_VERIFIED"]
    r = api.client.get("/v1/call-log.csv", headers=api.keys["compliance"])
    rows = {r_["flags"] for r_ in csv.DictReader(io.StringIO(r.text))}
    assert "IDENTITY_NOT_VERIFIED" in rows
    with api.runtime.db.read() as s:
        payloads = [json.loads(p) for p in s.scalars(select(AuditEntry.payload).where(
            AuditEntry.kind == "call.outcome"))]
    assert {p["phi_disclosed"] for p in payloads} == {True, False}


def test_batched_outcomes_carry_the_same_flags(api: Api) -> None:
    for i in (1, 2):
        api.consent(num(i))
    api.submit(api.campaign(), {"phone": num(1)}, {"phone": num(2)})
    t1, t2 = api.lease()
    items = [
        {"call_id": t["call_id"], "lease_id": t["lease_id"], "agent_id": "A-17",
         "agent_name": "Dana", "disclosed_callback_number": "+13145550199",
         "result": "connected", **extra}
        for t, extra in ((t1, {"recorded": True}),
                         (t2, {"phi_disclosed": True, "identity_verified_with": ["address"]}))
    ]
    r = api.client.post("/v1/queue/outcomes", json={"outcomes": items}, headers=api.dialer)
    assert r.status_code == 200, r.text
    assert [x["flags"] for x in r.json()["results"]] == [
        ["RECORDING_WITHOUT_CONSENT"], ["IDENTITY_NOT_VERIFIED"]]


def test_an_unknown_identifier_is_refused(api: Api) -> None:
    api.consent(num(1))
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    r = api.outcome(task, "connected", phi_disclosed=True,
                    identity_verified_with=["date_of_birth", "mothers_maiden_name"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = api.outcome(task, "connected", phi_disclosed="yes")
    assert r.status_code == 422
    assert outcome_flags(api, task, phi_disclosed=True,
                         identity_verified_with=["member_id", "invoice_number"]) == []


def test_identity_is_checked_against_what_the_task_said(api: Api) -> None:
    """The policy changes between the lease and the outcome: the outcome is judged by the
    task's identity_identifiers (what the agent was told)."""
    api.consent(num(1))
    api.consent(num(2))
    api.submit(api.campaign(purpose="appointment_reminder"), {"phone": num(1)}, {"phone": num(2)})
    tasks = api.lease()
    assert [t["identity_identifiers"] for t in tasks] == [0, 0]
    swap_policy(api.runtime, '[purposes.appointment_reminder]\n',
                '[purposes.appointment_reminder]\nidentity_identifiers = 3\n')
    assert outcome_flags(api, tasks[0], phi_disclosed=True) == []
    # A policy's own figure reaches the next tasks.
    api.consent(num(3))
    api.submit(api.campaign(purpose="appointment_reminder"), {"phone": num(3)})
    [task] = api.lease()
    assert task["identity_identifiers"] == 3
    assert outcome_flags(api, task, phi_disclosed=True,
                         identity_verified_with=["address", "member_id"]) == [
        "IDENTITY_NOT_VERIFIED"]


# --- reassigned numbers: intake ---------------------------------------------------------------


@pytest.mark.parametrize(("offset", "refused"), [(-1, False), (0, True), (1, True)])
def test_a_yes_refuses_at_intake_only_on_or_after_the_consent_date(
    api: Api, offset: int, refused: bool
) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    load(api, answer(num(1), CONSENT_DAY + timedelta(days=offset), "yes"))
    cid = api.campaign()
    r = api.client.post(f"/v1/campaigns/{cid}/calls", headers=api.mgr,
                        json=[{"external_id": "e1", "phone": num(1)}])
    [res] = r.json()["results"]
    if refused:
        assert res["status"] == "refused"
        assert [x["code"] for x in res["reasons"]] == ["NUMBER_REASSIGNED"]
        assert "64.1200(m)" in res["reasons"][0]["rule"]
        assert PHONE_DIGITS not in r.text.replace(num(1), "")
    else:
        assert (res["status"], res["reasons"]) == ("queued", [])


def test_no_and_no_data_answers_do_not_refuse(api: Api) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    api.consent(num(2), obtained_at=CONSENT_AT)
    load(api, answer(num(1), CONSENT_DAY, "no"), answer(num(2), CONSENT_DAY, "no_data"))
    api.submit(api.campaign(), {"phone": num(1)}, {"phone": num(2)})


def test_a_consent_obtained_after_the_disconnection_still_counts(api: Api) -> None:
    """The new subscriber's own consent: a yes asked with the old consent's date decides
    nothing for a consent obtained later."""
    api.consent(num(1), obtained_at=T0 - days(400))
    load(api, answer(num(1), (T0 - days(400)).date(), "yes"))
    cid = api.campaign()
    r = api.client.post(f"/v1/campaigns/{cid}/calls", headers=api.mgr,
                        json=[{"external_id": "e1", "phone": num(1)}])
    assert r.json()["results"][0]["status"] == "refused"
    api.consent(num(1), obtained_at=T0 - days(2))
    [call] = api.submit(cid, {"phone": num(1)})
    [task] = api.lease()
    assert task["call_id"] == call


# --- reassigned numbers: the queue ------------------------------------------------------------


def test_an_import_withdraws_the_queued_call_of_a_reassigned_number(api: Api) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    api.consent(num(2), obtained_at=CONSENT_AT)
    cid = api.campaign()
    [c1, c2] = api.submit(cid, {"phone": num(1)}, {"phone": num(2)})
    out = load(api, answer(num(1), CONSENT_DAY, "yes"),
               answer(num(2), CONSENT_DAY - timedelta(days=1), "yes"))
    assert (out["stored"], out["withdrawn_calls"]) == (2, 1)
    row = left(api, c1, "withdrawn", "NUMBER_REASSIGNED")
    assert row.reasons[0]["code"] == "NUMBER_REASSIGNED"
    assert api.call(c2)["status"] == "queued"  # a yes before the consent decides nothing
    assert [t["call_id"] for t in api.lease()] == [c2]


def test_an_import_withdraws_a_leased_call_the_dial_check_stops_it(api: Api) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    assert load(api, answer(num(1), CONSENT_DAY, "yes"))["withdrawn_calls"] == 1
    r = api.dial(task)
    assert r.status_code == 409 and r.json()["error"]["code"] == "NUMBER_REASSIGNED"
    with api.runtime.db.read() as s:
        [a] = s.scalars(select(Attempt).where(Attempt.call_id == call))
        assert (a.state, a.counted) == ("withdrawn", True)
    # Dialled before the answers withdrew it: a late outcome, accepted and flagged (as after a
    # revocation: the attempt was withdrawn), with the on-call flags too; the call stays out.
    r = api.outcome(task, "connected", recorded=True)
    assert r.status_code == 200, r.text
    assert set(r.json()["flags"]) == {"AFTER_REVOCATION", "RECORDING_WITHOUT_CONSENT"}
    assert api.call(call)["status"] == "withdrawn"


def _answer_behind_the_queue(rt: Runtime, phone: str, day: date, ans: str,
                             queried_at: datetime = T0 - timedelta(hours=1)) -> None:
    """An answer that reached the table without going through the import (a copy restored
    from another instance): the decisions read it all the same."""
    with rt.db.write() as s:
        s.add(ReassignedAnswer(phone=phone, date=day, answer=ans, queried_at=queried_at,
                               imported_at=queried_at, imported_by="test"))


def test_the_lease_refuses_a_reassigned_number(api: Api) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    _answer_behind_the_queue(api.runtime, num(1), CONSENT_DAY, "yes")
    assert api.lease() == []
    left(api, call, "refused", "NUMBER_REASSIGNED")


def test_the_dial_check_refuses_a_reassigned_number(api: Api) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    _answer_behind_the_queue(api.runtime, num(1), CONSENT_DAY + timedelta(days=3), "yes")
    r = api.dial(task)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "NUMBER_REASSIGNED"
    assert r.json()["error"]["details"]["go"] is False


@pytest.mark.parametrize(("offset", "allowed"), [(-1, True), (0, False)])
def test_preflight_answers_number_reassigned(api: Api, offset: int, allowed: bool) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    load(api, answer(num(1), CONSENT_DAY + timedelta(days=offset), "yes"))
    r = api.check(phone=num(1))
    assert r.status_code == 200 and r.json()["allowed"] is allowed
    if not allowed:
        assert [x["code"] for x in r.json()["reasons"]] == ["NUMBER_REASSIGNED"]


def test_outcome_of_a_reassigned_number_flags_nothing_new(api: Api) -> None:
    """An outcome reported before the answers arrive stays as it was; the next call is refused."""
    api.consent(num(1), obtained_at=CONSENT_AT)
    cid = api.campaign(max_attempts=3)
    [call] = api.submit(cid, {"phone": num(1)})
    [task] = api.lease()
    r = api.outcome(task, "no_answer")
    assert r.status_code == 200 and r.json()["flags"] == []
    assert load(api, answer(num(1), CONSENT_DAY, "yes"))["withdrawn_calls"] == 1
    assert api.call(call)["status"] == "withdrawn"


# --- reassigned numbers: require_answer_within_days -------------------------------------------


def test_stale_at_intake_parks_until_an_answer_arrives(api: Api, clock: FakeClock) -> None:
    stale_policy(api)
    api.consent(num(1), obtained_at=CONSENT_AT)
    cid = api.campaign()
    r = api.client.post(f"/v1/campaigns/{cid}/calls", headers=api.mgr,
                        json=[{"external_id": "e1", "phone": num(1)}])
    [res] = r.json()["results"]
    assert res["status"] == "queued"
    assert [x["code"] for x in res["reasons"]] == ["REASSIGNED_CHECK_STALE"]
    c = api.call(res["call_id"])
    assert (c["last_reason"], ts(c["next_eligible_at"])) == (
        "REASSIGNED_CHECK_STALE", T0 + STALE_RECHECK)
    with api.runtime.db.read() as s:
        assert s.scalar(select(Call.parked).where(Call.id == res["call_id"])) is True
    assert api.lease() == []
    # A "no" for the consent's date, queried now: back in the queue at once.
    out = load(api, answer(num(1), CONSENT_DAY, "no", queried_at=T0))
    assert out["requeued_calls"] == 1
    [task] = api.lease()
    assert task["call_id"] == res["call_id"]


def test_stale_at_lease_defers_with_a_recheck(api: Api) -> None:
    api.consent(num(1), obtained_at=CONSENT_AT)
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    stale_policy(api)  # the policy changed after intake
    assert api.lease() == []
    deferred(api, call, "REASSIGNED_CHECK_STALE", T0 + STALE_RECHECK)


@pytest.mark.parametrize(("day_offset", "age", "fresh"), [
    (0, days(29), True),
    (-30, days(1), True),    # "not disconnected since" an earlier date covers the consent
    (1, days(1), False),     # a later date leaves the days between unasked
    (0, days(31), False),    # too old
])
def test_which_no_answers_count_as_recent(
    api: Api, day_offset: int, age: timedelta, fresh: bool
) -> None:
    stale_policy(api)
    api.consent(num(1), obtained_at=OLD_AT)
    out = load(api, answer(num(1), OLD_DAY + timedelta(days=day_offset), "no",
                           queried_at=T0 - age))
    assert out["stored"] == 1
    r = api.check(phone=num(1))
    assert r.json()["allowed"] is fresh, r.text
    if not fresh:
        assert [x["code"] for x in r.json()["reasons"]] == ["REASSIGNED_CHECK_STALE"]
        assert r.json()["next_eligible_at"] is None  # not until an answer arrives


def test_stale_at_the_dial_check(api: Api, clock: FakeClock) -> None:
    stale_policy(api)
    api.consent(num(1), obtained_at=OLD_AT)
    load(api, answer(num(1), OLD_DAY, "no", queried_at=T0 - days(30) + timedelta(seconds=60)))
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease(lease_seconds=300)
    clock.advance(timedelta(seconds=90))
    r = api.dial(task)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REASSIGNED_CHECK_STALE"


def test_stale_close_to_the_deadline_expires(api: Api) -> None:
    stale_policy(api)
    api.consent(num(1), obtained_at=CONSENT_AT)
    cid = api.campaign()
    [call] = api.submit(cid, {"phone": num(1), "not_after": iso(T0 + MIN_LEASE)})
    assert api.lease() == []
    c = api.call(call)
    assert (c["status"], c["last_reason"]) == ("expired", "DEADLINE_PASSED")
    [row] = api.refusals(call)
    assert [r["code"] for r in row.reasons] == ["DEADLINE_PASSED", "REASSIGNED_CHECK_STALE"]


def test_stale_deferral_never_reaches_the_deadline(api: Api) -> None:
    stale_policy(api)
    api.consent(num(1), obtained_at=CONSENT_AT)
    [call] = api.submit(api.campaign(), {"phone": num(1),
                                         "not_after": iso(T0 + timedelta(minutes=30))})
    c = api.call(call)
    assert ts(c["next_eligible_at"]) == T0 + timedelta(minutes=30) - MIN_LEASE


# --- the import itself ------------------------------------------------------------------------


def test_import_csv_json_and_invalid_rows(api: Api) -> None:
    body = ("Phone, Date ,ANSWER,queried_at,extra\n"
            f"{num(1)[2:]},03/05/2026,Yes,2026-11-20T15:00:00Z,x\n"
            f"{num(2)},2026-03-05,no data,2026-11-20,\n"
            "\n"
            f"{num(3)},2026-13-05,no,2026-11-20T15:00:00Z,\n"
            f"{num(3)},2026-03-05,maybe,2026-11-20T15:00:00+00:00,\n"
            f"555-0100,2026-03-05,no,2026-11-20T15:00:00Z,\n"
            f"{num(3)},2026-03-05,no,2030-01-01T00:00:00Z,\n"
            f"{num(3)},2026-11-21,no,2026-11-20T15:00:00Z,\n"
            f"{num(3)},2026-03-05,no,2026-11-20T15:00:00,\n")
    r = api.client.post("/v1/numbers/reassigned", content=body,
                        headers={**api.mgr, "content-type": "text/csv"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["rows"], out["stored"], out["invalid"]) == (8, 2, 6)
    assert out["answers"] == {"yes": 1, "no": 0, "no_data": 1}
    assert [(e["row"], e["field"]) for e in out["errors"]] == [
        (4, "date"), (5, "answer"), (6, "phone"), (7, "queried_at"), (8, "date"),
        (9, "queried_at")]
    assert "5550100" not in r.text and "555-0100" not in r.text
    # The same answers again: duplicates, nothing stored.
    r = api.client.post("/v1/numbers/reassigned", content=body,
                        headers={**api.mgr, "content-type": "text/csv"})
    assert (r.json()["stored"], r.json()["duplicates"]) == (0, 2)
    out = load(api, answer(num(4), CONSENT_DAY, "no"), answer(num(4), CONSENT_DAY, "no"),
               {"phone": 3145550100}, "not an object")
    assert (out["stored"], out["duplicates"], out["invalid"]) == (1, 1, 2)
    with api.runtime.db.read() as s:
        got = sorted((a.phone, a.date, a.answer) for a in s.scalars(select(ReassignedAnswer)))
    assert got == [(num(1), date(2026, 3, 5), "yes"), (num(2), date(2026, 3, 5), "no_data"),
                   (num(4), CONSENT_DAY, "no")]
    with api.runtime.db.read() as s:
        entries = [json.loads(p) for p in s.scalars(
            select(AuditEntry.payload).where(AuditEntry.kind == "reassigned.imported"))]
    assert [e["stored"] for e in entries] == [2, 0, 1]
    assert not any(num(i)[2:] in json.dumps(entries) for i in range(1, 5))


def test_import_refuses_what_is_not_a_file_of_answers(api: Api) -> None:
    post = api.client.post
    r = post("/v1/numbers/reassigned", content=b'[{"phone": "1"}', headers={
        **api.mgr, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    # A number out of a float's range, after a good row: 422 and nothing stored (was a 500).
    body = json.dumps([answer(num(1), CONSENT_DAY, "no")])[:-1] + ', {"phone": 1e999}]'
    r = post("/v1/numbers/reassigned", content=body.encode(), headers={
        **api.mgr, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    with api.runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(ReassignedAnswer)) == 0
    r = post("/v1/numbers/reassigned", json={"phone": num(1)}, headers=api.mgr)
    assert r.status_code == 422
    r = post("/v1/numbers/reassigned", content="phone,date,answer\n1,2,3\n",
             headers={**api.mgr, "content-type": "text/csv"})
    assert r.status_code == 422 and "queried_at" in r.json()["error"]["message"]
    r = post("/v1/numbers/reassigned", content=b"<xml/>",
             headers={**api.mgr, "content-type": "application/xml"})
    assert r.status_code == 415
    files = {"file": ("answers.json", json.dumps([answer(num(1), CONSENT_DAY, "no")]),
                      "application/json")}
    r = post("/v1/numbers/reassigned", files=files, headers=api.mgr)
    assert r.status_code == 200 and r.json()["stored"] == 1


@pytest.mark.parametrize(("role", "status"), [
    ("admin", 200), ("campaign_manager", 200), ("dialer", 403), ("compliance", 403)])
def test_import_roles(api: Api, role: str, status: int) -> None:
    r = api.client.post("/v1/numbers/reassigned", json=[], headers=api.keys[role])
    assert r.status_code == status
    r = api.client.post("/v1/numbers/reassigned", json=[])
    assert r.status_code == 401


def test_the_number_story_shows_the_answers(api: Api, runtime: Runtime) -> None:
    from review import dashboard

    api.consent(num(1), obtained_at=CONSENT_AT)
    load(api, answer(num(1), CONSENT_DAY - timedelta(days=1), "yes"),
         answer(num(1), CONSENT_DAY, "no", queried_at=T0 - timedelta(minutes=5)))
    story = dashboard.number_story(runtime, identity(runtime, Role.compliance), num(1))
    assert [(a.answer, a.date) for a in story.answers] == [
        ("yes", CONSENT_DAY - timedelta(days=1)), ("no", CONSENT_DAY)]
    texts = [e.detail for e in story.events if e.what.startswith("Reassigned")]
    assert "decides nothing" in texts[0] and "covers consent" in texts[1]
    with api.runtime.db.read() as s:
        [read] = [e for e in s.scalars(select(AuditEntry).where(
            AuditEntry.kind == "patient_data.read")) if "reassigned_answers" in e.payload]
    assert len(json.loads(read.payload)["reassigned_answers"]) == 2


# --- a race: leases while an import finds the numbers reassigned -----------------------------


def test_leases_racing_an_import_never_keep_a_reassigned_call(
    api: Api, runtime: Runtime
) -> None:
    """Four pollers lease while an import finds every number reassigned: whatever the
    interleaving, no call of those numbers is left queued or leased (withdrawn if leased
    first, refused if decided after), and each lease was taken before the import."""
    n = 40
    from tests.helpers import written_consents

    who = identity(runtime, Role.campaign_manager)
    written_consents(runtime, who, [num(i) for i in range(n)], CONSENT_AT, "scan://x")
    cid = api.campaign()
    api.submit(cid, *({"phone": num(i)} for i in range(n)))
    dialer = identity(runtime, Role.dialer)
    rows = [(i + 1, answer(num(i), CONSENT_DAY, "yes")) for i in range(n)]
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            start.wait()
            for _ in range(10):
                queue.lease(runtime, dialer, queue.LeaseRequest("d", limit=3))
        except BaseException as exc:
            errors.append(exc)

    def load_all() -> None:
        try:
            start.wait()
            rnd_service.import_answers(runtime, who, rows, chunk=7)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    threads.append(threading.Thread(target=load_all))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with runtime.db.read() as s:
        statuses = {c.status for c in s.scalars(select(Call))}
        assert statuses <= {"withdrawn", "refused"}, statuses
        assert not s.scalars(select(Attempt).where(Attempt.state == "live")).all()
