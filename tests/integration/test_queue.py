"""The dispatch queue over HTTP, on both databases: every reason code reachable at lease time,
lease ordering and limits, leases clipped to the calling window, release / expiry accounting,
outcomes (agent identification, opt-out, wrong number), the dial check, the preflight check
with and without a reservation, and the roles.

Time is driven with the ``clock`` fixture (the app's runtime reads it). T0 is Tuesday
2026-11-24 17:00 UTC = 11:00 in Chicago, the zone of every 314 number used here; Thursday
2026-11-26 is Thanksgiving (a US public holiday, hence a quiet day).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy import text as sql_text

from config.clock import FakeClock
from config.policy import _default_policy_bytes, parse_policy
from core.models import Attempt, Call, Consent, Refusal, Revocation
from core.runtime import Runtime
from dialer import maintenance
from dialer.queue import service as queue
from dialer.queue import store as queue_store
from dialer.queue.store import QueueState
from tests.conftest import T0
from tests.helpers import audit_entries, campaign_body, consent_body, days

Keys = dict[str, dict[str, str]]
CHI = ZoneInfo("America/Chicago")
CALLBACK = "+13145550199"
# Task fields: the API.md ones, plus the documented extensions (script id per PRODUCT.md 8,
# sms limit, attempt numbering). Anything else must be reviewed for "minimum necessary".
TASK_FIELDS_API = {
    "call_id", "lease_id", "lease_expires_at", "phone", "purpose", "channel", "campaign_id",
    "provider_name", "callback_number", "max_duration_seconds", "disclosures",
    # API.md "Recording and identity verification"
    "recording", "identity_identifiers",
    # API.md "Templates and texts"
    "kind", "text", "template_id",
}
TASK_FIELDS_EXTRA = {"script_id", "sms_max_chars", "attempt", "max_attempts"}


def num(i: int) -> str:
    """A distinct St. Louis (America/Chicago) number per i, E.164."""
    return f"+1314555{100 + i:04d}"


def chicago(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 11) -> datetime:
    """Local Chicago wall time in 2026 as an aware UTC datetime."""
    return datetime(2026, month, day, hour, minute, second, tzinfo=CHI).astimezone(UTC)


def ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def swap_policy(runtime: Runtime, old: str, new: str) -> None:
    """Replace the running policy by the shipped one with ``old`` replaced by ``new``."""
    text = _default_policy_bytes().decode()
    assert old in text
    runtime.policy = parse_policy(text.replace(old, new).encode(), "test policy")


@dataclass
class Api:
    """A thin driver for the HTTP API with the test keys."""

    client: TestClient
    keys: Keys
    clock: FakeClock
    runtime: Runtime

    @property
    def mgr(self) -> dict[str, str]:
        return self.keys["campaign_manager"]

    @property
    def dialer(self) -> dict[str, str]:
        return self.keys["dialer"]

    def consent(self, phone: str, **kw: Any) -> None:
        body = consent_body(kw.pop("obtained_at", T0 - days(20)), phone, **kw)
        r = self.client.post("/v1/consents", json=body, headers=self.mgr)
        assert r.status_code == 201, r.text

    def campaign(self, **overrides: Any) -> str:
        overrides.setdefault("calling_window", None)
        r = self.client.post("/v1/campaigns", json=campaign_body(**overrides), headers=self.mgr)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def submit(self, campaign_id: str, *rows: dict[str, Any]) -> list[str]:
        """Queue rows (each needs at least ``phone``); returns their call ids."""
        body = [
            {"external_id": f"x-{uuid.uuid4().hex[:10]}", "patient_ref": "MRN-7731", **r}
            for r in rows
        ]
        r = self.client.post(f"/v1/campaigns/{campaign_id}/calls", json=body, headers=self.mgr)
        assert r.status_code == 200, r.text
        out = r.json()["results"]
        assert [x["status"] for x in out] == ["queued"] * len(rows), out
        return [str(x["call_id"]) for x in out]

    def lease_resp(self, limit: int = 10, lease_seconds: int = 120,
                   headers: dict[str, str] | None = None) -> Response:
        return self.client.post(
            "/v1/queue/lease", headers=headers or self.dialer,
            json={"dialer_id": "acme-1", "limit": limit, "lease_seconds": lease_seconds},
        )

    def lease(self, limit: int = 10, lease_seconds: int = 120) -> list[dict[str, Any]]:
        r = self.lease_resp(limit, lease_seconds)
        assert r.status_code == 200, r.text
        return list(r.json()["tasks"])

    def outcome(self, task: dict[str, Any], result: str = "no_answer", **fields: Any) -> Response:
        body: dict[str, Any] = {
            "lease_id": task["lease_id"], "agent_id": "A-17", "agent_name": "Dana",
            "disclosed_callback_number": CALLBACK, "result": result,
            "started_at": iso(self.clock.now()),
            "ended_at": iso(self.clock.now() + timedelta(seconds=30)),
        }
        body.update(fields)
        body = {k: v for k, v in body.items() if v is not ...}
        return self.client.post(f"/v1/queue/{task['call_id']}/outcome", json=body,
                                headers=self.dialer)

    def dial(self, task: dict[str, Any]) -> Response:
        return self.client.post(f"/v1/queue/{task['call_id']}/dial",
                                json={"lease_id": task["lease_id"]}, headers=self.dialer)

    def release(self, task: dict[str, Any]) -> Response:
        return self.client.post(f"/v1/queue/{task['call_id']}/release",
                                json={"lease_id": task["lease_id"]}, headers=self.dialer)

    def call(self, call_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/calls/{call_id}", headers=self.mgr)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def check(self, **body: Any) -> Response:
        body.setdefault("purpose", "discharge_followup")
        body.setdefault("channel", "autodialed_voice")
        return self.client.post("/v1/check", json=body, headers=self.dialer)

    def refusals(self, call_id: str) -> list[Refusal]:
        with self.runtime.db.read() as s:
            return list(s.scalars(
                select(Refusal).where(Refusal.call_id == call_id).order_by(Refusal.id)
            ))

    def attempts(self, phone: str) -> list[Attempt]:
        with self.runtime.db.read() as s:
            return list(s.scalars(
                select(Attempt).where(Attempt.phone == phone).order_by(Attempt.at, Attempt.kind)
            ))


@pytest.fixture
def api(client: TestClient, keys: Keys, clock: FakeClock, runtime: Runtime) -> Api:
    return Api(client, keys, clock, runtime)


def deferred(api: Api, call_id: str, code: str, at: datetime) -> None:
    c = api.call(call_id)
    assert (c["status"], c["last_reason"], ts(c["next_eligible_at"])) == ("queued", code, at)
    [entry] = [d for d in c["decisions"] if d["kind"] == "call.deferred"][-1:]
    assert code in entry["payload"]["codes"]
    with api.runtime.db.read() as s:
        # Out of the queue order until it is due (migration 0003).
        assert s.scalar(select(Call.parked).where(Call.id == call_id)) is True


def left(api: Api, call_id: str, status: str, code: str) -> Refusal:
    """The call left the queue with ``code``, logged once in the refusal log at dispatch."""
    c = api.call(call_id)
    assert (c["status"], c["last_reason"], c["next_eligible_at"]) == (status, code, None)
    [row] = api.refusals(call_id)
    assert (row.stage, row.status, row.code) == ("dispatch", status, code)
    with api.runtime.db.read() as s:
        # A refused call no longer holds its external id (an expired one still does).
        assert s.scalar(select(Call.accepted).where(Call.id == call_id)) is (status != "refused")
    return row


# --- permanent reasons at dispatch -------------------------------------------------------


def test_consent_revoked_after_intake_is_refused_at_lease(api: Api, runtime: Runtime) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    # A revocation that reached the registry without withdrawing the call (imported by
    # another system, or recorded by an instance racing this lease): the lease re-checks
    # consent at that instant and refuses.
    with runtime.db.write() as s:
        s.add(Revocation(id=str(uuid.uuid4()), phone=num(1), source="letter",
                         received_at=T0 - timedelta(minutes=5), recorded_at=T0,
                         recorded_by="test"))
    assert api.lease() == []
    left(api, call, "refused", "CONSENT_REVOKED")
    assert api.lease() == []


def test_consent_expired_after_intake_is_refused_at_lease(api: Api, clock: FakeClock) -> None:
    api.consent(num(1), expires_at=T0 + timedelta(hours=1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    clock.advance(timedelta(hours=1))
    assert api.lease() == []
    left(api, call, "refused", "CONSENT_EXPIRED")


def test_revocation_withdraws_queued_calls(api: Api) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    r = api.client.post("/v1/consents/revocations", headers=api.mgr,
                        json={"phone": num(1), "source": "sms_stop"})
    assert r.status_code == 201 and r.json()["withdrawn_calls"] == 1
    assert api.lease() == []
    left(api, call, "withdrawn", "CONSENT_REVOKED")


def test_dnc_withdraws_queued_and_leased_calls(api: Api) -> None:
    for i in (1, 2):
        api.consent(num(i))
    queued, leased = api.submit(api.campaign(), {"phone": num(1), "priority": 1},
                                {"phone": num(2), "priority": 9})
    [task] = api.lease(limit=1)
    assert task["call_id"] == leased
    for phone in (num(1), num(2)):
        r = api.client.post("/v1/dnc", headers=api.mgr, json={"phone": phone, "reason": "letter"})
        assert r.status_code == 201 and r.json()["withdrawn_calls"] == 1
    assert api.lease() == []
    left(api, queued, "withdrawn", "DO_NOT_CALL")
    left(api, leased, "withdrawn", "DO_NOT_CALL")
    dial = api.dial(task)
    assert dial.status_code == 409 and dial.json()["error"]["code"] == "DO_NOT_CALL"
    # It may have been dialled: its outcome is taken, flagged; the call stays withdrawn.
    r = api.outcome(task)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["flags"]) == ("withdrawn", ["AFTER_REVOCATION"])


def test_purpose_withdrawn_from_policy_is_refused_at_lease(api: Api, runtime: Runtime) -> None:
    for i in (1, 2):
        api.consent(num(i))
    leased, queued = api.submit(api.campaign(), {"phone": num(1), "priority": 9},
                                {"phone": num(2), "priority": 1})
    [task] = api.lease(limit=1)
    assert task["call_id"] == leased
    swap_policy(runtime, "[purposes.discharge_followup]\nallowed = true",
                "[purposes.discharge_followup]\nallowed = false")
    assert api.lease() == []
    row = left(api, queued, "refused", "PURPOSE_NOT_ALLOWED")
    assert row.policy_version == runtime.policy_version
    # The leased call is stopped at the dial check.
    dial = api.dial(task)
    assert dial.status_code == 409
    assert dial.json()["error"]["code"] == "PURPOSE_NOT_ALLOWED"
    assert dial.json()["error"]["details"]["go"] is False


# --- deadlines ---------------------------------------------------------------------------


def test_deadline_passed_when_not_after_passes(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1),
                                         "not_after": iso(T0 + timedelta(hours=1))})
    clock.advance(timedelta(hours=1))
    assert api.lease() == []
    left(api, call, "expired", "DEADLINE_PASSED")


def test_deadline_passed_when_window_does_not_open_before_not_after(
    api: Api, clock: FakeClock
) -> None:
    api.consent(num(1))
    clock.set(chicago(24, 21, 30))
    [call] = api.submit(api.campaign(), {"phone": num(1), "not_after": iso(chicago(24, 23, 0))})
    assert api.lease() == []
    row = left(api, call, "expired", "DEADLINE_PASSED")
    assert row.codes.split() == ["DEADLINE_PASSED", "OUTSIDE_CALLING_WINDOW"]
    assert row.reasons[0]["details"] == {"blocked_by": ["OUTSIDE_CALLING_WINDOW"]}


def test_deadline_passed_when_cap_frees_after_not_after(api: Api) -> None:
    api.consent(num(1))
    [first] = api.submit(api.campaign(name="a"), {"phone": num(1), "priority": 9})
    [late] = api.submit(api.campaign(name="b"), {"phone": num(1), "priority": 1,
                                                  "not_after": iso(T0 + timedelta(hours=2))})
    [task] = api.lease()
    assert task["call_id"] == first
    row = left(api, late, "expired", "DEADLINE_PASSED")
    assert row.reasons[0]["details"] == {"blocked_by": ["DAILY_CAP"]}


def test_expire_deadlines_job(api: Api, runtime: Runtime, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1),
                                         "not_after": iso(T0 + timedelta(hours=1))})
    clock.advance(timedelta(hours=2))
    assert queue.expire_deadlines(runtime) == 1
    left(api, call, "expired", "DEADLINE_PASSED")


def test_expire_deadlines_job_finds_deferred_calls(
    api: Api, runtime: Runtime, clock: FakeClock
) -> None:
    api.consent(num(1))
    [first] = api.submit(api.campaign(name="a"), {"phone": num(1), "priority": 9})
    [late] = api.submit(api.campaign(name="b"), {"phone": num(1),
                                                  "not_after": iso(T0 + timedelta(hours=30))})
    [task] = api.lease()
    assert task["call_id"] == first
    deferred(api, late, "DAILY_CAP", T0 + timedelta(hours=24))
    clock.advance(timedelta(hours=31))  # nobody polled meanwhile
    assert queue.expire_deadlines(runtime) == 1
    row = left(api, late, "expired", "DEADLINE_PASSED")
    assert row.reasons[0]["details"] == {"blocked_by": ["DAILY_CAP"]}
    assert queue.expire_deadlines(runtime) == 0


# --- deferrals -----------------------------------------------------------------------------


def test_outside_calling_window_defers_to_the_opening(api: Api, clock: FakeClock) -> None:
    for i in (1, 2, 3):
        api.consent(num(i))
    clock.set(chicago(24, 6, 0))
    [policy_window] = api.submit(api.campaign(name="a"), {"phone": num(1)})
    [campaign_window] = api.submit(
        api.campaign(name="b", calling_window={"start": "09:00", "end": "18:00"}),
        {"phone": num(2)},
    )
    # A St. Louis number with a New York address: inside the window in both zones only.
    [two_zones] = api.submit(api.campaign(name="c"), {"phone": num(3), "postal_code": "10001"})
    assert api.lease() == []
    deferred(api, policy_window, "OUTSIDE_CALLING_WINDOW", chicago(24, 8, 0))
    deferred(api, campaign_window, "OUTSIDE_CALLING_WINDOW", chicago(24, 9, 0))
    deferred(api, two_zones, "OUTSIDE_CALLING_WINDOW", chicago(24, 8, 0))
    clock.set(chicago(24, 8, 0))
    assert {t["call_id"] for t in api.lease()} == {policy_window, two_zones}
    clock.set(chicago(24, 9, 0))
    assert [t["call_id"] for t in api.lease()] == [campaign_window]


def test_outside_calling_window_in_any_candidate_zone(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    clock.set(chicago(24, 20, 30))  # 21:30 in New York: closed there
    [call] = api.submit(api.campaign(), {"phone": num(1), "postal_code": "10001"})
    assert api.lease() == []
    deferred(api, call, "OUTSIDE_CALLING_WINDOW", chicago(25, 8, 0))
    c = api.call(call)
    assert c["candidate_zones"] == [
        {"zone": "America/Chicago", "source": "area_code"},
        {"zone": "America/New_York", "source": "postal_code"},
    ]


def test_quiet_day_defers_to_the_next_day(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    clock.set(chicago(26, 11, 0))  # Thanksgiving
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    assert api.lease() == []
    deferred(api, call, "QUIET_DAY", chicago(27, 8, 0))
    clock.set(chicago(27, 8, 0))
    assert [t["call_id"] for t in api.lease()] == [call]


def test_daily_cap_across_campaigns(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    [first] = api.submit(api.campaign(name="a"), {"phone": num(1), "priority": 7})
    [second] = api.submit(api.campaign(name="b", purpose="appointment_reminder"),
                          {"phone": num(1)})
    [task] = api.lease()
    assert task["call_id"] == first
    assert api.outcome(task, "connected").status_code == 200
    deferred(api, second, "DAILY_CAP", T0 + timedelta(hours=24))
    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    assert api.lease() == []
    clock.advance(timedelta(seconds=1))
    assert [t["call_id"] for t in api.lease()] == [second]


def test_weekly_cap_after_three_attempts(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    monday = chicago(30, 11, 0)
    clock.set(monday)
    [call] = api.submit(api.campaign(max_attempts=5), {"phone": num(1)})
    for day in range(3):
        clock.set(monday + days(day))
        [task] = api.lease()
        assert task["attempt"] == day + 1
        r = api.outcome(task, "no_answer")
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        assert api.lease() == []  # the same day: capped
        if day < 2:
            deferred(api, call, "DAILY_CAP", clock.now() + days(1))
    # After the third attempt both caps block; the call waits for the weekly one.
    c = api.call(call)
    assert ts(c["next_eligible_at"]) == monday + days(7)
    assert c["decisions"][-1]["payload"]["codes"] == ["DAILY_CAP", "WEEKLY_CAP"]
    # Thursday: a new call to the number is blocked by the weekly cap alone.
    clock.set(monday + days(3))
    [other] = api.submit(api.campaign(name="other"), {"phone": num(1)})
    assert api.lease() == []
    deferred(api, other, "WEEKLY_CAP", monday + days(7))
    clock.set(monday + days(7))
    [task] = api.lease()
    assert (task["call_id"], task["attempt"]) == (call, 4)


def test_max_attempts_after_no_answers(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(max_attempts=2), {"phone": num(1)})
    [task] = api.lease()
    assert api.outcome(task, "busy").json()["status"] == "queued"
    clock.advance(days(1))
    [task] = api.lease()
    r = api.outcome(task, "no_answer")
    assert r.status_code == 200 and r.json() == {
        "call_id": call, "status": "expired", "attempts": 2, "flags": []
    }
    left(api, call, "expired", "MAX_ATTEMPTS")
    clock.advance(days(1))
    assert api.lease() == []


def test_max_attempts_reached_by_an_expired_lease(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(max_attempts=1), {"phone": num(1)})
    [task] = api.lease(lease_seconds=30)
    clock.advance(timedelta(seconds=31))
    assert api.lease() == []
    left(api, call, "expired", "MAX_ATTEMPTS")
    # The late outcome is taken, flagged; the call stays expired (no attempt left).
    r = api.outcome(task)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["flags"]) == ("expired", ["LATE_OUTCOME"])
    left(api, call, "expired", "MAX_ATTEMPTS")


# --- lease: order, limits, window, task contents -----------------------------------------


def test_lease_order_priority_then_oldest(api: Api, clock: FakeClock) -> None:
    for i in range(5):
        api.consent(num(i))
    cid = api.campaign()
    ids = {}
    for i, prio in enumerate((5, 5, 9, 1, 5)):
        [ids[i]] = api.submit(cid, {"phone": num(i), "priority": prio})
        clock.advance(timedelta(minutes=1))
    expected = [ids[2], ids[0], ids[1], ids[4], ids[3]]
    first = api.lease(limit=2)
    assert [t["call_id"] for t in first] == expected[:2]
    assert [t["call_id"] for t in api.lease(limit=10)] == expected[2:]


@pytest.mark.parametrize("with_index", [False, True], ids=["sort", "index"])
def test_lease_order_with_many_eligible(api: Api, runtime: Runtime, with_index: bool) -> None:
    """More eligible calls than one poll reads in memory: the same order, whether the queue
    is walked through ix_calls_queue_order (created by the migration) or, without it, sorted."""
    with runtime.db.write() as s:
        if not with_index:
            s.execute(sql_text("DROP INDEX ix_calls_queue_order"))
    state = runtime.state(QueueState)
    with runtime.db.read() as s:
        assert queue_store.has_queue_order_index(s, state) is with_index
    for i in range(12):
        api.consent(num(i))
    cid = api.campaign()
    prio = [1 + (i * 7) % 10 for i in range(12)]
    ids = api.submit(cid, *({"phone": num(i), "priority": prio[i]} for i in range(12)))
    # One submission: the same created_at for all, so ties fall to the call id.
    by_prio = sorted(range(12), key=lambda i: (-prio[i], ids[i]))
    # More than three eligible: on SQLite the poll walks ix_calls_queue_order (the "many"
    # query), when the index exists.
    state.small_eligible = 3
    tasks = api.lease(limit=5)
    assert [t["call_id"] for t in tasks] == [ids[i] for i in by_prio[:5]]


def attempt_each_now(api: Api, clock: FakeClock, n: int) -> None:
    """Numbers 0..n-1: one connected call each now (campaign "first"), then a minute on."""
    first = api.submit(api.campaign(name="first"), *({"phone": num(i)} for i in range(n)))
    done = api.lease(limit=n)
    assert {t["call_id"] for t in done} == set(first)
    assert all(api.outcome(t, "connected").status_code == 200 for t in done)
    clock.advance(timedelta(minutes=1))


@pytest.mark.parametrize("go_share", [1.0, 0.5, 0.001], ids=["reads-short", "default", "reads-3x"])
def test_lease_fills_its_limit_when_most_calls_read_are_deferred(
    api: Api, clock: FakeClock, go_share: float
) -> None:
    """PostgreSQL sizes each read by the share of recent reads that were leased
    (dialer.queue.lease.read_size). A read that turns out short, its calls capped, is followed
    by more rounds: the lease still fills its limit, with the eligible calls behind the capped
    ones, and the capped ones are deferred, not leased. The pass's share is remembered."""
    state = api.runtime.state(QueueState)
    state.go_share = go_share
    for i in range(10):
        api.consent(num(i))
    # Numbers 0-4: one attempt each now, so the daily cap defers their later calls.
    attempt_each_now(api, clock, 5)
    state.go_share = go_share
    capped = [cid for name in ("capped-a", "capped-b") for cid in api.submit(
        api.campaign(name=name), *({"phone": num(i), "priority": 9} for i in range(5)))]
    free = api.submit(api.campaign(name="free"),
                      *({"phone": num(i), "priority": 1} for i in range(5, 10)))
    tasks = api.lease(limit=5)
    assert sorted(t["call_id"] for t in tasks) == sorted(free)
    assert parked(api, capped) == [True] * 10
    if api.runtime.db.dialect == "postgresql":
        # The pass's share of reads leased moved the estimate (down from "all of them").
        assert state.go_share != go_share
        assert state.go_share < 1.0


