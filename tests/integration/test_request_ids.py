"""X-Request-Id on every answer and in the access log line; Retry-After on an empty lease
(API.md "Every response", issue 20 point 3)."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.clock import FakeClock
from core.runtime import Runtime
from tests.conftest import T0
from tests.helpers import campaign_body, consent_body, days

Keys = dict[str, dict[str, str]]
GENERATED = re.compile(r"[0-9a-f]{32}")


def _answers(client: TestClient, keys: Keys) -> dict[str, Any]:
    mgr = keys["campaign_manager"]
    return {
        "200": client.get("/healthz"),
        "201": client.post("/v1/campaigns", json=campaign_body(), headers=mgr),
        "401": client.get("/v1/refusals"),
        "403": client.post("/v1/queue/lease", json={"dialer_id": "d"}, headers=mgr),
        "404 unknown route": client.get("/no/such/route"),
        "404 resource": client.get(f"/v1/calls/{uuid.uuid4()}", headers=mgr),
        "413": client.post("/v1/consents", content=b"x" * (70 * 1024), headers=mgr),
        "422": client.post("/v1/consents", json={}, headers=mgr),
        "405": client.delete("/v1/consents", headers=mgr),
    }


def test_every_answer_has_a_request_id(client: TestClient, keys: Keys) -> None:
    for name, r in _answers(client, keys).items():
        assert GENERATED.fullmatch(r.headers.get("x-request-id", "")), name
        assert str(r.status_code) == name.split()[0], (name, r.text)
    ids = [r.headers["x-request-id"] for r in _answers(client, keys).values()]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("given", ["abc-123", "req 42 / retry", "x" * 128,
                                   "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"])
def test_a_well_formed_id_is_echoed(client: TestClient, keys: Keys, given: str) -> None:
    r = client.get("/v1/refusals", headers={**keys["compliance"], "X-Request-Id": given})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == given
    # Errors too, the gate's 401 included.
    assert client.get("/v1/refusals", headers={"X-Request-Id": given}).headers[
        "x-request-id"] == given


@pytest.mark.parametrize("bad", [b"", b" ", b"x" * 129, b"caf\xc3\xa9", b"a\tb", b"\x7f"])
def test_a_malformed_id_is_replaced(client: TestClient, bad: bytes) -> None:
    r = client.get("/healthz", headers=[(b"x-request-id", bad)])
    assert GENERATED.fullmatch(r.headers["x-request-id"]), r.headers["x-request-id"]


def test_the_access_log_line_names_the_request_id(
    client: TestClient, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="callgate.access"):
        r = client.get("/v1/refusals", headers={**keys["compliance"], "X-Request-Id": "t-77"})
        g = client.get("/no/such/route")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "callgate.access"]
    assert any(line.startswith("GET /v1/refusals 200 ") and line.endswith(" rid=t-77")
               for line in lines), lines
    assert any(line.endswith(f" rid={g.headers['x-request-id']}") and " 404 " in line
               for line in lines), lines
    assert r.status_code == 200


# --- Retry-After on an empty lease --------------------------------------------------------------


def _lease(client: TestClient, keys: Keys) -> Any:
    return client.post("/v1/queue/lease", json={"dialer_id": "d", "limit": 5},
                       headers=keys["dialer"])


def test_empty_queue_says_retry_after_60(client: TestClient, keys: Keys) -> None:
    r = _lease(client, keys)
    assert r.status_code == 200 and r.json() == {"tasks": []}
    assert r.headers["retry-after"] == "60"


def test_retry_after_is_when_the_next_call_becomes_eligible(
    client: TestClient, keys: Keys, clock: FakeClock, runtime: Runtime
) -> None:
    mgr = keys["campaign_manager"]
    phone = "+13145550411"
    assert client.post("/v1/consents", json=consent_body(T0 - days(5), phone),
                       headers=mgr).status_code == 201
    cid = client.post("/v1/campaigns", json=campaign_body(calling_window=None),
                      headers=mgr).json()["id"]
    row = {"external_id": "r-1", "phone": phone,
           "not_before": (T0 + timedelta(seconds=25)).isoformat()}
    r = client.post(f"/v1/campaigns/{cid}/calls", json=[row], headers=mgr)
    assert r.json()["results"][0]["status"] == "queued", r.text
    empty = _lease(client, keys)
    assert empty.json()["tasks"] == [] and empty.headers["retry-after"] == "25"
    clock.advance(timedelta(seconds=24, milliseconds=500))
    assert _lease(client, keys).headers["retry-after"] == "1"  # rounded up, at least 1
    clock.advance(timedelta(seconds=1))
    got = _lease(client, keys)
    assert len(got.json()["tasks"]) == 1 and "retry-after" not in got.headers
    # Far in the future: capped at 60.
    row2 = {"external_id": "r-2", "phone": "+13145550412",
            "not_before": (clock.now() + timedelta(hours=3)).isoformat()}
    assert client.post("/v1/consents", json=consent_body(T0 - days(5), row2["phone"]),
                       headers=mgr).status_code == 201
    client.post(f"/v1/campaigns/{cid}/calls", json=[row2], headers=mgr)
    assert _lease(client, keys).headers["retry-after"] == "60"
