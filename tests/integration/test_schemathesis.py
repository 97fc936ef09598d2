"""Hostile input: schemathesis against ``/openapi.json`` of the real ASGI app.

Every documented operation, for every role and without a key, with a bounded number of
generated requests (valid and invalid): no 500, every 4xx/5xx body in the error envelope,
every response conforming to the documented schema (status code, content type, body).

The app runs on one seeded SQLite database for the module (a campaign, consents, a call
list, live leases, outcomes, do-not-call entries, refusals), and path parameters and ids in
bodies are now and then replaced by real ids, so that requests reach the services and not
only the 404s. ``CALLGATE_SCHEMATHESIS_EXAMPLES`` raises the number of examples per
operation for a longer local run (the CI default keeps the module well under a minute), and
``CALLGATE_SCHEMATHESIS_RANDOM=1`` draws a new sequence instead of CI's fixed one.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from api.app import create_app
from config.clock import FakeClock
from config.policy import load_policy
from config.settings import Settings
from core.db import Database
from core.keys import Role, create_key
from core.runtime import Runtime
from tests.conftest import T0
from tests.helpers import CALLBACK, campaign_body, consent_body

EXAMPLES = int(os.environ.get("CALLGATE_SCHEMATHESIS_EXAMPLES", "40"))
# CI runs one fixed sequence (reproducible); set CALLGATE_SCHEMATHESIS_RANDOM=1 to explore.
DERANDOMIZE = not os.environ.get("CALLGATE_SCHEMATHESIS_RANDOM")
ROLES: list[str | None] = [r.value for r in Role] + [None]
# Documented ids of the routes another engineer owns (HTML, not JSON): left out here.
EXCLUDED_PREFIXES = ("/ui",)


def _doc_app() -> FastAPI:
    """An app only for reading the OpenAPI document (its database is never opened)."""
    rt = Runtime(
        db=Database("sqlite://"), policy=load_policy(), clock=FakeClock(T0), settings=Settings()
    )
    return create_app(rt, migrate=False)


def _operations() -> list[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = _doc_app().openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        if not path.startswith(EXCLUDED_PREFIXES)
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    )


OPERATIONS = _operations()


@dataclass
class Seeded:
    schema: Any
    runtime: Runtime
    keys: dict[str, str]
    app: Any = None
    campaign_ids: list[str] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    leases: list[tuple[str, str]] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)


PHONES = [f"+1314555{n:04d}" for n in range(100, 140)]


def _seed(client: TestClient, keys: dict[str, str]) -> Seeded:
    mgr = {"Authorization": f"Bearer {keys['campaign_manager']}"}
    dialer = {"Authorization": f"Bearer {keys['dialer']}"}
    out = Seeded(schema=None, runtime=None, keys=keys)  # type: ignore[arg-type]
    for i, phone in enumerate(PHONES[:30]):
        r = client.post(
            "/v1/consents",
            json=consent_body(T0 - timedelta(days=30), phone, method="oral" if i % 10 == 9
                              else "written"),
            headers=mgr,
        )
        assert r.status_code == 201, r.text
    for body in (campaign_body(), campaign_body(name="Reminders", purpose="appointment_reminder",
                                                channel="prerecorded_voice",
                                                calling_window=None)):
        r = client.post("/v1/campaigns", json=body, headers=mgr)
        assert r.status_code == 201, r.text
        out.campaign_ids.append(r.json()["id"])
    rows = [
        {"external_id": f"enc-{i}", "patient_ref": f"MRN-{i}", "phone": p, "state": "MO",
         "postal_code": "63110", "priority": 1 + i % 10}
        for i, p in enumerate(PHONES)
    ] + [{"external_id": "bad-1", "phone": "12"}, {"external_id": "bad-2", "phone": "+1 555"}]
    r = client.post(f"/v1/campaigns/{out.campaign_ids[0]}/calls", json=rows, headers=mgr)
    assert r.status_code == 200, r.text
    out.call_ids = [res["call_id"] for res in r.json()["results"] if res["call_id"]]
    r = client.post("/v1/queue/lease", json={"dialer_id": "seed", "limit": 12}, headers=dialer)
    assert r.status_code == 200, r.text
    tasks = r.json()["tasks"]
    assert len(tasks) >= 6
    for t in tasks[:3]:
        r = client.post(
            f"/v1/queue/{t['call_id']}/outcome",
            json={"lease_id": t["lease_id"], "agent_id": "A-1", "agent_name": "Dana",
                  "disclosed_callback_number": CALLBACK, "result": "no_answer",
                  "started_at": T0.isoformat(),
                  "ended_at": (T0 + timedelta(minutes=1)).isoformat()},
            headers=dialer,
        )
        assert r.status_code == 200, r.text
    out.leases = [(t["call_id"], t["lease_id"]) for t in tasks[3:]]
    r = client.post("/v1/dnc", json={"phone": PHONES[20], "reason": "asked"}, headers=mgr)
    assert r.status_code == 201, r.text
    r = client.post("/v1/consents/revocations", json={"phone": PHONES[21], "source": "web"},
                    headers=mgr)
    assert r.status_code == 201, r.text
    out.phones = [PHONES[0], PHONES[20], PHONES[21], "314-555-0120", "(314) 555-0121",
                  "13145550100", PHONES[35]]
    return out


@pytest.fixture(scope="module")
def seeded(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    path = tmp_path_factory.mktemp("schemathesis") / "callgate.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    db = Database(url)
    rt = Runtime(
        db=db,
        policy=load_policy(),
        clock=FakeClock(T0),
        settings=Settings(database_url=url, max_body_bytes=256 * 1024),
    )
    keys = {r.value: create_key(db, r, f"st-{r.value}", T0)[1] for r in Role}
    app = create_app(rt, migrate=False)
    with TestClient(app) as client:
        out = _seed(client, keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Keys are ours (one per role, or none), not generated: a generated Authorization header
    # is only ever a 401.
    out.schema.config.generation.update(with_security_parameters=False)
    out.runtime, out.app = rt, app
    yield out
    db.dispose()


def _checks() -> list[Any]:
    load_all_checks()
    names = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
    return [CHECKS.get_one(n) for n in names]


def _substitute(case: Any, s: Seeded, pick: int) -> None:
    """Now and then, real ids where the schema only says "a string"."""
    if case.query and isinstance(case.query.get("wait"), (int, float)):
        case.query["wait"] = min(case.query["wait"], 0.2)  # a long poll, held briefly here
    if pick == 0:
        return
    params = case.path_parameters or {}
    lease = s.leases[pick % len(s.leases)] if s.leases else None
    if "campaign_id" in params:
        params["campaign_id"] = s.campaign_ids[pick % len(s.campaign_ids)]
    if "call_id" in params:
        params["call_id"] = lease[0] if (lease and pick % 2) else s.call_ids[pick % len(s.call_ids)]
    if "phone" in params:
        params["phone"] = s.phones[pick % len(s.phones)]
    if isinstance(case.body, dict):
        if "lease_id" in case.body and lease:
            case.body["lease_id"] = lease[1]
        if "campaign_id" in case.body:
            case.body["campaign_id"] = s.campaign_ids[pick % len(s.campaign_ids)]
        if "phone" in case.body and pick % 2:
            case.body["phone"] = s.phones[pick % len(s.phones)]
        if "disclosed_callback_number" in case.body and pick % 3 == 0:
            case.body["disclosed_callback_number"] = CALLBACK
    if case.query and "campaign_id" in case.query:
        case.query["campaign_id"] = s.campaign_ids[pick % len(s.campaign_ids)]
    if case.query and "phone" in case.query:
        case.query["phone"] = s.phones[pick % len(s.phones)]


def _assert_envelope(response: Any) -> None:
    if response.status_code < 400:
        return
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype.startswith("application/json"), (response.status_code, ctype)
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message", "details"}, body
    assert isinstance(err["code"], str) and err["code"].isupper(), body
    assert isinstance(err["message"], str) and err["message"], body


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation(seeded: Seeded, method: str, path: str) -> None:
    op = seeded.schema[path][method]
    checks = _checks()
    strategies = {
        mode: op.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    }

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        data=st.data(),
        mode=st.sampled_from(list(strategies)),
        role=st.sampled_from(ROLES),
        pick=st.integers(0, 7),
    )
    def run(data: st.DataObject, mode: GenerationMode, role: str | None, pick: int) -> None:
        case = data.draw(strategies[mode])
        if mode is GenerationMode.POSITIVE:
            # Real ids only in valid requests: in an invalid one they could repair the very
            # value schemathesis broke.
            _substitute(case, seeded, pick)
        headers = {k: v for k, v in (case.headers or {}).items()
                   if k.lower() != "authorization"}
        if role is not None:
            headers["Authorization"] = f"Bearer {seeded.keys[role]}"
        case.headers = headers
        response = case.call()
        case.validate_response(response, checks=checks)
        _assert_envelope(response)

    run()


# Instants schemathesis does not think of (its date-times always carry an offset and a
# four-digit year): naive times, Unix timestamps, impossible dates, and the ends of the
# calendar whose UTC instant (or local date) does not exist. Each is refused (422) where an
# instant is expected, or answered; never a 500.
HOSTILE_INSTANTS = [
    "2026-11-24T12:00:00", "7", "1.5", "-1", "1e3", "2026-02-30T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
MUST_REFUSE = {"2026-11-24T12:00:00", "7", "1.5", "-1", "1e3", "2026-02-30T00:00:00Z",
               "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"}


@pytest.mark.parametrize("value", HOSTILE_INSTANTS)
def test_hostile_instants(seeded: Seeded, value: str) -> None:
    mgr = {"Authorization": f"Bearer {seeded.keys['campaign_manager']}"}
    comp = {"Authorization": f"Bearer {seeded.keys['compliance']}"}
    dialer = {"Authorization": f"Bearer {seeded.keys['dialer']}"}
    consent = consent_body(T0 - timedelta(days=1), "+13145550139")
    outcome = {"lease_id": "x", "agent_id": "A-1", "agent_name": "Dana",
               "disclosed_callback_number": CALLBACK, "result": "no_answer"}
    requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("POST", "/v1/consents", {"json": {**consent, "obtained_at": value}}, mgr),
        ("POST", "/v1/consents", {"json": {**consent, "expires_at": value}}, mgr),
        ("POST", "/v1/consents/revocations",
         {"json": {"phone": "+13145550138", "source": "web", "received_at": value}}, mgr),
        ("POST", "/v1/check", {"json": {"phone": "+13145550100", "purpose": "test_results",
                                        "at": value}}, dialer),
        ("POST", f"/v1/queue/{uuid.uuid4()}/outcome",
         {"json": {**outcome, "started_at": value}}, dialer),
        ("POST", f"/v1/queue/{uuid.uuid4()}/outcome",
         {"json": {**outcome, "started_at": "2026-11-24T17:00:00Z", "ended_at": value}},
         dialer),
    ]
    for path in ("/v1/refusals", "/v1/refusals/summary", "/v1/refusals.csv", "/v1/call-log",
                 "/v1/call-log.csv"):
        for name in ("since", "until"):
            requests.append(("GET", path, {"params": {name: value}}, comp))
    with TestClient(seeded.app, raise_server_exceptions=False) as client:
        for method, path, kwargs, headers in requests:
            resp = client.request(method, path, headers=headers, **kwargs)
            where = (method, path, kwargs, resp.status_code, resp.text[:200])
            assert resp.status_code < 500, where
            if value in MUST_REFUSE:
                assert resp.status_code == 422, where
            if resp.status_code >= 400:
                assert set(resp.json()["error"]) == {"code", "message", "details"}, where