def parked(api: Api, ids: list[str]) -> list[bool]:
    with api.runtime.db.read() as s:
        got = {i: p for i, p in s.execute(select(Call.id, Call.parked).where(Call.id.in_(ids)))}
    return [got[i] for i in ids]


@pytest.mark.parametrize("unpark_limit", [1000, 2], ids=["all", "two-per-poll"])
def test_parked_calls_rejoin_the_queue_order_when_due(
    api: Api, clock: FakeClock, unpark_limit: int
) -> None:
    """Deferred calls leave the queue order (parked) and rejoin it once due, in order: with
    many eligible calls (the queue-order walk), the due ones come back merged by priority
    with the calls that were never deferred; when more are due than one poll unparks, the
    highest priorities among those due at the same instant rejoin first."""
    state = api.runtime.state(QueueState)
    state.small_eligible = 3
    state.unpark_limit = unpark_limit
    for i in range(12):
        api.consent(num(i))
    # Numbers 0-5: one attempt each now, so the daily cap defers their other calls by 24 h.
    attempt_each_now(api, clock, 6)
    prio = [1 + (i * 7) % 10 for i in range(12)]
    a = api.submit(api.campaign(name="a"), *({"phone": num(i), "priority": prio[i]}
                                            for i in range(6)))
    clock.advance(timedelta(minutes=1))
    b = api.submit(api.campaign(name="b"), *({"phone": num(i), "priority": prio[i]}
                                            for i in range(6, 12)))
    # The walk meets every call of a (numbers capped) first only if it outranks b's.
    tasks = api.lease(limit=2)
    key = {**{a[i]: (-prio[i], 0, a[i]) for i in range(6)},
           **{b[i]: (-prio[i + 6], 1, b[i]) for i in range(6)}}
    b_order = sorted(b, key=key.__getitem__)
    assert [t["call_id"] for t in tasks] == b_order[:2]
    tasks = api.lease(limit=1)
    assert [t["call_id"] for t in tasks] == b_order[2:3]
    # a's calls ranked above b's third were decided: deferred and parked.
    decided = [c for c in a if key[c] < key[b_order[2]]]
    assert decided and parked(api, decided) == [True] * len(decided)
    for c in decided:
        assert ts(api.call(c)["next_eligible_at"]) == T0 + timedelta(hours=24)
    clock.set(T0 + timedelta(hours=24))
    rest = sorted([*b_order[3:], *a], key=key.__getitem__)
    if unpark_limit >= len(decided):
        assert [t["call_id"] for t in api.lease(limit=12)] == rest
    else:
        # Two per poll: the two highest of the due ones join the never-deferred calls.
        joined = sorted(decided, key=key.__getitem__)[:2]
        never = [c for c in rest if c not in decided]
        got = [t["call_id"] for t in api.lease(limit=5)]
        assert got == sorted([*joined, *never], key=key.__getitem__)[:5]
        left_over = [c for c in rest if c not in got]
        got += [t["call_id"] for t in api.lease(limit=12)]
        got += [t["call_id"] for t in api.lease(limit=12)]
        assert sorted(got) == sorted(rest)
        assert not any(parked(api, left_over))
    assert api.lease(limit=12) == []


