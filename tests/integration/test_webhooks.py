"""Webhooks (API.md "Webhooks and events"): a real receiver (an HTTP server thread) gets
signed deliveries that the ``standardwebhooks`` library verifies; a receiver that is down
gets everything once back, in order per number; test messages; replays; the delivery log;
SSRF refusals at creation and at delivery."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from config.clock import SystemClock
from config.policy import load_policy
from config.settings import Settings
from core import metrics
from core.db import Database
from core.keys import Role, create_key
from core.runtime import Runtime
from tests.receiver import Receiver, free_port
from webhooks import ssrf
from webhooks.delivery import Sender, new_secret
from webhooks.worker import delivery_stats

FAST = {
    "webhooks_allow_private": True, "webhooks_backoff_base_seconds": 0.1,
    "webhooks_backoff_max_seconds": 0.4, "webhooks_poll_seconds": 0.1,
}


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """The app with its delivery worker, on the wall clock, private receivers allowed."""
    from api.app import create_app

    settings = Settings(database_url=db_url, **FAST)
    db = Database(db_url)
    rt = Runtime(db=db, policy=load_policy(), clock=SystemClock(), settings=settings)
    keys = {}
    for role in Role:
        _, plaintext = create_key(db, role, f"t-{role.value}", rt.clock.now())
        keys[role.value] = {"Authorization": f"Bearer {plaintext}"}
    app = create_app(rt, migrate=False, deliveries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, keys
    db.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def subscribe(client: TestClient, admin: dict[str, str], url: str,
              types: list[str] | None = None) -> dict[str, Any]:
    r = client.post("/v1/webhooks", headers=admin, json={
        "url": url, "events": types or ["consent.revoked", "dnc.added"],
        "description": "test receiver"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def delivery_log(client: TestClient, admin: dict[str, str], webhook_id: str,
                 settled: bool = True) -> list[dict[str, Any]]:
    """The delivery log; with ``settled``, once the worker has recorded every answer the
    receiver has given (it records just after the receiver answers)."""
    import time

    deadline = time.monotonic() + 10
    while True:
        items = client.get(f"/v1/webhooks/{webhook_id}/deliveries?limit=100",
                           headers=admin).json()["items"]
        if not settled or all(d["status"] != "pending" for d in items) \
                or time.monotonic() > deadline:
            return list(items)
        time.sleep(0.05)


def add_dnc(client: TestClient, keys: dict[str, Any], last4: str) -> None:
    r = client.post("/v1/dnc", json={"phone": f"314555{last4}", "reason": "asked"},
                    headers=keys["campaign_manager"])
    assert r.status_code == 201, r.text


def test_revocation_reaches_the_receiver_signed(
    live: tuple[TestClient, dict[str, Any]], receiver: Receiver,
) -> None:
    client, keys = live
    sub = subscribe(client, keys["admin"], receiver.url)
    assert sub["secret"].startswith("whsec_")
    listed = client.get("/v1/webhooks", headers=keys["admin"]).json()["items"]
    assert [w["id"] for w in listed] == [sub["id"]] and "secret" not in listed[0]
    r = client.post("/v1/consents/revocations", headers=keys["campaign_manager"],
                    json={"phone": "314-555-0100", "source": "web"})
    assert r.status_code == 201
    got = receiver.wait_for(2)
    types = sorted(m.json["type"] for m in got)
    assert types == ["consent.revoked", "dnc.added"]
    for m in got:
        body = Webhook(sub["secret"]).verify(m.body, m.headers)
        assert body["type"] in ("consent.revoked", "dnc.added")
        assert m.headers["webhook-id"].startswith("evt_")
        # A wrong secret, or a changed body, does not verify.
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(m.body, m.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(sub["secret"]).verify(m.body.replace(b"web", b"WEB"), m.headers)
    revoked = receiver.of_type("consent.revoked")[0].json
    assert revoked["data"]["phone"] == "+13145550100" and revoked["data"]["source"] == "web"
    assert set(revoked) == {"type", "timestamp", "data"}
    log = delivery_log(client, keys["admin"], sub["id"])
    assert {d["status"] for d in log} == {"delivered"}
    assert all(d["attempts"] == 1 and d["last_status"] == 200 for d in log)


def test_a_receiver_down_gets_everything_in_order_per_number_once_back(
    live: tuple[TestClient, dict[str, Any]],
) -> None:
    client, keys = live
    port = free_port()
    receiver = Receiver(port)  # not listening yet: connections refused
    sub = subscribe(client, keys["admin"], receiver.url, ["dnc.added", "dnc.lifted"])
    numbers = ["0101", "0102", "0103"]
    for _round in range(3):
        for n in numbers:
            add_dnc(client, keys, n)
            assert client.request("DELETE", f"/v1/dnc/%2B1314555{n}",
                                  headers=keys["admin"]).status_code == 200
    import time
    time.sleep(1.0)  # retries meanwhile, refused
    log = delivery_log(client, keys["admin"], sub["id"], settled=False)
    assert len(log) >= 1 and {d["status"] for d in log} == {"pending"}
    assert any(d["attempts"] >= 1 and d["last_error"] for d in log)
    down = client.get("/v1/webhooks", headers=keys["admin"]).json()["items"][0]
    assert down["failures"] >= 1
    # What /metrics reads (webhooks.worker.delivery_stats).
    stats = delivery_stats(client.app.state.runtime)  # type: ignore[attr-defined]
    assert stats.pending == 18 and stats.lag_seconds > 0 and stats.subscriptions_down == 1
    assert stats.failing_attempts >= 1
    receiver.start()
    try:
        got = receiver.wait_for(18, timeout=30)
        delivery_log(client, keys["admin"], sub["id"])
        after = delivery_stats(client.app.state.runtime)  # type: ignore[attr-defined]
        assert after.pending == 0 and after.lag_seconds == 0 and after.subscriptions_down == 0
        assert len(got) == 18
        per_number: dict[str, list[str]] = {}
        for m in got:
            Webhook(sub["secret"]).verify(m.body, m.headers)
            d = m.json
            per_number.setdefault(d["data"]["phone"], []).append(d["type"])
        assert set(per_number) == {f"+1314555{n}" for n in numbers}
        for seq in per_number.values():
            assert seq == ["dnc.added", "dnc.lifted"] * 3
        assert len({m.headers["webhook-id"] for m in got}) == 18
    finally:
        receiver.stop()


def test_test_message_replay_and_the_delivery_log(
    live: tuple[TestClient, dict[str, Any]], receiver: Receiver,
) -> None:
    client, keys = live
    admin = keys["admin"]
    sub = subscribe(client, admin, receiver.url)
    r = client.post(f"/v1/webhooks/{sub['id']}/test", headers=admin)
    assert r.status_code == 202 and r.json()["type"] == "webhook.test"
    test_msg = receiver.wait_for(1)[0]
    assert Webhook(sub["secret"]).verify(test_msg.body, test_msg.headers)["type"] == \
        "webhook.test"
    add_dnc(client, keys, "0150")
    receiver.wait_for(2)
    log = delivery_log(client, admin, sub["id"])
    event_delivery = next(d for d in log if d["type"] == "dnc.added")
    assert event_delivery["status"] == "delivered"
    r = client.post(f"/v1/webhooks/{sub['id']}/deliveries/{event_delivery['id']}/replay",
                    headers=admin)
    assert r.status_code == 202, r.text
    assert r.json()["replay_of"] == event_delivery["id"]
    got = receiver.wait_for(3)
    assert got[2].json == got[1].json  # the same message again
    assert got[2].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert client.post(f"/v1/webhooks/{sub['id']}/deliveries/999999/replay",
                       headers=admin).status_code == 404
    assert client.post("/v1/webhooks/nope/test", headers=admin).status_code == 404
    # Deleted: nothing more is sent; it leaves the list.
    assert client.delete(f"/v1/webhooks/{sub['id']}", headers=admin).status_code == 204
    assert client.get("/v1/webhooks", headers=admin).json()["items"] == []
    assert client.post(f"/v1/webhooks/{sub['id']}/test", headers=admin).status_code == 404
    assert client.post("/v1/webhooks", headers=keys["campaign_manager"], json={
        "url": receiver.url, "events": ["dnc.added"]}).status_code == 403


# --- server-side request forgery -----------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_private_addresses_are_refused_unless_allowed(client: TestClient,
                                                      keys: dict[str, Any]) -> None:
    admin = keys["admin"]
    refused = [
        "http://93.184.215.14/hook",  # http:// at all
        "https://127.0.0.1/hook", "https://localhost/hook", "https://10.1.2.3/hook",
        "https://192.168.0.10/hook", "https://172.16.5.5/hook", "https://169.254.169.254/",
        "https://[::1]/hook", "https://[::ffff:10.0.0.1]/hook", "https://[fd00:ec2::254]/",
        "https://100.64.0.1/hook", "https://0.0.0.0/hook", "ftp://example.org/x",
        "https://user:pw@93.184.215.14/hook", "not a url",
    ]
    for url in refused:
        r = client.post("/v1/webhooks", headers=admin, json={"url": url,
                                                             "events": ["dnc.added"]})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        assert r.json()["error"]["details"][0]["field"] == "body.url"
    assert client.get("/v1/webhooks", headers=admin).json()["items"] == []


def test_address_rules() -> None:
    def refused(a: str, allow: bool = False) -> str | None:
        return ssrf.address_refused(ipaddress.ip_address(a), allow)

    for a in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.1.1", "::1", "fe80::1",
              "fc00::1", "::ffff:192.168.1.1", "100.64.0.1"):
        assert refused(a) is not None, a
        assert refused(a, allow=True) is None, a
    for a in ("169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1"):
        assert refused(a, allow=True) is not None, a  # never, even when allowed
    for a in ("93.184.215.14", "2606:4700::1111"):
        assert refused(a) is None, a
    with pytest.raises(ssrf.UrlRefused):
        ssrf.check_url("http://93.184.215.14/", allow_private=False)
    assert ssrf.check_url("http://127.0.0.1:8080/x", allow_private=True).port == 8080


def test_delivery_time_check_refuses_a_private_address(receiver: Receiver) -> None:
    """At delivery the host is resolved and checked again (a name rebound to a private
    address since the subscription was made is refused): nothing reaches the receiver."""
    from datetime import UTC, datetime

    sender = Sender(allow_private=False, timeout=5)
    try:
        for host in ("127.0.0.1", "localhost"):
            res = sender.send(f"https://{host}:{receiver.port}/hooks", new_secret(), "evt_1",
                              "{}", datetime.now(UTC))
            assert not res.ok and res.status is None
            assert "loopback" in (res.error or ""), res.error
    finally:
        sender.close()
    assert receiver.got == []
    allowed = Sender(allow_private=True, timeout=5)
    try:
        res = allowed.send(receiver.url, new_secret(), "evt_1", "{}", datetime.now(UTC))
        assert res.ok
    finally:
        allowed.close()


def test_two_delivering_processes_send_each_event_once(
    live: tuple[TestClient, dict[str, Any]], receiver: Receiver, db_url: str,
) -> None:
    """A second instance on the same database with its own worker (PostgreSQL: the pass's
    advisory lock; SQLite: the flock): every event reaches the receiver once; answers of
    500 meanwhile are retried without losing the order."""
    from webhooks.worker import WebhookWorker

    client, keys = live
    other_db = Database(db_url)
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    other = Runtime(db=other_db, policy=rt.policy, clock=SystemClock(), settings=rt.settings)
    second = WebhookWorker(other).start()
    failures_before = metrics.WEBHOOK_FAILURES._value.get()
    try:
        sub = subscribe(client, keys["admin"], receiver.url, ["dnc.added", "dnc.lifted"])
        receiver.status = 500
        for n in ("0201", "0202"):
            add_dnc(client, keys, n)
        import time
        time.sleep(0.5)
        receiver.status = 200
        for n in ("0201", "0202"):
            assert client.request("DELETE", f"/v1/dnc/%2B1314555{n}",
                                  headers=keys["admin"]).status_code == 200
        got = receiver.wait_for(4, timeout=20)
        time.sleep(0.5)  # a duplicate, if any, would come now
        got = list(receiver.got)
        assert len(got) == 4, [m.json for m in got]
        assert len({m.headers["webhook-id"] for m in got}) == 4
        for n in ("0201", "0202"):
            assert [m.json["type"] for m in got if m.json["data"]["phone"].endswith(n)] == [
                "dnc.added", "dnc.lifted"]
        log = delivery_log(client, keys["admin"], sub["id"])
        assert any(d["attempts"] > 1 and d["last_status"] == 200 for d in log)
        # Each refused attempt counted (both workers are in this process); a success set the lag.
        assert metrics.WEBHOOK_FAILURES._value.get() > failures_before
        assert metrics.WEBHOOK_LAG._value.get() > 0
    finally:
        second.stop()
        other_db.dispose()
