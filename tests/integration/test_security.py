"""Security checks (issue 6, item 6).

* The RBAC matrix: every ``/v1`` route and ``/healthz`` (read from ``app.routes``) x every
  role x no key, against the roles API.md names, written out below; a route added without
  an entry here fails the test.
* Keys are never logged: neither in the app's log records at DEBUG nor in a real
  ``callgate serve``'s output.
* No phone number (in any format) and no patient reference in a real server's log lines at
  INFO, after consents, do-not-call reads by number in the path, call lists, leases,
  outcomes and errors.
* Every read of patient data and every unmask is audited with the reader's identity.
* Security headers on every response, errors and 413 included.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from core.keys import Role, create_key, revoke_key
from core.runtime import Runtime
from tests.conftest import T0
from tests.e2e.serverproc import Server, campaign, make_keys, write_policy
from tests.helpers import CALLBACK, audit_entries, campaign_body, consent_body, identity

Keys = dict[str, dict[str, str]]
A, M, D, C = "admin", "campaign_manager", "dialer", "compliance"
ROLES = [r.value for r in Role]

# API.md, role by role. None: no key needed.
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/metrics"): {A},  # or the scrape token CALLGATE_METRICS_TOKEN (test_metrics.py)
    ("POST", "/v1/consents"): {A, M},
    ("GET", "/v1/consents"): {A, M, C},
    ("POST", "/v1/consents/revocations"): {A, M},
    ("POST", "/v1/dnc"): {A, M},
    ("GET", "/v1/dnc/{phone}"): {A, M, C},
    ("DELETE", "/v1/dnc/{phone}"): {A},
    ("POST", "/v1/campaigns"): {A, M},
    ("GET", "/v1/campaigns/{campaign_id}"): {A, M},
    ("POST", "/v1/campaigns/{campaign_id}/calls"): {A, M},
    ("POST", "/v1/campaigns/{campaign_id}/calls/upload"): {A, M},
    ("POST", "/v1/numbers/reassigned"): {A, M},
    ("GET", "/v1/calls/{call_id}"): {A, M, C},
    ("POST", "/v1/queue/lease"): {A, D},
    ("POST", "/v1/queue/{call_id}/outcome"): {A, D},
    ("POST", "/v1/queue/outcomes"): {A, D},
    ("POST", "/v1/queue/{call_id}/release"): {A, D},
    ("POST", "/v1/queue/{call_id}/dial"): {A, D},
    ("POST", "/v1/check"): {A, M, D},
    ("GET", "/v1/refusals"): {A, C},
    ("GET", "/v1/refusals/summary"): {A, C},
    ("GET", "/v1/refusals.csv"): {A, C},
    ("GET", "/v1/call-log"): {A, C},
    ("GET", "/v1/call-log.csv"): {A, C},
    ("GET", "/v1/audit/verify"): {A, C},
    ("GET", "/v1/audit/checkpoint"): {A, C},
    ("GET", "/v1/audit/key"): {A, C},
    ("GET", "/v1/audit/entries"): {A, C},
    ("GET", "/v1/audit/entries/{index}"): {A, C},
    ("GET", "/v1/audit/proof/inclusion"): {A, C},
    ("GET", "/v1/audit/proof/consistency"): {A, C},
    ("GET", "/v1/access-report"): {A, C},
    ("POST", "/v1/webhooks"): {A},
    ("GET", "/v1/webhooks"): {A},
    ("DELETE", "/v1/webhooks/{webhook_id}"): {A},
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {A},
    ("POST", "/v1/webhooks/{webhook_id}/test"): {A},
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"): {A},
    ("GET", "/v1/events"): {A},
    # API.md "Templates and texts"
    ("POST", "/v1/templates"): {A, M},
    ("GET", "/v1/templates"): {A, M, C},
    ("GET", "/v1/templates/{template_id}"): {A, M, C},
    ("POST", "/v1/sms/inbound"): {A, D},
    ("POST", "/v1/sms/inbound/{inbound_id}/decision"): {A, C},
    ("POST", "/v1/sms/replies/{reply_id}/outcome"): {A, D},
}

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_security_headers(resp: Any, path: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (path, resp.status_code, name)
    csp = resp.headers.get("content-security-policy", "")
    assert "default-src" in csp and "frame-ancestors 'none'" in csp, (path, csp)
    if path.startswith("/v1") or path == "/healthz":
        assert resp.headers.get("cache-control") == "no-store", (path, resp.status_code)


def assert_envelope(resp: Any, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code, body


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves under /v1 and /healthz. FastAPI 0.12x+
    keeps included routers as wrappers in ``app.routes``; ``iter_route_contexts`` walks them."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat
        routes: list[tuple[str | None, set[str] | None]] = [
            (r.path, r.methods) for r in app.routes if isinstance(r, APIRoute)]
    else:
        routes = [(rc.path, rc.methods) for rc in iter_route_contexts(app.routes)]
    return {
        (method, path)
        for path, methods in routes
        if path and (path.startswith("/v1/") or path in ("/healthz", "/metrics"))
        for method in methods or ()
        if method != "HEAD"
    }


def test_the_matrix_names_every_route(app: FastAPI) -> None:
    assert _app_routes(app) == set(EXPECTED)


def _concrete(path: str) -> str:
    return (path.replace("{phone}", quote("+13145550100", safe=""))
            .replace("{campaign_id}", str(uuid.uuid4()))
            .replace("{call_id}", str(uuid.uuid4()))
            .replace("{webhook_id}", str(uuid.uuid4())).replace("{delivery_id}", "1"))


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED), ids=lambda v: str(v))
def test_rbac_matrix(client: TestClient, keys: Keys, method: str, path: str) -> None:
    allowed = EXPECTED[(method, path)]
    url = _concrete(path)
    body: list[Any] | dict[str, Any] = [] if path.endswith("/calls") else {}
    kwargs: dict[str, Any] = {"json": body} if method in ("POST", "DELETE") else {}
    for role in [None, *ROLES]:
        headers = keys[role] if role else {}
        resp = client.request(method, url, headers=headers, **kwargs)
        assert_security_headers(resp, path)
        if allowed is None:
            assert resp.status_code == 200, (role, resp.text)
        elif role is None:
            assert_envelope(resp, 401, "UNAUTHORIZED")
            assert resp.headers["www-authenticate"] == "Bearer"
        elif role in allowed:
            assert resp.status_code not in (401, 403), (role, method, path, resp.text)
        else:
            assert_envelope(resp, 403, "FORBIDDEN")


# --- security headers on the odd responses ------------------------------------------------


def test_security_headers_on_errors_and_413(
    client: TestClient, keys: Keys, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = keys[M]
    limit = runtime.settings.max_body_bytes
    cases: list[tuple[str, Any]] = [
        ("/nowhere", client.get("/nowhere")),
        ("/v1/nowhere", client.get("/v1/nowhere", headers=mgr)),
        ("/v1/campaigns", client.put("/v1/campaigns", headers=mgr)),  # 405
        ("/v1/campaigns", client.post("/v1/campaigns", json={"name": ""}, headers=mgr)),  # 422
        ("/v1/campaigns", client.post("/v1/campaigns", content=b"\xff\xfe", headers={
            **mgr, "Content-Type": "application/json"})),  # undecodable body: 422
        ("/openapi.json", client.get("/openapi.json")),
        ("/healthz", client.get("/healthz")),
    ]
    # 413 announced by Content-Length, and 413 found while streaming a chunked body.
    big = b"[" + b" " * (limit + 10) + b"]"
    cases.append(("/v1/campaigns/x/calls", client.post(
        "/v1/campaigns/x/calls", content=big, headers={**mgr, "Content-Type": "application/json"})))

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    cases.append(("/v1/campaigns/x/calls", client.post(
        "/v1/campaigns/x/calls", content=chunks(),
        headers={**mgr, "Content-Type": "application/json"})))
    # 500: a service failing unexpectedly.
    from dialer import campaigns

    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(campaigns, "get_campaign", boom)
    cases.append(("/v1/campaigns/x", client.get("/v1/campaigns/x", headers=mgr)))
    statuses = [resp.status_code for _, resp in cases]
    assert statuses == [404, 404, 405, 422, 422, 200, 200, 413, 413, 500], statuses
    for path, resp in cases:
        assert_security_headers(resp, path)
        if resp.status_code >= 400:
            assert_envelope(resp, resp.status_code)


# --- patient data reads are audited with the reader -----------------------------------------


def _seed_patient_data(client: TestClient, keys: Keys) -> dict[str, str]:
    mgr, dialer = keys[M], keys[D]
    assert client.post("/v1/consents", json=consent_body(T0 - timedelta(days=5)),
                       headers=mgr).status_code == 201
    cid = client.post("/v1/campaigns", json=campaign_body(calling_window=None),
                      headers=mgr).json()["id"]
    r = client.post(f"/v1/campaigns/{cid}/calls", headers=mgr, json=[
        {"external_id": "enc-1", "patient_ref": "MRN-1001", "phone": "3145550100"},
        {"external_id": "enc-2", "patient_ref": "MRN-1002", "phone": "3145550101"},  # refused
    ])
    call_id = r.json()["results"][0]["call_id"]
    task = client.post("/v1/queue/lease", json={"dialer_id": "d"}, headers=dialer).json()
    t = task["tasks"][0]
    r = client.post(f"/v1/queue/{t['call_id']}/outcome", headers=dialer, json={
        "lease_id": t["lease_id"], "agent_id": "A-1", "agent_name": "Dana",
        "disclosed_callback_number": CALLBACK, "result": "no_answer"})
    assert r.status_code == 200, r.text
    assert client.post("/v1/dnc", json={"phone": "3145550102", "reason": "asked"},
                       headers=mgr).status_code == 201
    return {"call_id": call_id}


READS = [
    ("GET", "/v1/consents?phone=314-555-0100", "patient_data.read", "consents"),
    ("GET", "/v1/dnc/%2B13145550102", "patient_data.read", "dnc"),
    ("GET", "/v1/calls/{call_id}", "patient_data.read", "call:{call_id}"),
    ("GET", "/v1/refusals?unmask=true", "patient_data.unmask", "refusals"),
    ("GET", "/v1/refusals.csv?unmask=true", "patient_data.unmask", "refusals"),
    ("GET", "/v1/call-log?unmask=true", "patient_data.unmask", "attempts"),
    ("GET", "/v1/call-log.csv?unmask=true", "patient_data.unmask", "attempts"),
]


def test_patient_data_reads_and_unmask_are_audited_with_the_reader(
    client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    ids = _seed_patient_data(client, keys)
    for role in (C, A, M):
        who = identity(runtime, Role(role))
        for method, path, kind, subject in READS:
            url, subject = path.format(**ids), subject.format(**ids)
            allowed = EXPECTED[(method, url.split("?")[0].replace(ids["call_id"], "{call_id}")
                                .replace("%2B13145550102", "{phone}"))]
            if allowed is not None and role not in allowed:
                continue
            before = len(audit_entries(runtime, kind))
            resp = client.request(method, url, headers=keys[role])
            assert resp.status_code == 200, (url, resp.text)
            new = audit_entries(runtime, kind)[before:]
            assert [(e.actor, e.subject) for e in new] == [(who.actor, subject)], (url, role)
            # The entry names rows, never the numbers it showed.
            for e in new:
                assert "555010" not in e.payload and "MRN-" not in e.payload
    # Masked reads show masked numbers and are not unmask events.
    before = len(audit_entries(runtime, "patient_data.unmask"))
    page = client.get("/v1/refusals", headers=keys[C]).json()
    assert page["items"] and all(i["phone"].endswith("****") for i in page["items"])
    log = client.get("/v1/call-log", headers=keys[C]).json()
    assert log["items"] and all(i["phone"].endswith("****") for i in log["items"])
    assert len(audit_entries(runtime, "patient_data.unmask")) == before


# --- keys are never logged ----------------------------------------------------------------


def test_keys_never_in_log_records(
    client: TestClient, keys: Keys, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    _, revoked = create_key(runtime.db, Role.admin, "to-revoke", runtime.clock.now())
    revoke_key(runtime.db, "to-revoke", runtime.clock.now())
    bogus = "cg_" + "Z" * 43
    # Our loggers may have been configured not to propagate (callgate serve's dictConfig):
    # hang the capture handler on them directly.
    loggers = [logging.getLogger(n) for n in ("", "callgate", "uvicorn", "uvicorn.error")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(caplog.handler)
        lg.setLevel(logging.DEBUG)
    try:
        _seed_patient_data(client, keys)
        for headers in [*keys.values(), {"Authorization": f"Bearer {revoked}"},
                        {"Authorization": f"Bearer {bogus}"},
                        {"Authorization": bogus}, {"Authorization": f"Basic {bogus}"}]:
            client.get("/v1/audit/verify", headers=headers)
            client.get("/v1/calls/nope", headers=headers)
            client.post("/v1/queue/lease", json={"dialer_id": "x"}, headers=headers)
            client.post("/v1/consents", json={"phone": "x"}, headers=headers)
    finally:
        for lg, level in saved:
            lg.removeHandler(caplog.handler)
            lg.setLevel(level)
    text = caplog.text + "\n".join(repr(r.args) for r in caplog.records)
    assert any("/v1/audit/verify" in r.getMessage() for r in caplog.records)  # it did log
    secrets = [h["Authorization"].split()[-1] for h in keys.values()] + [revoked, bogus]
    for secret in secrets:
        assert secret not in text
        assert secret[3:] not in text


# --- a real server's log --------------------------------------------------------------------

LOG_PHONES = ["3145550142", "3145550143", "3145550144", "3145550145", "3145550146"]
PATIENT_REFS = ["MRN-SEC-7781", "MRN-SEC-7782", "MRN-SEC-7783", "PAT-SEC-9901"]
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _formats(digits: str) -> list[str]:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return [f"+1{digits}", digits, f"{a}-{b}-{c}", f"({a}) {b}-{c}", f"{a} {b} {c}",
            f"{a}.{b}.{c}", f"1{digits}"]


def _phone_pattern(digits: str) -> re.Pattern[str]:
    """The number with any separators between its digits (and the subscriber part alone)."""
    sep = r"(?:[\s\-.()/+]|%2B|%28|%29|%20)*"
    full = sep.join(digits)
    return re.compile(f"{full}|{sep.join(digits[3:])}")


def _lines_at_info(text: str) -> list[str]:
    """Log lines of records at INFO and above (continuation lines go with their record);
    lines before the first record (start-up messages) count too."""
    out: list[str] = []
    level = "INFO"
    for line in text.splitlines():
        m = _RECORD.match(line)
        if m:
            level = m.group(1)
        if level != "DEBUG":
            out.append(line)
    return out


def _exercise(url: str, keys: Keys, bogus: str) -> None:
    mgr, dialer, comp, admin = keys[M], keys[D], keys[C], keys[A]
    p = LOG_PHONES
    with httpx.Client(base_url=url, timeout=60) as c:
        def ok(resp: httpx.Response, *status: int) -> httpx.Response:
            assert resp.status_code in status, (resp.request.url.path, resp.text[:300])
            return resp

        now = datetime.now(UTC)
        for i, digits in enumerate(p[:3]):
            body = consent_body(now - timedelta(days=2), _formats(digits)[i + 2])
            body["patient_ref"] = PATIENT_REFS[i]
            ok(c.post("/v1/consents", json=body, headers=mgr), 201)
        ok(c.get("/v1/consents", params={"phone": _formats(p[0])[3]}, headers=comp), 200)
        ok(c.get("/v1/consents", params={"phone": "314555014"}, headers=comp), 422)
        ok(c.get(f"/v1/dnc/{p[3]}", headers=comp), 404)
        ok(c.post("/v1/dnc", json={"phone": _formats(p[3])[2], "reason": "asked"},
                  headers=mgr), 201)
        for fmt in _formats(p[3]):
            ok(c.get(f"/v1/dnc/{quote(fmt, safe='')}", headers=comp), 200)
        ok(c.request("DELETE", f"/v1/dnc/{quote(_formats(p[3])[0], safe='')}",
                     json={"reason": "lifted"}, headers=admin), 200)
        cid = campaign(c, mgr)
        rows = [{"external_id": f"sec-{i}", "patient_ref": PATIENT_REFS[i], "phone": d}
                for i, d in enumerate(p[:3])]
        rows.append({"external_id": "sec-bad", "patient_ref": PATIENT_REFS[3],
                     "phone": "314555014"})  # invalid
        rows.append({"external_id": "sec-none", "patient_ref": "PAT-SEC-9901",
                     "phone": _formats(p[4])[3]})  # no consent: refused
        ok(c.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=mgr), 200)
        csv = "external_id,patient_ref,phone\nsec-csv,MRN-SEC-7783,(314) 555-0146\n"
        ok(c.post(f"/v1/campaigns/{cid}/calls", content=csv,
                  headers={**mgr, "Content-Type": "text/csv"}), 200)
        tasks = ok(c.post("/v1/queue/lease", json={"dialer_id": "sec", "limit": 10},
                          headers=dialer), 200).json()["tasks"]
        assert tasks
        for t in tasks:
            ok(c.post(f"/v1/queue/{t['call_id']}/dial", json={"lease_id": t["lease_id"]},
                      headers=dialer), 200)
            ok(c.post(f"/v1/queue/{t['call_id']}/outcome", headers=dialer, json={
                "lease_id": t["lease_id"], "result": "connected"}), 422)  # no agent id
            ok(c.post(f"/v1/queue/{t['call_id']}/outcome", headers=dialer, json={
                "lease_id": t["lease_id"], "agent_id": "A-1", "agent_name": "Dana",
                "disclosed_callback_number": "+1 314 555 0199", "result": "wrong_number"}), 200)
            ok(c.post(f"/v1/queue/{t['call_id']}/release", json={"lease_id": t["lease_id"]},
                      headers=dialer), 409)
            ok(c.get(f"/v1/calls/{t['call_id']}", headers=comp), 200)
        ok(c.post("/v1/check", json={"phone": _formats(p[1])[4], "purpose": "test_results"},
                  headers=dialer), 200)
        ok(c.post("/v1/check", json={"phone": _formats(p[1])[4], "purpose": "test_results",
                                     "campaign_id": str(uuid.uuid4())}, headers=dialer), 404)
        ok(c.post("/v1/consents/revocations", json={"phone": _formats(p[2])[5],
                                                    "source": "letter"}, headers=mgr), 201)
        for path in ("/v1/refusals", "/v1/call-log", "/v1/refusals.csv", "/v1/call-log.csv"):
            ok(c.get(path, params={"unmask": "true"}, headers=comp), 200)
        # Errors with numbers and references in them.
        ok(c.post("/v1/consents", json={"patient_ref": "MRN-SEC-7781", "phone": p[0],
                                        "method": "telepathy"}, headers=mgr), 422)
        ok(c.get(f"/v1/nowhere/{p[0]}", params={"phone": p[0]}, headers=comp), 404)
        ok(c.get(f"/v1/calls/{p[0]}", headers=comp), 404)
        ok(c.get("/v1/audit/verify", headers={"Authorization": f"Bearer {bogus}"}), 401)
        ok(c.get("/v1/audit/verify", headers={"Authorization": bogus}), 401)
        ok(c.get("/v1/audit/verify", headers=dialer), 403)
        big = b"x" * (2 * 1024 * 1024)
        resp = ok(c.post(f"/v1/campaigns/{cid}/calls", content=big,
                         headers={**mgr, "Content-Type": "text/csv"}), 413)
        assert_security_headers(resp, "/v1/campaigns/{campaign_id}/calls")
        assert_envelope(resp, 413, "PAYLOAD_TOO_LARGE")
        assert_security_headers(ok(c.get("/healthz"), 200), "/healthz")


@pytest.mark.slow
def test_real_server_logs_no_keys_numbers_or_patient_refs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sec.db'}"
    from core.migrate import upgrade

    upgrade(url)
    keys = make_keys(url)
    bogus = "cg_" + "3145550142" + "Q" * 33  # a key-shaped string holding a number
    server = Server(tmp_path, url, policy=write_policy(tmp_path), log_level="DEBUG",
                    env={"CALLGATE_MAX_BODY_BYTES": str(1024 * 1024)})
    try:
        server.start()
        _exercise(server.url, keys, bogus)
    finally:
        server.stop()
    text = server.log_text()
    info = "\n".join(_lines_at_info(text))
    assert "POST /v1/consents 201" in info and "GET /v1/dnc/{phone} 200" in info, info[-2000:]
    # Keys: nowhere, not even at DEBUG.
    for h in keys.values():
        secret = h["Authorization"].split()[-1]
        assert secret not in text and secret[3:] not in text
    assert bogus not in text and bogus[3:] not in text
    # Numbers and patient references: not at INFO and above.
    for digits in LOG_PHONES:
        m = _phone_pattern(digits).search(info)
        assert m is None, f"a phone number in the log: ...{info[max(0, m.start() - 80):m.end()]}"
    for ref in PATIENT_REFS:
        assert ref not in info
    assert json.dumps(text)  # the log is text, not bytes we failed to read


def test_log_detectors_find_leaks() -> None:
    """The checks above would see a number in any of its formats, and only at INFO+."""
    pattern = _phone_pattern("3145550142")
    for fmt in [*_formats("3145550142"), "%2B13145550142", "555-0142", "tel:+1-314-555-0142"]:
        assert pattern.search(f"INFO callgate.access: GET /v1/dnc/{fmt} 200"), fmt
    assert not pattern.search("GET /v1/dnc/{phone} 200 3.1ms +1314555****")
    text = ("callgate: listening\n"
            "2026-11-23 04:52:30,255 DEBUG callgate.api: detail 3145550142\n"
            "Traceback: 3145550142\n"
            "2026-11-23 04:52:30,256 INFO callgate.access: GET /healthz 200 1.0ms\n")
    assert _lines_at_info(text) == [
        "callgate: listening",
        "2026-11-23 04:52:30,256 INFO callgate.access: GET /healthz 200 1.0ms",
    ]