def test_a_not_before_ahead_parks_the_call_until_then(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    api.consent(num(2))
    cid = api.campaign()
    later, now = api.submit(
        cid, {"phone": num(1), "priority": 9, "not_before": iso(T0 + timedelta(hours=1))},
        {"phone": num(2), "priority": 1},
    )
    assert parked(api, [later, now]) == [True, False]
    assert [t["call_id"] for t in api.lease()] == [now]
    clock.advance(timedelta(hours=1))
    [task] = api.lease()
    assert task["call_id"] == later
    assert parked(api, [later]) == [False]
    # Released, it is queued again, in the queue order at once.
    assert api.release(task).status_code == 200
    assert parked(api, [later]) == [False]
    assert [t["call_id"] for t in api.lease()] == [later]


@pytest.mark.parametrize(
    "body",
    [
        {"dialer_id": "d", "limit": 0},
        {"dialer_id": "d", "limit": 101},
        {"dialer_id": "d", "lease_seconds": 14},
        {"dialer_id": "d", "lease_seconds": 901},
        {"dialer_id": ""},
        {"limit": 5},
        {"dialer_id": "d", "extra": 1},
    ],
)
def test_lease_validation(api: Api, body: dict[str, Any]) -> None:
    r = api.client.post("/v1/queue/lease", json=body, headers=api.dialer)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


def test_lease_limit_and_bounds(api: Api) -> None:
    for i in range(3):
        api.consent(num(i))
    api.submit(api.campaign(), *({"phone": num(i)} for i in range(3)))
    [one] = api.lease(limit=1, lease_seconds=15)
    assert ts(one["lease_expires_at"]) == T0 + timedelta(seconds=15)
    two = api.lease(limit=100, lease_seconds=900)
    assert len(two) == 2
    assert {ts(t["lease_expires_at"]) for t in two} == {T0 + timedelta(seconds=900)}


def test_lease_never_outlives_the_window(api: Api, clock: FakeClock) -> None:
    for i in (1, 2):
        api.consent(num(i))
    cid = api.campaign()
    clock.set(chicago(24, 20, 59))
    api.submit(cid, {"phone": num(1)})
    [task] = api.lease(lease_seconds=120)
    assert ts(task["lease_expires_at"]) == chicago(24, 21, 0)
    # 10 s before the close: not worth a lease, deferred to the next opening.
    clock.set(chicago(24, 20, 59, 50))
    [late] = api.submit(cid, {"phone": num(2)})
    assert api.lease() == []
    deferred(api, late, "OUTSIDE_CALLING_WINDOW", chicago(25, 8, 0))
    # The first lease ends with the window: its outcome at 21:00 is late (the call may run
    # past the lease): taken with the agent's identification, flagged.
    clock.set(chicago(24, 21, 0))
    r = api.outcome(task, "connected")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["flags"]) == ("completed", ["LATE_OUTCOME"])


