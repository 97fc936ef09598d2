"""The event outbox and the feed (API.md "Webhooks and events"): an event is written in the
transaction of its change (none for a rolled-back one), every revocation path emits
``consent.revoked``, events carry no patient reference or clinical data, the feed pages by
cursor, long-polls, and never skips an event that committed late (PostgreSQL, threads)."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from consent.schemas import RevocationIn
from consent.service import _revoke, revoke
from core import events
from core.keys import Role
from core.models import Event
from core.runtime import Runtime
from tests.conftest import PG_URL, T0
from tests.helpers import (
    PHONE,
    PHONE_DIGITS,
    campaign_body,
    consent_body,
    identity,
    sqlite_only,
)


def all_events(rt: Runtime) -> list[Event]:
    with rt.db.read() as s:
        return list(s.scalars(select(Event).order_by(Event.id)))


def feed(client: Any, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = client.get("/v1/events", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --- the outbox ----------------------------------------------------------------------------------


def test_a_rolled_back_unit_leaves_no_event(runtime: Runtime, keys: dict[str, Any]) -> None:
    who = identity(runtime, Role.admin)
    with pytest.raises(RuntimeError), runtime.write(who) as uow:
        uow.emit("dnc.added", {"dnc_id": "x", "phone": PHONE, "source": "manual"},
                 phone=PHONE)
        raise RuntimeError("the change fails after its event")
    # A whole revocation (consent.revoked, dnc.added emitted) that fails before commit.
    with pytest.raises(RuntimeError), runtime.write(who) as uow:
        _revoke(uow, PHONE, "letter", uow.now, None)
        assert uow.session.info.get("callgate_events_pending")  # it did emit
        raise RuntimeError("fails after emitting")
    assert all_events(runtime) == []
    # The same, committed: its events are there.
    with runtime.write(who) as uow:
        _revoke(uow, PHONE, "letter", uow.now, None)
    assert [e.type for e in all_events(runtime)] == ["dnc.added", "consent.revoked"]


def test_unknown_event_type_is_refused(runtime: Runtime, keys: dict[str, Any]) -> None:
    with pytest.raises(ValueError), runtime.write("system:test") as uow:
        uow.emit("consent.deleted", {})


def _lease_one(client: Any, keys: dict[str, Any], phone_raw: str) -> dict[str, Any]:
    mgr, dialer = keys["campaign_manager"], keys["dialer"]
    assert client.post("/v1/consents", json=consent_body(T0 - timedelta(days=5), phone_raw),
                       headers=mgr).status_code == 201
    cid = client.post("/v1/campaigns", json=campaign_body(calling_window=None),
                      headers=mgr).json()["id"]
    r = client.post(f"/v1/campaigns/{cid}/calls", headers=mgr, json=[
        {"external_id": f"enc-{phone_raw[-4:]}", "patient_ref": "MRN-1001",
         "phone": phone_raw, "state": "MO"}])
    assert r.json()["accepted"] == 1, r.text
    tasks = client.post("/v1/queue/lease", json={"dialer_id": "d"}, headers=dialer).json()
    return dict(tasks["tasks"][0])


def _outcome(client: Any, keys: dict[str, Any], task: dict[str, Any], result: str) -> None:
    r = client.post(f"/v1/queue/{task['call_id']}/outcome", headers=keys["dialer"], json={
        "lease_id": task["lease_id"], "agent_id": "A-17", "agent_name": "Dana",
        "disclosed_callback_number": "+13145550199", "started_at": T0.isoformat(),
        "ended_at": (T0 + timedelta(seconds=30)).isoformat(), "result": result})
    assert r.status_code == 200, r.text


def test_every_revocation_path_emits_and_no_event_holds_patient_data(
    client: Any, runtime: Runtime, keys: dict[str, Any],
) -> None:
    mgr, admin = keys["campaign_manager"], keys["admin"]
    # API revocation.
    assert client.post("/v1/consents", json=consent_body(T0 - timedelta(days=5)),
                       headers=mgr).status_code == 201
    assert client.post("/v1/consents/revocations", json={
        "phone": "314-555-0100", "source": "letter"}, headers=mgr).status_code == 201
    # An opt-out on a call, a wrong number on another.
    _outcome(client, keys, _lease_one(client, keys, "+1 314 555 0101"), "opted_out")
    _outcome(client, keys, _lease_one(client, keys, "+1 314 555 0102"), "wrong_number")
    # A completed call; do-not-call added by hand, then lifted.
    _outcome(client, keys, _lease_one(client, keys, "+1 314 555 0103"), "connected")
    assert client.post("/v1/dnc", json={"phone": "3145550104", "reason": "MRN-1001 asked"},
                       headers=mgr).status_code == 201
    assert client.request("DELETE", "/v1/dnc/%2B13145550104", headers=admin).status_code == 200
    # A row refused at intake (no consent).
    cid = client.post("/v1/campaigns", json=campaign_body(), headers=mgr).json()["id"]
    client.post(f"/v1/campaigns/{cid}/calls", headers=mgr, json=[
        {"external_id": "enc-9", "patient_ref": "MRN-1001", "phone": "3145550109"}])

    page = feed(client, admin, limit=500)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in page["items"]:
        by_type.setdefault(item["type"], []).append(item["data"])
    revoked = {(d["phone"], d["source"]) for d in by_type["consent.revoked"]}
    assert revoked == {("+13145550100", "letter"), ("+13145550101", "agent"),
                       ("+13145550102", "wrong_number")}
    assert {d["phone"] for d in by_type["dnc.added"]} >= {"+13145550100", "+13145550104"}
    assert [d["phone"] for d in by_type["dnc.lifted"]] == ["+13145550104"]
    # An opt-out and a wrong number complete their call too.
    assert sorted(d["result"] for d in by_type["call.completed"]) == [
        "connected", "opted_out", "wrong_number"]
    assert [d["codes"] for d in by_type["call.refused"]] == [["NO_CONSENT"]]
    assert len(by_type["consent.created"]) == 4
    # No patient reference anywhere; numbers only in revocation and do-not-call events.
    for item in page["items"]:
        text = json.dumps(item)
        assert "MRN" not in text, item
        if item["type"] not in ("consent.revoked", "dnc.added", "dnc.lifted"):
            assert "555010" not in text.replace("555****", ""), item
    # The feed's read of numbers is audited, by pseudonym.
    with runtime.db.read() as s:
        from core.models import AuditEntry
        kinds = [e.subject for e in s.scalars(select(AuditEntry).where(
            AuditEntry.kind == "patient_data.read"))]
    assert "events" in kinds


# --- the feed ------------------------------------------------------------------------------------


def _dnc(client: Any, keys: dict[str, Any], last4: str) -> None:
    r = client.post("/v1/dnc", json={"phone": f"314555{last4}", "reason": "asked"},
                    headers=keys["campaign_manager"])
    assert r.status_code == 201, r.text


def test_feed_pages_by_cursor_and_filters_types(client: Any, keys: dict[str, Any]) -> None:
    admin = keys["admin"]
    for i in range(5):
        _dnc(client, keys, f"01{i:02d}")
    first = feed(client, admin, limit=2)
    assert len(first["items"]) == 2
    rest = feed(client, admin, after=first["next_cursor"], limit=100)
    assert len(rest["items"]) == 3
    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert len(set(ids)) == 5
    end = feed(client, admin, after=rest["next_cursor"])
    assert end["items"] == [] and end["next_cursor"] == rest["next_cursor"]
    none = feed(client, admin, types="consent.revoked")
    assert none["items"] == []
    # The filtered reader's cursor moved past the events of other types ...
    assert none["next_cursor"] == rest["next_cursor"]
    _dnc(client, keys, "0199")
    # ... and still gets what comes after them (none of its type here), and all get it.
    assert feed(client, admin, types="consent.revoked", after=none["next_cursor"])[
        "items"] == []
    assert len(feed(client, admin, after=none["next_cursor"])["items"]) == 1
    assert len(feed(client, admin, types="dnc.added,dnc.lifted")["items"]) == 6
    for bad in ({"after": "x1"}, {"types": "consent.deleted"}, {"wait": 31}, {"limit": 501}):
        r = client.get("/v1/events", params=bad, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR", bad
    assert client.get("/v1/events", headers=keys["compliance"]).status_code == 403


def test_feed_long_poll_returns_when_an_event_commits(
    client: Any, keys: dict[str, Any],
) -> None:
    admin = keys["admin"]
    cursor = feed(client, admin)["next_cursor"]
    # Nothing comes: the wait ends empty.
    assert feed(client, admin, after=cursor, wait=0.3)["items"] == []
    timer = threading.Timer(0.5, _dnc, args=(client, keys, "0177"))
    start = time.monotonic()
    timer.start()
    got = feed(client, admin, after=cursor, wait=25)
    elapsed = time.monotonic() - start
    timer.join()
    assert [i["type"] for i in got["items"]] == ["dnc.added"]
    assert elapsed < 25  # it answered when the event came, not at the end of the wait


@pytest.mark.skipif(not PG_URL, reason="CALLGATE_TEST_POSTGRES_URL not set")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_writers_give_a_gap_free_feed_that_skips_nothing(
    runtime: Runtime, keys: dict[str, Any],
) -> None:
    """Writers whose transactions commit in another order than their ids (each holds its
    transaction open a random while after emitting; one holds it until the reader has read
    20 later ids), a sequencer and readers following the cursor (every type; one type
    through the feed) all at once: each gets every event exactly once, numbered 1..N."""
    writers, per_writer = 8, 15
    total = writers * per_writer + 1  # and the late one
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            rnd = random.Random(n)
            for i in range(per_writer):
                with runtime.write("system:test") as uow:
                    # Every third one of another type: the filtered reader skips it.
                    kind = "call.completed" if i % 3 == 2 else "call.flagged"
                    uow.emit(kind, {"w": n, "i": i}, phone=f"+1314555{n:04d}")
                    events.flush_pending(uow.session)  # its id taken now, committed later
                    time.sleep(rnd.random() * 0.02)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    def sequencer() -> None:
        while not stop.is_set():
            events.sequence(runtime.db)
            time.sleep(0.002)

    def reader() -> None:
        cursor = 0
        while not stop.is_set() or len(seen) < total:
            with runtime.db.read() as s:
                got = events.after(s, cursor, 50)
            for e in got:
                seen.append(e.id)
                assert e.seq == cursor + 1, (e.seq, cursor)  # no gap, no repeat
                cursor = e.seq
            if stop.is_set() and not got:
                events.sequence(runtime.db)
                with runtime.db.read() as s:
                    if not events.after(s, cursor, 1):
                        break

    filtered: list[str] = []
    admin = identity(runtime, Role.admin)

    def filtered_reader() -> None:
        """Through the feed, only call.flagged, its cursor moving past the others."""
        from webhooks import feed as feed_service

        cursor = 0
        while True:
            done = stop.is_set()
            page = feed_service.page(runtime, admin, cursor, ["call.flagged"], 7)
            filtered.extend(i.id for i in page.items)
            cursor = int(page.next_cursor)
            if done and not page.items:
                break

    late_id: list[int] = []

    def late_writer() -> None:
        """Takes its event's id first, then commits only after the reader has read events
        with higher ids: the case a feed that followed ids would skip for ever."""
        try:
            with runtime.write("system:test") as uow:
                uow.emit("call.flagged", {"late": True}, phone="+13145559999")
                events.flush_pending(uow.session)
                from sqlalchemy import text as sql_text
                late_id.append(int(uow.session.execute(sql_text(
                    "SELECT max(id) FROM events")).scalar_one()))
                deadline = time.monotonic() + 30
                while len(seen) < 20 and time.monotonic() < deadline:
                    time.sleep(0.005)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    late = threading.Thread(target=late_writer)
    late.start()
    while not late_id and not errors and late.is_alive():
        time.sleep(0.001)
    assert late_id, errors
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    threads.append(late)
    seq_thread = threading.Thread(target=sequencer)
    read_thread = threading.Thread(target=reader)
    filter_thread = threading.Thread(target=filtered_reader)
    seq_thread.start()
    read_thread.start()
    filter_thread.start()
    for t in threads:
        if t is not late:
            t.start()
    for t in threads:
        t.join()
    stop.set()
    seq_thread.join()
    read_thread.join(timeout=60)
    filter_thread.join(timeout=60)
    assert not errors
    with runtime.db.read() as s:
        ids = set(s.scalars(select(Event.id)))
        assert s.scalar(select(func.max(Event.seq))) == total
    assert len(seen) == total and set(seen) == ids
    with runtime.db.read() as s:
        flagged = {f"evt_{i}" for i in s.scalars(select(Event.id).where(
            Event.type == "call.flagged"))}
    assert len(filtered) == len(flagged) == writers * 10 + 1 and set(filtered) == flagged
    # The late event's id is lower than events read before it: the reader got it anyway,
    # numbered after them.
    with runtime.db.read() as s:
        late_seq = s.scalar(select(Event.seq).where(Event.id == late_id[0]))
        higher_before = s.scalar(select(func.count()).select_from(Event).where(
            Event.id > late_id[0], Event.seq < late_seq))
    assert higher_before and higher_before >= 20
    assert late_id[0] in seen


@sqlite_only
def test_revoke_service_emits_once_per_revocation(runtime: Runtime,
                                                  keys: dict[str, Any]) -> None:
    who = identity(runtime, Role.campaign_manager)
    revoke(runtime, who, RevocationIn(phone="3145550100", source="web"))
    revoked = [e for e in all_events(runtime) if e.type == "consent.revoked"]
    assert len(revoked) == 1
    data = json.loads(revoked[0].data)
    assert data["phone"] == PHONE and data["source"] == "web"
    assert PHONE_DIGITS not in revoked[0].key  # the order key is a pseudonym


def test_a_checkpoint_is_an_event(runtime: Runtime, keys: dict[str, Any]) -> None:
    """API.md: each checkpoint is emitted as an ``audit.checkpoint`` event (size, root_hash,
    note), in the transaction that stores it."""
    from tests.helpers import seal

    with runtime.write("system:test") as uow:
        uow.audit("test.entry", "test", {})
    seal(runtime)
    got = [json.loads(e.data) for e in all_events(runtime) if e.type == "audit.checkpoint"]
    assert got and set(got[-1]) == {"size", "root_hash", "note"}
    assert got[-1]["size"] >= 1 and str(got[-1]["size"]) in got[-1]["note"]


def test_events_past_keeping_go_unless_a_receiver_still_needs_them(
    runtime: Runtime, keys: dict[str, Any], clock: Any,
) -> None:
    from core.models import WebhookDelivery, WebhookSubscription
    from dialer.maintenance import prune_events

    who = identity(runtime, Role.admin)
    with runtime.write(who) as uow:
        for i in range(3):
            uow.emit("dnc.added", {"i": i}, phone=PHONE)
    events.sequence(runtime.db)
    ids = [e.id for e in all_events(runtime)]
    with runtime.write(who) as uow:
        uow.session.add(WebhookSubscription(
            id="w1", url="https://example.org/h", events=["dnc.added"], description="",
            secret="whsec_x", created_at=uow.now, created_by=who.key_id, fanout_seq=3))
        uow.session.flush()
        uow.session.add(WebhookDelivery(
            subscription_id="w1", event_id=ids[1], event_seq=2, type="dnc.added", key="k",
            status="pending", attempts=0, created_at=uow.now, next_attempt_at=uow.now))
    assert prune_events(runtime) == 0  # not old yet
    clock.advance(timedelta(days=runtime.settings.events_keep_days + 1))
    with runtime.write(who) as uow:
        uow.emit("dnc.added", {"i": 3}, phone=PHONE)  # new: kept
    events.sequence(runtime.db)
    assert prune_events(runtime) == 2
    left = [e.id for e in all_events(runtime)]
    assert ids[1] in left and ids[0] not in left and ids[2] not in left and len(left) == 2
    assert prune_events(runtime) == 0
