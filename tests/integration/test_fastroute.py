"""api.fastroute.DialerRoute: the short path for the dialers' hot routes answers every
request exactly as FastAPI's own handler does (status, body, headers that matter), and it
is the path a valid request takes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api import fastroute
from dialer.schemas import CheckIn, LeaseIn, OutcomesIn
from tests.helpers import PHONE

Keys = dict[str, dict[str, str]]

LEASE = {"dialer_id": "d-1", "limit": 5, "lease_seconds": 60}
OUTCOMES = {"outcomes": [{"call_id": str(uuid.uuid4()), "lease_id": str(uuid.uuid4()),
                          "result": "connected", "agent_id": "A-1", "agent_name": "Dana",
                          "disclosed_callback_number": "+13145550100"}]}
CHECK = {"phone": PHONE, "purpose": "discharge_followup"}
JSON = "application/json"

# (route, key role or raw Authorization header, body bytes, content type)
CASES: list[tuple[str, str | None, bytes | None, str | None]] = [
    *[(path, "dialer", json.dumps(body).encode(), JSON)
      for path, body in (("/v1/queue/lease", LEASE), ("/v1/queue/outcomes", OUTCOMES),
                         ("/v1/check", CHECK))],
    ("/v1/check", "campaign_manager", json.dumps(CHECK).encode(), JSON),
    ("/v1/queue/lease", "compliance", json.dumps(LEASE).encode(), JSON),  # 403
    ("/v1/queue/lease", "campaign_manager", json.dumps(LEASE).encode(), JSON),  # 403
    ("/v1/queue/outcomes", "compliance", b"not json", JSON),  # 422 before the key
    ("/v1/queue/lease", None, json.dumps(LEASE).encode(), JSON),  # 401
    ("/v1/queue/lease", "Bearer", json.dumps(LEASE).encode(), JSON),
    ("/v1/queue/lease", "Basic dXNlcjpwYXNz", json.dumps(LEASE).encode(), JSON),
    ("/v1/queue/lease", "Bearer cg_unknown-0000000000000000000000", b"{}", JSON),
    ("/v1/queue/lease", "dialer", b"{not json", JSON),
    ("/v1/queue/lease", "dialer", b"", JSON),
    ("/v1/queue/lease", "dialer", None, None),
    ("/v1/queue/lease", "dialer", b"[]", JSON),
    ("/v1/queue/lease", "dialer", b"null", JSON),
    ("/v1/queue/lease", "dialer", b'{"dialer_id": "d", "limit": "5"}', JSON),  # StrictInt
    ("/v1/queue/lease", "dialer", b'{"dialer_id": "d", "limit": 101}', JSON),
    ("/v1/queue/lease", "dialer", b'{"dialer_id": "d", "color": "red"}', JSON),  # extra
    ("/v1/queue/lease", "dialer", b'{"limit": 5}', JSON),  # missing dialer_id
    ("/v1/queue/lease", "dialer", b'{"dialer_id": "d", "limit": 5.0}', JSON),
    ("/v1/queue/lease", "dialer", b'{"dialer_id": "\\ud800"}', JSON),  # lone surrogate
    ("/v1/queue/lease", "dialer", "{\"dialer_id\": \"é\"}".encode("latin-1"), JSON),
    ("/v1/queue/lease", "dialer", json.dumps(LEASE).encode(), "text/plain"),
    ("/v1/queue/lease", "dialer", json.dumps(LEASE).encode(), "application/json; charset=utf-8"),
    ("/v1/queue/lease", "dialer", json.dumps(LEASE).encode(), "application/vnd.x+json"),
    ("/v1/queue/lease", "dialer", json.dumps(LEASE).encode(), None),
    ("/v1/queue/outcomes", "dialer", b'{"outcomes": []}', JSON),
    ("/v1/queue/outcomes", "dialer", json.dumps(
        {"outcomes": [{**OUTCOMES["outcomes"][0], "result": "maybe"}]}).encode(), JSON),
    ("/v1/check", "dialer", b'{"phone": "0", "purpose": "discharge_followup"}', JSON),
    ("/v1/check", "dialer", b'{"phone": "0", "purpose": "marketing"}', JSON),
]


MODELS = {"/v1/queue/lease": LeaseIn, "/v1/queue/outcomes": OutcomesIn, "/v1/check": CheckIn}


def _valid(case: tuple[str, str | None, bytes | None, str | None]) -> bool:
    try:
        MODELS[case[0]].model_validate_json(case[2] or b"")
    except ValidationError:
        return False
    return True


def _send(client: TestClient, keys: Keys, case: tuple[str, str | None, bytes | None,
                                                      str | None]) -> tuple[Any, ...]:
    path, who, body, ctype = case
    headers: dict[str, str] = {}
    if who in keys:
        headers.update(keys[who])
    elif who is not None:
        headers["Authorization"] = who
    if ctype is not None:
        headers["Content-Type"] = ctype
    r = client.post(path, content=body, headers=headers)
    return r.status_code, r.json(), r.headers.get("www-authenticate"), r.headers["content-type"]


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The endpoints the short path ran, in order (FastAPI's handler runs them otherwise)."""
    names: list[str] = []
    real = fastroute.run_in_threadpool

    async def spy(func: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(func.__name__)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(fastroute, "run_in_threadpool", spy)
    return names


def test_the_short_path_answers_as_fastapi_does(
    client: TestClient, keys: Keys, taken: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses = set()
    for case in CASES:
        taken.clear()
        short = _send(client, keys, case)
        short_taken = list(taken)
        monkeypatch.setattr(fastroute, "SHORT_PATH", False)
        standard = _send(client, keys, case)
        monkeypatch.setattr(fastroute, "SHORT_PATH", True)
        assert short == standard, case
        statuses.add(short[0])
        # A request with a key of the right role, sent as JSON and valid for the route's
        # model, is served by the short path; nothing else is.
        expected = (short[0] not in (401, 403) and case[3] == JSON and _valid(case)
                    and case[0] != "/v1/check")
        assert bool(short_taken) == expected, (case, short_taken)
    assert statuses == {200, 401, 403, 422}


def test_the_short_path_serves_the_hot_routes(client: TestClient, keys: Keys,
                                              taken: list[str]) -> None:
    for path, body in (("/v1/queue/lease", LEASE), ("/v1/queue/outcomes", OUTCOMES),
                       ("/v1/check", CHECK)):
        assert client.post(path, json=body, headers=keys["dialer"]).status_code == 200
    # Routes of another shape (a path parameter; a model returned for FastAPI to serialise)
    # are FastAPI's alone.
    r = client.post(f"/v1/queue/{uuid.uuid4()}/release", json={"lease_id": str(uuid.uuid4())},
                    headers=keys["dialer"])
    assert r.status_code in (404, 409)
    assert taken == ["lease_calls", "report_outcomes"]