def test_task_holds_only_what_the_dialer_needs(api: Api) -> None:
    api.consent(num(1))
    cid = api.campaign(script_id="SCRIPT-9")
    [call] = api.submit(cid, {"phone": num(1), "patient_ref": "MRN-7731", "state": "MO",
                              "postal_code": "63110", "external_id": "enc-778",
                              "not_after": iso(T0 + days(2))})
    r = api.lease_resp()
    [task] = r.json()["tasks"]
    assert set(task) == TASK_FIELDS_API | TASK_FIELDS_EXTRA
    assert task == {
        "call_id": call, "lease_id": task["lease_id"], "lease_expires_at": iso(T0 + timedelta(
            seconds=120)),
        "phone": num(1), "purpose": "discharge_followup", "channel": "autodialed_voice",
        "campaign_id": cid, "provider_name": "Mercy Heart Clinic", "callback_number": CALLBACK,
        "max_duration_seconds": None, "disclosures": ["provider_name", "callback_number",
                                                      "agent_name"],
        "script_id": "SCRIPT-9", "sms_max_chars": None, "attempt": 1, "max_attempts": 3,
        "recording": "forbidden", "identity_identifiers": 2,
        "kind": "call", "text": None, "template_id": None,
    }
    for secret in ("MRN-7731", "enc-778", "63110", '"MO"', "patient", "postal", "external"):
        assert secret not in r.text


