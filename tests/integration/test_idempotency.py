"""Idempotency-Key (API.md "Idempotency", issue 20 point 2), on both databases.

* a replay for every endpoint API.md lists (that this server has): the first answer again,
  ``Idempotent-Replayed: true``, and nothing done twice (no audit entry, no row);
* another body, path or method with the same key: 422 ``IDEMPOTENCY_KEY_REUSED``;
* scoped to the API key; a malformed key is refused;
* two identical requests at once, from real threads: one effect, and every answer is the
  first answer or 409 ``IDEMPOTENCY_IN_PROGRESS`` (then a retry gets the first answer);
* a claim whose process died is taken over once stale; records past their time are purged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from config.clock import FakeClock
from core import idempotency
from core.models import ApiKey, AuditEntry, Consent, IdempotencyRecord
from core.runtime import Runtime
from tests.conftest import T0
from tests.helpers import CALLBACK, campaign_body, consent_body, days

Keys = dict[str, dict[str, str]]
PHONES = [f"+1314555{n:04d}" for n in range(200, 230)]


def _audit_count(rt: Runtime) -> int:
    with rt.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


class World:
    def __init__(self, client: TestClient, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self.phones = iter(PHONES)

    @property
    def mgr(self) -> dict[str, str]:
        return self.keys["campaign_manager"]

    @property
    def dialer(self) -> dict[str, str]:
        return self.keys["dialer"]

    def phone(self) -> str:
        p = next(self.phones)
        r = self.client.post("/v1/consents", json=consent_body(T0 - days(20), p),
                             headers=self.mgr)
        assert r.status_code == 201, r.text
        return p

    def campaign(self) -> str:
        r = self.client.post("/v1/campaigns", json=campaign_body(calling_window=None),
                             headers=self.mgr)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def leased(self) -> dict[str, Any]:
        cid = self.campaign()
        row = {"external_id": f"x-{uuid.uuid4().hex[:8]}", "phone": self.phone()}
        r = self.client.post(f"/v1/campaigns/{cid}/calls", json=[row], headers=self.mgr)
        assert r.json()["results"][0]["status"] == "queued", r.text
        r = self.client.post("/v1/queue/lease", json={"dialer_id": "d", "limit": 1},
                             headers=self.dialer)
        [task] = r.json()["tasks"]
        return dict(task)

    def outcome_body(self, task: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {"lease_id": task["lease_id"], "agent_id": "A-17", "agent_name": "Dana",
                "disclosed_callback_number": CALLBACK, "result": "connected",
                "started_at": T0.isoformat(), "ended_at": (T0 + timedelta(seconds=40)).isoformat(),
                **kw}


# Each: (world) -> (method, path, request kwargs, role); set up what the request needs.
Case = Callable[[World], tuple[str, dict[str, Any], str]]


def _consent(w: World) -> tuple[str, dict[str, Any], str]:
    return "/v1/consents", {"json": consent_body(T0 - days(3), next(w.phones))}, "campaign_manager"


def _revocation(w: World) -> tuple[str, dict[str, Any], str]:
    return "/v1/consents/revocations", {"json": {
        "phone": w.phone(), "source": "letter", "received_at": T0.isoformat()}}, "campaign_manager"


def _dnc(w: World) -> tuple[str, dict[str, Any], str]:
    return "/v1/dnc", {"json": {"phone": next(w.phones), "reason": "asked"}}, "campaign_manager"


def _campaign(w: World) -> tuple[str, dict[str, Any], str]:
    return "/v1/campaigns", {"json": campaign_body()}, "campaign_manager"


def _calls_json(w: World) -> tuple[str, dict[str, Any], str]:
    cid = w.campaign()
    rows = [{"external_id": "e-1", "phone": w.phone()}, {"external_id": "e-2", "phone": "12"}]
    return f"/v1/campaigns/{cid}/calls", {"json": rows}, "campaign_manager"


def _calls_csv(w: World) -> tuple[str, dict[str, Any], str]:
    cid = w.campaign()
    csv = f"external_id,phone\ne-1,{w.phone()}\n"
    return f"/v1/campaigns/{cid}/calls", {
        "content": csv.encode(), "headers": {"Content-Type": "text/csv"}}, "campaign_manager"


def _calls_upload(w: World) -> tuple[str, dict[str, Any], str]:
    cid = w.campaign()
    csv = f"external_id,phone\ne-1,{w.phone()}\n"
    return f"/v1/campaigns/{cid}/calls/upload", {
        "content": csv.encode(), "headers": {"Content-Type": "text/csv"}}, "campaign_manager"


def _outcome(w: World) -> tuple[str, dict[str, Any], str]:
    task = w.leased()
    return f"/v1/queue/{task['call_id']}/outcome", {"json": w.outcome_body(task)}, "dialer"


def _outcome_missing_agent(w: World) -> tuple[str, dict[str, Any], str]:
    # The 422 AGENT_ID_MISSING flags the attempt: a replay flags nothing more.
    task = w.leased()
    return f"/v1/queue/{task['call_id']}/outcome", {
        "json": w.outcome_body(task, agent_id=None)}, "dialer"


def _outcomes(w: World) -> tuple[str, dict[str, Any], str]:
    task = w.leased()
    item = {"call_id": task["call_id"], **w.outcome_body(task, result="no_answer")}
    return "/v1/queue/outcomes", {"json": {"outcomes": [item]}}, "dialer"


def _release(w: World) -> tuple[str, dict[str, Any], str]:
    task = w.leased()
    return f"/v1/queue/{task['call_id']}/release", {"json": {"lease_id": task["lease_id"]}}, \
        "dialer"


def _reserve(w: World) -> tuple[str, dict[str, Any], str]:
    cid = w.campaign()
    return "/v1/check", {"json": {
        "phone": w.phone(), "purpose": "discharge_followup", "channel": "autodialed_voice",
        "reserve": True, "agent_id": "A-17", "agent_name": "Dana", "campaign_id": cid}}, \
        "campaign_manager"


def _reassigned(w: World) -> tuple[str, dict[str, Any], str]:
    return "/v1/numbers/reassigned", {"json": [
        {"phone": w.phone(), "date": "2026-01-05", "answer": "no",
         "queried_at": T0.isoformat()}]}, "campaign_manager"


def _template(w: World) -> tuple[str, dict[str, Any], str]:
    return "/v1/templates", {"json": {
        "name": "reminder", "channel": "sms", "purpose": "appointment_reminder",
        "text": "{provider_name}: appointment {appointment_date}. Questions: "
                "{callback_number}. Reply STOP to opt out."}}, "campaign_manager"


def _webhook(w: World) -> tuple[str, dict[str, Any], str]:
    # A public address literal: allowed without a DNS look-up; nothing is delivered here.
    return "/v1/webhooks", {"json": {
        "url": "https://93.184.216.34/hooks/callgate", "events": ["consent.revoked"],
        "description": "crm"}}, "admin"


def _sms_stop(w: World) -> tuple[str, dict[str, Any], str]:
    # A STOP revokes and queues one confirmation: a replay must do neither again.
    return "/v1/sms/inbound", {"json": {
        "message_id": f"m-{uuid.uuid4().hex[:8]}", "from": w.phone(), "to": CALLBACK,
        "body": "STOP", "received_at": T0.isoformat()}}, "dialer"


CASES: dict[str, Case] = {
    "consent": _consent, "revocation": _revocation, "dnc": _dnc, "campaign": _campaign,
    "calls_json": _calls_json, "calls_csv": _calls_csv, "calls_upload": _calls_upload,
    "outcome": _outcome, "outcome_agent_id_missing": _outcome_missing_agent,
    "outcomes_batch": _outcomes, "release": _release, "check_reserve": _reserve,
    "reassigned": _reassigned, "template": _template, "webhook": _webhook,
    "sms_inbound_stop": _sms_stop,
}


@pytest.mark.parametrize("name", list(CASES))
def test_replay_answers_the_first_answer_and_does_nothing_twice(
    client: TestClient, keys: Keys, runtime: Runtime, name: str
) -> None:
    w = World(client, keys)
    path, kw, role = CASES[name](w)
    headers = {**keys[role], **kw.pop("headers", {}), **_key()}
    first = client.post(path, headers=headers, **kw)
    assert first.status_code < 500, first.text
    assert "idempotent-replayed" not in first.headers
    if name == "outcome_agent_id_missing":
        assert first.status_code == 422 and first.json()["error"]["code"] == "AGENT_ID_MISSING"
    else:
        assert first.status_code in (200, 201), first.text
    entries = _audit_count(runtime)
    again = client.post(path, headers=headers, **kw)
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert _audit_count(runtime) == entries  # nothing done (or logged) a second time
    # The same key with another body is refused.
    other = client.post(path, headers={**headers, "Content-Type": "application/json"},
                        json={"something": "else", "reserve": True})
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_one_consent_for_two_identical_posts(client: TestClient, keys: Keys,
                                             runtime: Runtime) -> None:
    body = consent_body(T0 - days(3), PHONES[0])
    headers = {**keys["campaign_manager"], **_key()}
    a = client.post("/v1/consents", json=body, headers=headers)
    b = client.post("/v1/consents", json=body, headers=headers)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Consent)) == 1
    # Without a key, the same POST is a new consent (API.md: the key is the client's choice).
    assert client.post("/v1/consents", json=body, headers=keys["campaign_manager"]).json()[
        "id"] != a.json()["id"]


def test_key_is_scoped_to_the_api_key_and_the_path(client: TestClient, keys: Keys) -> None:
    k = _key()
    body = campaign_body()
    a = client.post("/v1/campaigns", json=body, headers={**keys["campaign_manager"], **k})
    b = client.post("/v1/campaigns", json=body, headers={**keys["admin"], **k})
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and "idempotent-replayed" not in b.headers
    c = client.post("/v1/dnc", json={"phone": PHONES[1], "reason": "x"},
                    headers={**keys["campaign_manager"], **k})
    assert c.status_code == 422 and c.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize("bad", [b"", b"x" * 256, "caf\u00e9".encode(), b"tab\there"])
def test_malformed_key_is_refused(client: TestClient, keys: Keys, bad: bytes) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (k.encode(), v.encode()) for k, v in keys["campaign_manager"].items()]
    r = client.post("/v1/campaigns", json=campaign_body(),
                    headers=[*headers, (b"Idempotency-Key", bad)])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert r.json()["error"]["details"][0]["field"] == "header.Idempotency-Key"


def test_a_check_without_reserve_is_not_replayed(client: TestClient, keys: Keys) -> None:
    headers = {**keys["dialer"], **_key()}
    body = {"phone": PHONES[2], "purpose": "discharge_followup", "channel": "autodialed_voice"}
    for _ in range(2):
        r = client.post("/v1/check", json=body, headers=headers)
        assert r.status_code == 200 and "idempotent-replayed" not in r.headers


def test_unauthenticated_requests_never_reach_the_store(client: TestClient,
                                                        runtime: Runtime) -> None:
    r = client.post("/v1/campaigns", json=campaign_body(), headers=_key())
    assert r.status_code == 401
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def _race(n: int, send: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        out[i] = send(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_identical_requests_do_one_thing(app: Any, keys: Keys,
                                                    runtime: Runtime) -> None:
    """Real threads, each with its own client (its own event loop), one key at once."""
    body = consent_body(T0 - days(3), PHONES[3])
    headers = {**keys["campaign_manager"], **_key()}
    clients = [TestClient(app, raise_server_exceptions=False) for _ in range(6)]
    try:
        answers = _race(6, lambda i: clients[i].post("/v1/consents", json=body,
                                                      headers=headers))
        firsts = [a for a in answers if a.status_code == 201]
        others = [a for a in answers if a.status_code != 201]
        assert firsts, [a.text for a in answers]
        assert len({a.content for a in firsts}) == 1  # the first answer, replayed or not
        assert sum("idempotent-replayed" not in a.headers for a in firsts) == 1
        for a in others:
            assert a.status_code == 409, a.text
            assert a.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
        with runtime.db.read() as s:
            assert s.scalar(select(func.count()).select_from(Consent)) == 1
        again = clients[0].post("/v1/consents", json=body, headers=headers)
        assert again.status_code == 201 and again.content == firsts[0].content
        # Different bodies with one key at once: one is done, the others refused.
        k = _key()
        answers = _race(6, lambda i: clients[i].post(
            "/v1/consents", json=consent_body(T0 - days(3), PHONES[10 + i]),
            headers={**keys["campaign_manager"], **k}))
        codes = sorted(a.status_code for a in answers)
        assert codes.count(201) == 1, [a.text for a in answers]
        for a in answers:
            if a.status_code != 201:
                assert (a.status_code, a.json()["error"]["code"]) in {
                    (422, "IDEMPOTENCY_KEY_REUSED"), (409, "IDEMPOTENCY_IN_PROGRESS")}
        with runtime.db.read() as s:
            assert s.scalar(select(func.count()).select_from(Consent)) == 2
    finally:
        for c in clients:
            c.close()


def test_claims_race_in_the_store(runtime: Runtime) -> None:
    """The store alone, many threads claiming one key at once: exactly one wins."""
    now = runtime.clock.now()
    answers = _race(8, lambda i: idempotency.claim(
        runtime.db, "key-1", "k", "fp", now, stale_seconds=600, keep_hours=24))
    assert sum(a is None for a in answers) == 1
    assert all(a.state == "running" for a in answers if a is not None)


def test_stale_claim_is_taken_over_and_old_records_purged(runtime: Runtime,
                                                          clock: FakeClock) -> None:
    db = runtime.db
    t = clock.now()
    assert idempotency.claim(db, "key-1", "k", "fp", t, stale_seconds=600, keep_hours=24) is None
    # Still running, not stale: in progress; another body: the stored fingerprint.
    held = idempotency.claim(db, "key-1", "k", "fp", t + timedelta(seconds=5),
                             stale_seconds=600, keep_hours=24)
    assert held is not None and held.state == "running"
    # Its process died: after the stale time the same request runs again (one taker).
    later = t + timedelta(seconds=601)
    answers = _race(4, lambda i: idempotency.claim(db, "key-1", "k", "fp", later,
                                                   stale_seconds=600, keep_hours=24))
    assert sum(a is None for a in answers) == 1
    idempotency.complete(db, "key-1", "k", later, 201, "application/json", b"{}")
    done = idempotency.claim(db, "key-1", "k", "fp", later, stale_seconds=600, keep_hours=24)
    assert done is not None and (done.state, done.status, done.body) == ("done", 201, b"{}")
    assert idempotency.purge(db, later + timedelta(hours=23), 24) == 0
    assert idempotency.purge(db, later + timedelta(hours=25), 24) == 1


def test_a_request_running_on_another_instance_is_in_progress(
    client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """The claim is in the database: a request with the same key that another instance is
    still running (its claim committed, no answer yet) gets 409 here; once it is answered,
    the answer it stored is replayed here."""
    body = b'{"phone": "+1 314 555 0240", "reason": "asked"}'
    headers = {**keys["campaign_manager"], "Content-Type": "application/json",
               "Idempotency-Key": "other-instance-1"}
    with runtime.db.read() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.name == "test-campaign_manager"))
    assert key_id
    fp = idempotency.fingerprint("POST", "/v1/dnc", b"", body)
    assert idempotency.claim(runtime.db, key_id, "other-instance-1", fp, runtime.clock.now(),
                             stale_seconds=600, keep_hours=24) is None
    r = client.post("/v1/dnc", content=body, headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert r.headers["retry-after"] == "1"
    idempotency.complete(runtime.db, key_id, "other-instance-1", runtime.clock.now(), 201,
                         "application/json", b'{"stored": true}')
    r = client.post("/v1/dnc", content=body, headers=headers)
    assert r.status_code == 201 and r.json() == {"stored": True}
    assert r.headers["idempotent-replayed"] == "true"


def test_a_streamed_body_over_the_limit_is_413_and_keeps_no_key(
    client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 8192  # 160 KiB, no Content-Length: the gate counts as it reads

    r = client.post("/v1/consents", content=chunks(),
                    headers={**keys["campaign_manager"], **_key(),
                             "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_an_error_answer_below_500_is_kept(client: TestClient, keys: Keys) -> None:
    """A 404 (no such campaign) is the answer to that request: replayed as it was."""
    headers = {**keys["campaign_manager"], **_key()}
    path = f"/v1/campaigns/{uuid.uuid4()}/calls"
    first = client.post(path, json=[{"external_id": "a", "phone": PHONES[5]}], headers=headers)
    again = client.post(path, json=[{"external_id": "a", "phone": PHONES[5]}], headers=headers)
    assert first.status_code == again.status_code == 404
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
