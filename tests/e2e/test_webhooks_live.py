"""Events out of a real ``callgate serve``: a receiver started by the test (an HTTP server
thread) gets ``consent.revoked`` within 2 s of a revocation, signed so that the
``standardwebhooks`` library verifies it; the feed's long poll answers with the same
event. Both databases."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from tests.e2e.serverproc import Server, make_keys
from tests.receiver import Receiver


def test_a_revocation_reaches_a_receiver_within_two_seconds(db_url: str, tmp_path: Path
                                                            ) -> None:
    keys = make_keys(db_url)
    receiver = Receiver().start()
    server = Server(tmp_path, db_url, env={"CALLGATE_WEBHOOKS_ALLOW_PRIVATE": "true"}).start()
    try:
        admin, mgr = keys["admin"], keys["campaign_manager"]
        r = httpx.post(f"{server.url}/v1/webhooks", headers=admin, timeout=10, json={
            "url": receiver.url, "events": ["consent.revoked"]})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        cursor = httpx.get(f"{server.url}/v1/events", headers=admin,
                           timeout=10).json()["next_cursor"]
        polled: dict[str, object] = {}

        def long_poll() -> None:
            polled.update(httpx.get(
                f"{server.url}/v1/events", headers=admin, timeout=40,
                params={"after": cursor, "types": "consent.revoked", "wait": 30}).json())

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.3)
        sent = time.monotonic()
        r = httpx.post(f"{server.url}/v1/consents/revocations", headers=mgr, timeout=10,
                       json={"phone": "+1 314 555 0100", "source": "sms_stop"})
        assert r.status_code == 201, r.text
        got = receiver.wait_for(1, timeout=2.0)
        arrived = time.monotonic()
        assert got, "no delivery within 2 s of the revocation"
        assert got[0].at - sent <= 2.0 and arrived - sent <= 2.5
        body = Webhook(secret).verify(got[0].body, got[0].headers)
        assert body["type"] == "consent.revoked"
        assert body["data"]["phone"] == "+13145550100"
        assert body["data"]["source"] == "sms_stop"
        poller.join(timeout=40)
        items = polled["items"]
        assert isinstance(items, list) and [i["type"] for i in items] == ["consent.revoked"]
        assert items[0]["id"] == got[0].headers["webhook-id"]
    finally:
        server.stop()
        receiver.stop()