# --- release and expiry ----------------------------------------------------------------------


def test_release_refunds_the_attempt(api: Api) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    r = api.release(task)
    assert r.status_code == 200 and r.json() == {"released": True}
    [again] = api.lease()
    assert again["call_id"] == call and again["lease_id"] != task["lease_id"]
    assert again["attempt"] == 1
    assert api.release(task).json()["error"]["code"] == "LEASE_NOT_HELD"
    released, live = api.attempts(num(1))
    assert (released.state, released.counted) == ("released", False)
    assert (live.state, live.counted) == ("live", True)


def test_expired_lease_counts(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease(lease_seconds=60)
    clock.set(ts(task["lease_expires_at"]) or T0)
    assert api.lease() == []  # sweeps the expired lease, then finds the number capped
    c = api.call(call)
    assert (c["status"], c["attempts"], c["last_reason"]) == ("queued", 1, "DAILY_CAP")
    assert ts(c["next_eligible_at"]) == T0 + timedelta(hours=24)
    assert [d["kind"] for d in c["decisions"]] == ["call.leased", "lease.expired",
                                                   "call.deferred"]
    [attempt] = api.attempts(num(1))
    assert (attempt.state, attempt.counted) == ("expired", True)
    # Late, but the call may have been made: taken and flagged, not counted again, and the
    # queued call is completed (it must not be dialled again).
    r = api.outcome(task, "connected")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempts"], r.json()["flags"]) == (
        "completed", 1, ["LATE_OUTCOME"])
    [attempt] = api.attempts(num(1))
    assert (attempt.state, attempt.result, attempt.agent_id, attempt.counted) == (
        "reported", "connected", "A-17", True)
    r = api.outcome(task, "connected")  # reported once only
    assert r.status_code == 409 and r.json()["error"]["code"] == "LEASE_NOT_HELD"


def test_expire_leases_job(api: Api, runtime: Runtime, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    api.lease(lease_seconds=60)
    clock.advance(timedelta(seconds=61))
    assert queue.expire_leases(runtime) == 1
    assert queue.expire_leases(runtime) == 0
    assert api.call(call)["status"] == "queued"


def run_holding_the_write_lock(runtime: Runtime, job: Callable[[Runtime], int]) -> int:
    """Run ``job`` on a thread while this one holds the write lock: SQLite, a job with
    nothing to write finishes without waiting for it (its search is a read transaction); one
    with work waits until the lock is let go. PostgreSQL has no single write lock: the job
    simply runs."""
    if not runtime.db.is_sqlite:
        return job(runtime)
    out: list[int] = []
    worker = threading.Thread(target=lambda: out.append(job(runtime)))
    with runtime.db.write():
        worker.start()
        worker.join(timeout=3)
        finished_under_the_lock = bool(out)
    worker.join(timeout=30)
    assert out
    assert finished_under_the_lock is (out[0] == 0)
    return out[0]


@pytest.mark.parametrize("job", [queue.expire_leases, queue.expire_deadlines,
                                 maintenance.note_expired_consents,
                                 maintenance.purge_past_retention])
def test_jobs_with_nothing_to_do_never_wait_for_the_write_lock(
    api: Api, runtime: Runtime, job: Callable[[Runtime], int]
) -> None:
    api.consent(num(1), expires_at=T0 + days(30))
    api.submit(api.campaign(), {"phone": num(1), "not_after": iso(T0 + days(10))})
    assert run_holding_the_write_lock(runtime, job) == 0


def test_note_expired_consents_job(api: Api, runtime: Runtime, clock: FakeClock) -> None:
    api.consent(num(1), expires_at=T0 + days(1))
    api.consent(num(2))
    assert maintenance.note_expired_consents(runtime) == 0
    clock.advance(days(1))
    assert run_holding_the_write_lock(runtime, maintenance.note_expired_consents) == 1
    assert maintenance.note_expired_consents(runtime) == 0  # once per consent
    with runtime.db.read() as s:
        expired = s.scalar(select(Consent.id).where(Consent.expires_at.is_not(None)))
    assert [e.subject for e in audit_entries(runtime, "consent.expired")] == [
        f"consent:{expired}"
    ]


def test_purge_past_retention_job(api: Api, runtime: Runtime, clock: FakeClock) -> None:
    """Finished calls older than the retention period go, with their attempts; queued calls
    and the audit log stay."""
    api.consent(num(1))
    api.consent(num(2))
    done, waiting = api.submit(api.campaign(), {"phone": num(1), "priority": 9},
                               {"phone": num(2), "priority": 1,
                                "not_before": iso(T0 + days(3000))})
    [task] = api.lease(limit=1)
    assert task["call_id"] == done
    assert api.outcome(task, "connected").status_code == 200
    clock.advance(days(runtime.settings.retention_days) - timedelta(seconds=1))
    assert maintenance.purge_past_retention(runtime) == 0
    clock.advance(timedelta(seconds=2))
    assert run_holding_the_write_lock(runtime, maintenance.purge_past_retention) == 1
    assert maintenance.purge_past_retention(runtime) == 0
    r = api.client.get(f"/v1/calls/{done}", headers=api.mgr)
    assert r.status_code == 404
    assert api.attempts(num(1)) == []
    assert api.call(waiting)["status"] == "queued"
    assert any(e.subject == f"call:{done}" for e in audit_entries(runtime, "call.leased"))
    [purged] = audit_entries(runtime, "retention.purged")
    assert json.loads(purged.payload)["calls"] == 1


# --- outcomes ----------------------------------------------------------------------------


def test_opt_out_withdraws_the_numbers_other_leases(api: Api, runtime: Runtime) -> None:
    # Two live leases to one number need a looser daily cap than the default.
    swap_policy(runtime, "per_day = 1", "per_day = 3")
    api.consent(num(1))
    calls = [api.submit(api.campaign(name=f"c{i}"), {"phone": num(1)})[0] for i in range(3)]
    tasks = api.lease(limit=2)
    assert len(tasks) == 2
    opted, other = tasks
    [queued] = [c for c in calls if c not in {t["call_id"] for t in tasks}]
    r = api.outcome(opted, "opted_out")
    assert r.status_code == 200 and r.json()["status"] == "completed"
    r = api.dial(other)
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONSENT_REVOKED"
    left(api, other["call_id"], "withdrawn", "CONSENT_REVOKED")
    left(api, queued, "withdrawn", "CONSENT_REVOKED")
    hist = api.client.get("/v1/consents", params={"phone": num(1)}, headers=api.mgr).json()
    assert [(rv["source"], rv["withdrawn_calls"]) for rv in hist["revocations"]] == [("agent", 0)]
    assert [c["status"] for c in hist["consents"]] == ["revoked"]
    withdrawn = {a.call_id: a.state for a in api.attempts(num(1))}
    assert withdrawn == {opted["call_id"]: "reported", other["call_id"]: "withdrawn"}
    # The other lease may have been dialled before the opt-out: its outcome is taken.
    r = api.outcome(other, "connected")
    assert r.status_code == 200 and r.json()["flags"] == ["AFTER_REVOCATION"]
    left(api, other["call_id"], "withdrawn", "CONSENT_REVOKED")


def test_wrong_number_revokes(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(name="a"), {"phone": num(1), "priority": 9})
    [other] = api.submit(api.campaign(name="b"), {"phone": num(1)})
    [task] = api.lease()
    assert task["call_id"] == call
    r = api.outcome(task, "wrong_number")
    assert r.status_code == 200 and r.json()["status"] == "completed"
    left(api, other, "withdrawn", "CONSENT_REVOKED")
    hist = api.client.get("/v1/consents", params={"phone": num(1)}, headers=api.mgr).json()
    assert [rv["source"] for rv in hist["revocations"]] == ["wrong_number"]
    dnc = api.client.get(f"/v1/dnc/{num(1)}", headers=api.mgr)
    assert dnc.status_code == 200 and dnc.json()["on_list"] is True
    clock.advance(days(2))
    out = api.check(phone=num(1)).json()
    assert out["allowed"] is False
    assert {r["code"] for r in out["reasons"]} == {"DO_NOT_CALL", "CONSENT_REVOKED"}


def test_agent_id_missing_keeps_the_lease(api: Api, runtime: Runtime) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    for missing in ({"agent_id": ...}, {"agent_name": "  "}, {"disclosed_callback_number": None}):
        r = api.outcome(task, "connected", **missing)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "AGENT_ID_MISSING"
        assert err["details"]["lease_held"] is True
        assert len(err["details"]["fields"]) == 1
    assert api.dial(task).json() == {"go": True}
    [attempt] = api.attempts(num(1))
    assert (attempt.state, attempt.flags) == ("live", ["AGENT_ID_MISSING"])
    rejected = audit_entries(runtime, "outcome.rejected")
    assert len(rejected) == 3
    assert {json.loads(e.payload)["flag"] for e in rejected} == {"AGENT_ID_MISSING"}
    assert all(e.subject == f"call:{call}" for e in rejected)
    r = api.outcome(task, "connected")
    assert r.status_code == 200
    assert r.json() == {"call_id": call, "status": "completed", "attempts": 1,
                        "flags": ["AGENT_ID_MISSING"]}
    [attempt] = api.attempts(num(1))
    assert (attempt.state, attempt.agent_id, attempt.agent_name, attempt.result) == (
        "reported", "A-17", "Dana", "connected")
    assert attempt.flags == ["AGENT_ID_MISSING"]


def test_callback_mismatch(api: Api) -> None:
    api.consent(num(1))
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    r = api.outcome(task, "connected", disclosed_callback_number="+1 314 555 0142")
    assert r.status_code == 422 and r.json()["error"]["code"] == "CALLBACK_MISMATCH"
    r = api.outcome(task, "connected", disclosed_callback_number="(314) 555-0199")
    assert r.status_code == 200 and r.json()["flags"] == ["CALLBACK_MISMATCH"]
    [attempt] = api.attempts(num(1))
    assert attempt.disclosed_callback_number == CALLBACK


def test_prerecorded_ivr_and_duration(api: Api, clock: FakeClock) -> None:
    for i in (1, 2):
        api.consent(num(i))
    cid = api.campaign(channel="prerecorded_voice")
    api.submit(cid, {"phone": num(1)}, {"phone": num(2)})
    tasks = api.lease()
    assert len(tasks) == 2
    for t in tasks:
        assert t["max_duration_seconds"] == 60
        assert t["disclosures"] == ["provider_name", "callback_number"]
    start = clock.now()
    long, short = tasks
    r = api.outcome(long, "voicemail", agent_id="ivr", agent_name="IVR",
                    started_at=iso(start), ended_at=iso(start + timedelta(seconds=61)))
    assert r.status_code == 200 and r.json()["flags"] == ["OVER_DURATION"], r.text
    r = api.outcome(short, "connected", agent_id="IVR", agent_name="IVR",
                    started_at=iso(start), ended_at=iso(start + timedelta(seconds=60)))
    assert r.status_code == 200 and r.json()["flags"] == []


def test_ivr_refused_for_autodialed_voice(api: Api) -> None:
    api.consent(num(1))
    api.submit(api.campaign(channel="autodialed_voice"), {"phone": num(1)})
    [task] = api.lease()
    r = api.outcome(task, "connected", agent_id="ivr", agent_name="IVR")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "AGENT_ID_MISSING"
    assert r.json()["error"]["details"]["fields"] == ["agent_id"]


def test_dial_check_after_revocation(api: Api) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    r = api.dial(task)
    assert r.status_code == 200 and r.json() == {"go": True}
    rv = api.client.post("/v1/consents/revocations", headers=api.mgr,
                         json={"phone": num(1), "source": "web"})
    assert rv.json()["withdrawn_calls"] == 1
    r = api.dial(task)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "CONSENT_REVOKED" and err["details"]["go"] is False
    assert num(1)[-7:] not in r.text
    [attempt] = api.attempts(num(1))
    assert (attempt.state, attempt.counted) == ("withdrawn", True)
    # Dialled after the go, revoked during the call: the outcome is taken with the agent's
    # identification, flagged, and the call stays withdrawn (issue 16).
    r = api.outcome(task, "connected")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["flags"]) == ("withdrawn", ["AFTER_REVOCATION"])
    [attempt] = api.attempts(num(1))
    assert (attempt.state, attempt.counted, attempt.agent_id, attempt.result) == (
        "reported", True, "A-17", "connected")
    left(api, call, "withdrawn", "CONSENT_REVOKED")
    assert api.lease() == []


def test_unknown_lease(api: Api) -> None:
    api.consent(num(1))
    api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    forged = {**task, "lease_id": str(uuid.uuid4())}
    for r in (api.outcome(forged, "connected"), api.release(forged), api.dial(forged)):
        assert r.status_code == 409 and r.json()["error"]["code"] == "LEASE_NOT_HELD"
    missing = {**task, "call_id": str(uuid.uuid4())}
    assert api.outcome(missing, "connected").status_code == 404
    assert api.dial(task).status_code == 200  # the real lease is untouched


# --- preflight --------------------------------------------------------------------------


def test_check_without_reserve(api: Api, clock: FakeClock) -> None:
    api.consent(num(1))
    r = api.check(phone="314 555 0101", state="MO", postal_code="10001")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "allowed": True, "reasons": [], "next_eligible_at": iso(T0),
        "candidate_zones": [{"zone": "America/Chicago", "source": "area_code"},
                            {"zone": "America/New_York", "source": "postal_code"}],
        "reservation_id": None, "recording": "forbidden", "identity_identifiers": 2,
    }
    out = api.check(phone=num(1), state="TX").json()
    assert out["candidate_zones"] == [{"zone": "America/Chicago", "source": "area_code"},
                                      {"zone": "America/Denver", "source": "state"}]
    out = api.check(phone=num(1), at=iso(chicago(24, 6, 0))).json()
    assert out["allowed"] is False
    assert [r["code"] for r in out["reasons"]] == ["OUTSIDE_CALLING_WINDOW"]
    assert ts(out["next_eligible_at"]) == chicago(24, 8, 0)
    out = api.check(phone=num(1), at=iso(chicago(26, 12, 0))).json()
    assert [r["code"] for r in out["reasons"]] == ["QUIET_DAY"]
    assert ts(out["next_eligible_at"]) == chicago(27, 8, 0)
    out = api.check(phone=num(2)).json()
    assert (out["allowed"], [r["code"] for r in out["reasons"]], out["next_eligible_at"]) == (
        False, ["NO_CONSENT"], None)
    out = api.check(phone=num(1), purpose="billing").json()
    assert [r["code"] for r in out["reasons"]] == ["PURPOSE_NOT_ALLOWED"]
    out = api.check(phone="12").json()
    assert [r["code"] for r in out["reasons"]] == ["INVALID_PHONE"]
    assert "12" not in out["reasons"][0]["message"]
    with api.runtime.db.read() as s:
        assert s.scalars(select(Attempt)).all() == []


def test_check_with_reserve_counts_at_once(api: Api, runtime: Runtime) -> None:
    api.consent(num(1))
    cid = api.campaign()
    [call] = api.submit(api.campaign(name="other"), {"phone": num(1)})
    for missing, code in (("agent_id", "AGENT_ID_MISSING"), ("agent_name", "AGENT_ID_MISSING"),
                          ("campaign_id", "VALIDATION_ERROR")):
        body = {"phone": num(1), "reserve": True, "agent_id": "A-17", "agent_name": "Dana",
                "campaign_id": cid}
        del body[missing]
        r = api.check(**body)
        assert r.status_code == 422 and r.json()["error"]["code"] == code
    body = {"phone": num(1), "reserve": True, "agent_id": "A-17", "agent_name": "Dana",
            "campaign_id": cid}
    r = api.check(**body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["allowed"] is True and out["reservation_id"]
    again = api.check(**body).json()
    assert (again["allowed"], again["reservation_id"]) == (False, None)
    assert [x["code"] for x in again["reasons"]] == ["DAILY_CAP"]
    assert ts(again["next_eligible_at"]) == T0 + timedelta(hours=24)
    assert api.lease() == []
    deferred(api, call, "DAILY_CAP", T0 + timedelta(hours=24))
    [attempt] = api.attempts(num(1))
    assert (attempt.id, attempt.kind, attempt.state, attempt.counted, attempt.call_id) == (
        out["reservation_id"], "manual", "manual", True, None)
    assert (attempt.agent_id, attempt.agent_name, attempt.campaign_id) == ("A-17", "Dana", cid)
    assert attempt.disclosed_callback_number == CALLBACK
    [entry] = audit_entries(runtime, "attempt.reserved")
    assert entry.subject == f"attempt:{out['reservation_id']}"
    unknown = api.check(**{**body, "phone": num(3), "campaign_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    refused = api.check(**{**body, "phone": num(3)}).json()
    assert (refused["allowed"], refused["reservation_id"]) == (False, None)
    assert len(api.attempts(num(3))) == 0


# --- roles ------------------------------------------------------------------------------


def test_roles(api: Api) -> None:
    lease = {"dialer_id": "d", "limit": 1}
    check = {"phone": num(1), "purpose": "discharge_followup"}
    for role, lease_status, check_status in (
        ("compliance", 403, 403), ("campaign_manager", 403, 200), ("dialer", 200, 200),
        ("admin", 200, 200),
    ):
        h = api.keys[role]
        assert api.client.post("/v1/queue/lease", json=lease, headers=h).status_code == (
            lease_status), role
        assert api.client.post("/v1/check", json=check, headers=h).status_code == (
            check_status), role
    r = api.client.post("/v1/queue/lease", json=lease, headers=api.keys["compliance"])
    assert r.json()["error"]["code"] == "FORBIDDEN"
    assert api.client.post("/v1/queue/lease", json=lease).status_code == 401
    fake = {"call_id": str(uuid.uuid4()), "lease_id": str(uuid.uuid4())}
    r = api.client.post(f"/v1/queue/{fake['call_id']}/outcome", headers=api.mgr,
                        json={"lease_id": fake["lease_id"], "result": "connected"})
    assert r.status_code == 403


# --- batch outcomes ----------------------------------------------------------------------


def test_batch_outcomes_answer_each_item_like_the_single_endpoint(
    api: Api, runtime: Runtime, clock: FakeClock
) -> None:
    """POST /v1/queue/outcomes: one transaction, one answer per item in order, each the
    single-call endpoint's answer (200 body, or its error and status); an opt-out earlier in
    the batch withdraws the number's lease that a later item reports; identification
    problems are flagged and audited with the lease kept."""
    swap_policy(runtime, "per_day = 1", "per_day = 3")
    for i in (1, 2, 3, 4):
        api.consent(num(i))
    cid = api.campaign()
    api.submit(cid, {"phone": num(2)}, {"phone": num(3)}, {"phone": num(4)})
    api.submit(api.campaign(name="b"), {"phone": num(1)})
    api.submit(api.campaign(name="c"), {"phone": num(1)})
    tasks = {t["call_id"]: t for t in api.lease(limit=10)}
    assert len(tasks) == 5
    by_phone: dict[str, list[dict[str, Any]]] = {}
    for t in tasks.values():
        by_phone.setdefault(t["phone"], []).append(t)
    opt, other = by_phone[num(1)]
    [t2], [t3], [t4] = by_phone[num(2)], by_phone[num(3)], by_phone[num(4)]

    def item(t: dict[str, Any], result: str, **kw: Any) -> dict[str, Any]:
        body = {"call_id": t["call_id"], "lease_id": t["lease_id"], "agent_id": "A-17",
                "agent_name": "Dana", "disclosed_callback_number": CALLBACK,
                "result": result, "started_at": iso(clock.now()),
                "ended_at": iso(clock.now() + timedelta(seconds=30))}
        body.update(kw)
        return body

    forged = {**item(t3, "connected"), "lease_id": str(uuid.uuid4())}
    r = api.client.post("/v1/queue/outcomes", headers=api.dialer, json={"outcomes": [
        item(t2, "connected"),
        item(opt, "opted_out"),
        item(other, "connected"),           # withdrawn by the opt-out just before: late
        forged,                              # not this call's lease
        item(t4, "connected", agent_name=" "),
        item(t3, "no_answer"),
    ]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["call_id"] for x in res] == [t2["call_id"], opt["call_id"], other["call_id"],
                                           t3["call_id"], t4["call_id"], t3["call_id"]]
    assert res[0] == {"call_id": t2["call_id"], "ok": True, "status": "completed",
                      "attempts": 1, "flags": [], "http_status": None, "error": None}
    assert (res[1]["ok"], res[1]["status"]) == (True, "completed")
    assert (res[2]["ok"], res[2]["status"], res[2]["flags"]) == (
        True, "withdrawn", ["AFTER_REVOCATION"])
    assert (res[3]["ok"], res[3]["http_status"], res[3]["error"]["code"]) == (
        False, 409, "LEASE_NOT_HELD")
    assert (res[4]["ok"], res[4]["http_status"], res[4]["error"]["code"]) == (
        False, 422, "AGENT_ID_MISSING")
    assert res[4]["error"]["details"] == {"fields": ["agent_name"], "lease_held": True}
    assert (res[5]["ok"], res[5]["status"], res[5]["attempts"]) == (True, "queued", 1)
    left(api, other["call_id"], "withdrawn", "CONSENT_REVOKED")
    # The flagged item's lease is still held, and the single endpoint finishes it.
    [a4] = api.attempts(num(4))
    assert (a4.state, a4.flags) == ("live", ["AGENT_ID_MISSING"])
    assert len(audit_entries(runtime, "outcome.rejected")) == 1
    r1 = api.outcome(t4, "connected")
    assert r1.status_code == 200 and r1.json()["flags"] == ["AGENT_ID_MISSING"]
    # Every reported attempt is in the call log with its agent.
    log = api.client.get("/v1/call-log", headers=api.keys["compliance"]).json()["items"]
    reported = {(x["call_id"], x["result"], x["agent_id"]) for x in log if x["result"]}
    assert {(t2["call_id"], "connected", "A-17"), (opt["call_id"], "opted_out", "A-17"),
            (t3["call_id"], "no_answer", "A-17")} <= reported


def test_batch_outcomes_validation(api: Api) -> None:
    one = {"call_id": str(uuid.uuid4()), "lease_id": str(uuid.uuid4()), "result": "connected",
           "agent_id": "A", "agent_name": "B", "disclosed_callback_number": CALLBACK}
    for body in ({"outcomes": []}, {"outcomes": [one] * 101}, {"outcomes": [{**one, "x": 1}]},
                 {"outcomes": [{**one, "result": "maybe"}]}, {}):
        r = api.client.post("/v1/queue/outcomes", headers=api.dialer, json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR", body
    r = api.client.post("/v1/queue/outcomes", headers=api.dialer, json={"outcomes": [one]})
    assert r.status_code == 200
    assert r.json()["results"][0]["http_status"] == 404
    bad_times = {**one, "started_at": "2026-11-24T17:00:00Z", "ended_at": "2026-11-24T16:00:00Z"}
    r = api.client.post("/v1/queue/outcomes", headers=api.dialer, json={"outcomes": [bad_times]})
    assert r.json()["results"][0]["error"]["code"] == "VALIDATION_ERROR"
    for role, status in (("compliance", 403), ("campaign_manager", 403)):
        r = api.client.post("/v1/queue/outcomes", headers=api.keys[role], json={"outcomes": [one]})
        assert r.status_code == status


# --- issue 16: late outcomes, and prerecorded calls without times ---------------------------


def test_prerecorded_outcome_without_times_is_flagged_duration_unknown(
    api: Api, clock: FakeClock
) -> None:
    for i in (1, 2, 3):
        api.consent(num(i))
    api.submit(api.campaign(channel="prerecorded_voice"),
               {"phone": num(1)}, {"phone": num(2)}, {"phone": num(3)})
    a, b, c = api.lease()
    start = iso(clock.now())
    for task, fields in ((a, {"started_at": ..., "ended_at": ...}),
                         (b, {"started_at": start, "ended_at": ...}),
                         (c, {"started_at": None, "ended_at": start})):
        r = api.outcome(task, "voicemail", agent_id="ivr", agent_name="IVR", **fields)
        assert r.status_code == 200, r.text
        assert r.json()["flags"] == ["DURATION_UNKNOWN"]
    assert {tuple(x.flags) for x in api.attempts(num(1))} == {("DURATION_UNKNOWN",)}
    # Not for the other channels (their length is not limited).
    api.consent(num(4))
    api.submit(api.campaign(name="voice"), {"phone": num(4)})
    [t] = api.lease()
    r = api.outcome(t, "connected", started_at=..., ended_at=...)
    assert r.status_code == 200 and r.json()["flags"] == []


def test_a_late_outcome_never_takes_a_re_leased_call(
    api: Api, clock: FakeClock, runtime: Runtime
) -> None:
    swap_policy(runtime, "per_day = 1", "per_day = 3")
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [first] = api.lease(lease_seconds=30)
    clock.advance(timedelta(seconds=31))
    [second] = api.lease()  # sweeps the first lease, leases the call again
    assert second["call_id"] == call and second["lease_id"] != first["lease_id"]
    # The first lease's late result: recorded and flagged; the new lease is untouched.
    r = api.outcome(first, "no_answer")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempts"], r.json()["flags"]) == (
        "leased", 2, ["LATE_OUTCOME"])
    assert api.dial(second).status_code == 200
    r = api.outcome(second, "busy")
    assert r.status_code == 200 and r.json()["flags"] == [] and r.json()["attempts"] == 2
    states = sorted((x.state, x.result, tuple(x.flags)) for x in api.attempts(num(1)))
    assert states == [("reported", "busy", ()), ("reported", "no_answer", ("LATE_OUTCOME",))]
    # A lease released undialled, or a forged one, stays LEASE_NOT_HELD.
    [third] = api.lease()
    assert api.release(third).status_code == 200
    for t in (third, {**third, "lease_id": str(uuid.uuid4())}):
        r = api.outcome(t, "connected")
        assert r.status_code == 409 and r.json()["error"]["code"] == "LEASE_NOT_HELD"


def test_a_late_opt_out_withdraws_the_re_leased_call(
    api: Api, clock: FakeClock, runtime: Runtime
) -> None:
    swap_policy(runtime, "per_day = 1", "per_day = 3")
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [first] = api.lease(lease_seconds=30)
    clock.advance(timedelta(seconds=31))
    [second] = api.lease()
    r = api.outcome(first, "opted_out")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["flags"]) == ("withdrawn", ["LATE_OUTCOME"])
    left(api, call, "withdrawn", "CONSENT_REVOKED")
    r = api.dial(second)
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONSENT_REVOKED"
    assert api.lease() == []


def test_a_late_outcome_in_a_batch_missing_identification_stays_open(
    api: Api, clock: FakeClock
) -> None:
    api.consent(num(1))
    [call] = api.submit(api.campaign(), {"phone": num(1)})
    [task] = api.lease()
    api.client.post("/v1/consents/revocations", headers=api.mgr,
                    json={"phone": num(1), "source": "letter"})

    def item(**kw: Any) -> dict[str, Any]:
        return {"call_id": call, "lease_id": task["lease_id"], "agent_id": "A-17",
                "agent_name": "Dana", "disclosed_callback_number": CALLBACK,
                "result": "connected", **kw}

    r = api.client.post("/v1/queue/outcomes", headers=api.dialer,
                        json={"outcomes": [item(agent_name=" "), item(), item()]})
    res = r.json()["results"]
    assert [(x["ok"], x["http_status"]) for x in res] == [(False, 422), (True, None),
                                                          (False, 409)]
    assert res[1]["flags"] == ["AGENT_ID_MISSING", "AFTER_REVOCATION"]
    [a] = api.attempts(num(1))
    assert (a.state, a.agent_name, a.result) == ("reported", "Dana", "connected")
    assert api.call(call)["status"] == "withdrawn"
