"""Issue 16: what a hostile tester found. One section per point of the issue; each test
failed before its fix."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.middleware import BATCH_BODY, DIALER_BODY, SMALL_BODY, body_limit
from core.runtime import Runtime
from tests.helpers import sqlite_only

Keys = dict[str, dict[str, str]]
JSON = {"Content-Type": "application/json"}


# --- 1. the key before the body; a body limit per route ------------------------------------


def _asgi(app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]],
          body_parts: int) -> tuple[int, int, dict[str, Any]]:
    """Calls the app with a body that is never-ending unless read: returns the status, how
    many body messages the app read, and the decoded answer."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": reads < body_parts}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000), "app": app,
    }

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, reads, json.loads(body)


@sqlite_only
@pytest.mark.parametrize("path", ["/v1/queue/lease", "/v1/consents", "/v1/campaigns/x/calls",
                                  "/v1/queue/outcomes", "/v1/nowhere"])
def test_no_key_is_refused_before_the_body_is_read(app: FastAPI, path: str) -> None:
    # A chunked body of 64 MiB (no Content-Length): not one message of it is read.
    status, reads, answer = _asgi(app, "POST", path, [(b"content-type", b"application/json")],
                                  1024)
    assert (status, reads) == (401, 0)
    assert answer["error"]["code"] == "UNAUTHORIZED"
    status, reads, _ = _asgi(app, "POST", path, [(b"content-type", b"application/json"),
                                                 (b"authorization", b"Bearer nope")], 1024)
    assert (status, reads) == (401, 0)


@sqlite_only
def test_a_known_key_over_its_route_limit_is_413_early(app: FastAPI, keys: Keys) -> None:
    auth = keys["dialer"]["Authorization"].encode()
    status, reads, answer = _asgi(
        app, "POST", "/v1/queue/lease",
        [(b"content-type", b"application/json"), (b"authorization", auth)], 1024)
    assert status == 413
    assert answer["error"]["details"] == {"limit_bytes": DIALER_BODY}
    assert reads <= DIALER_BODY // 65536 + 1  # stopped at the limit, not at 64 MiB


@sqlite_only
def test_route_limits(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    large = runtime.settings.max_body_bytes
    assert body_limit("/v1/campaigns/abc/calls", large) == large
    assert body_limit("/v1/numbers/reassigned", large) == large
    assert body_limit("/v1/queue/outcomes", large) == BATCH_BODY
    for p in ("/v1/queue/lease", "/v1/queue/c1/outcome", "/v1/queue/c1/release",
              "/v1/queue/c1/dial", "/v1/check"):
        assert body_limit(p, large) == DIALER_BODY
    for p in ("/v1/consents", "/v1/consents/revocations", "/v1/dnc", "/v1/campaigns",
              "/ui/login"):
        assert body_limit(p, large) == SMALL_BODY
    # Announced by Content-Length: refused before anything is read.
    resp = client.post("/v1/queue/lease", content=b"[" + b"0," * DIALER_BODY + b"0]",
                       headers={**keys["dialer"], **JSON})
    assert resp.status_code == 413
    assert resp.json()["error"]["details"] == {"limit_bytes": DIALER_BODY}
    resp = client.post("/v1/consents", content=b" " * (SMALL_BODY + 1),
                       headers={**keys["admin"], **JSON})
    assert resp.status_code == 413
    # A call list still takes up to the large limit.
    resp = client.post("/v1/campaigns/nope/calls", content=b"[" + b" " * SMALL_BODY * 2 + b"]",
                       headers={**keys["admin"], **JSON})
    assert resp.status_code == 404


# --- 2. a list's row limit is enforced while it is read -----------------------------------


def test_json_list_refused_at_the_row_limit_before_the_rest_is_read() -> None:
    from config.errors import Invalid, TooLarge
    from dialer.intake import parse as intake_parse

    # The item after limit + 1 is broken: reading stopped before it.
    body = b"[" + b"0," * 11 + b"{broken"
    with pytest.raises(TooLarge) as exc:
        intake_parse.json_records(body, limit=10)
    assert exc.value.details["limit"] == 10
    with pytest.raises(Invalid):
        intake_parse.json_records(body, limit=100)
    # Items that are not objects share one marker (no dict per item).
    recs = intake_parse.json_records(b"[0, 1, 2]", limit=10)
    assert recs == [intake_parse.NOT_AN_OBJECT] * 3 and recs[0] is recs[2]


def test_csv_blank_lines_and_rows_are_counted_with_a_budget() -> None:
    from config.errors import TooLarge
    from dialer.intake import parse as intake_parse

    body = "external_id,phone\n" + "\n" * 5000 + "a,1\n"
    with pytest.raises(TooLarge) as exc:
        intake_parse.count_csv_rows(body, limit=100)
    assert exc.value.details == {"blank_lines_limit": 100}
    # Rows: counting stops at limit + 1.
    body = "external_id,phone\n" + "a,1\n" * 5000 + '"broken'
    assert intake_parse.count_csv_rows(body, limit=100) == 101


def _manager_campaign(client: TestClient, keys: Keys) -> str:
    from tests.helpers import campaign_body

    r = client.post("/v1/campaigns", json=campaign_body(calling_window=None),
                    headers=keys["campaign_manager"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_intake_limits_over_http(client: TestClient, keys: Keys, runtime: Runtime,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cid = _manager_campaign(client, keys)
    monkeypatch.setattr(runtime.settings, "max_list_rows", 50)
    mgr = keys["campaign_manager"]
    r = client.post(f"/v1/campaigns/{cid}/calls", content=b"[" + b"0," * 100_000 + b"0]",
                    headers={**mgr, **JSON})
    assert r.status_code == 413 and r.json()["error"]["code"] == "LIST_TOO_LARGE"
    r = client.post(f"/v1/campaigns/{cid}/calls", content=b"external_id,phone\n" + b"\n" * 10**6,
                    headers={**mgr, "Content-Type": "text/csv"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "LIST_TOO_LARGE"
    assert r.json()["error"]["details"] == {"blank_lines_limit": 50}


# --- 4-6. bad rows: validated, never stored, never a 500; no markers from input -------------

PHONES = [f"+1314555{100 + i:04d}" for i in range(20)]


def _consent_all(runtime: Runtime) -> None:
    import uuid

    from sqlalchemy import insert

    from core.models import Consent
    from tests.conftest import T0
    from tests.helpers import days

    with runtime.db.write() as s:
        s.execute(insert(Consent), [
            {"id": str(uuid.uuid4()), "phone": p, "patient_ref": "MRN-x",
             "channels": ["autodialed_voice"], "purposes": ["*"], "method": "written",
             "obtained_at": T0 - days(10), "evidence_ref": "scan://x", "expires_at": None,
             "recorded_by": "test", "recorded_at": T0 - days(10)} for p in PHONES])


def _refusal_rows(runtime: Runtime) -> list[Any]:
    from sqlalchemy import select

    from core.models import Refusal

    with runtime.db.read() as s:
        return list(s.scalars(select(Refusal)))


@pytest.mark.parametrize("column", ["external_id", "patient_ref", "phone", "not_before",
                                    "not_after", "postal_code", "state", "priority"])
def test_a_lone_surrogate_is_an_invalid_row_naming_its_field(
    client: TestClient, keys: Keys, runtime: Runtime, column: str
) -> None:
    _consent_all(runtime)
    cid = _manager_campaign(client, keys)
    rows: list[dict[str, Any]] = [
        {"external_id": f"e{i}", "patient_ref": f"MRN-{i}", "phone": PHONES[i]}
        for i in range(3)
    ]
    rows.insert(1, {"external_id": "bad", "patient_ref": "MRN-b", "phone": PHONES[5],
                    column: "a\ud800b"})
    body = json.dumps(rows).encode()  # "\ud800" escaped: a lone surrogate once decoded
    r = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                    headers={**keys["campaign_manager"], **JSON})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["queued", "invalid", "queued", "queued"]
    assert res[1]["reasons"][0]["details"] == {"field": column}
    assert res[1]["external_id"] == (None if column == "external_id" else "bad")
    # Resubmitted: the three stored calls come back as duplicates naming their calls.
    again = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                        headers={**keys["campaign_manager"], **JSON}).json()["results"]
    assert [x["call_id"] for x in again if x["status"] == "duplicate"] == [
        x["call_id"] for x in res if x["status"] == "queued"]


def test_undecodable_csv_bytes_never_fail(client: TestClient, keys: Keys,
                                          runtime: Runtime) -> None:
    _consent_all(runtime)
    cid = _manager_campaign(client, keys)
    body = (b"external_id,patient_ref,phone\ne1,MRN-1," + PHONES[0].encode() +
            b"\ne\xed\xa0\x80,MRN-2," + PHONES[1].encode() + b"\n")
    r = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                    headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] + r.json()["invalid"] == 2


def test_duplicate_of_a_pending_number_names_its_call(client: TestClient, keys: Keys,
                                                      runtime: Runtime) -> None:
    _consent_all(runtime)
    cid = _manager_campaign(client, keys)
    first = client.post(f"/v1/campaigns/{cid}/calls", json=[
        {"external_id": "a", "phone": PHONES[0]}], headers=keys["campaign_manager"]).json()
    # Another external_id for the same pending number, and a repeat within the list.
    second = client.post(f"/v1/campaigns/{cid}/calls", json=[
        {"external_id": "b", "phone": PHONES[0]}, {"external_id": "c", "phone": PHONES[1]},
        {"external_id": "c", "phone": PHONES[2]}], headers=keys["campaign_manager"]).json()
    res = second["results"]
    assert [x["status"] for x in res] == ["duplicate", "queued", "duplicate"]
    assert res[0]["call_id"] == first["results"][0]["call_id"]
    assert res[2]["call_id"] == res[1]["call_id"]


def test_stray_quote_is_one_invalid_row_and_leaks_nothing(
    client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    _consent_all(runtime)
    cid = _manager_campaign(client, keys)
    lines = [f"e{i},MRN-{1000 + i},{PHONES[i]}" for i in range(10)]
    lines[2] = f'"e2,MRN-1002,{PHONES[2]}'  # a stray opening quote swallows what follows
    body = "external_id,patient_ref,phone\n" + "\n".join(lines) + "\n"
    r = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                    headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["queued", "queued", "invalid"]
    assert res[2]["row"] == 3 and res[2]["external_id"] is None
    assert res[2]["reasons"][0]["details"] == {"field": "row"}
    refused = _refusal_rows(runtime)
    assert len(refused) == 1 and refused[0].external_id is None
    text = json.dumps([(x.external_id, x.reasons) for x in refused]) + r.text
    for i in range(2, 10):
        assert PHONES[i][-7:] not in text and f"MRN-{1000 + i}" not in text


def test_an_overlong_or_multiline_field_keeps_no_text(
    client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    _consent_all(runtime)
    cid = _manager_campaign(client, keys)
    r = client.post(f"/v1/campaigns/{cid}/calls", json=[
        {"external_id": "x" * 129 + PHONES[3], "phone": PHONES[0]},
        {"external_id": f"e1\n{PHONES[4]}", "phone": PHONES[1]},
        {"external_id": "e2", "patient_ref": "MRN\r\nMRN-2", "phone": PHONES[2]},
    ], headers=keys["campaign_manager"])
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["invalid"] * 3
    assert [x["reasons"][0]["details"]["field"] for x in res] == [
        "external_id", "external_id", "patient_ref"]
    assert [x["external_id"] for x in res] == [None, None, "e2"]
    assert [x.external_id for x in _refusal_rows(runtime)] == [None, None, "e2"]


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_internal_markers_are_not_reachable_from_input(
    client: TestClient, keys: Keys, runtime: Runtime, kind: str
) -> None:
    _consent_all(runtime)
    cid = _manager_campaign(client, keys)
    if kind == "json":
        r = client.post(f"/v1/campaigns/{cid}/calls", json=[
            {"external_id": "e0", "phone": PHONES[0], "__malformed__": "PATIENT SECRET"}],
            headers=keys["campaign_manager"])
    else:
        r = client.post(f"/v1/campaigns/{cid}/calls",
                        content=f"external_id,phone,__malformed__\ne0,{PHONES[0]},PATIENT SECRET\n",
                        headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "queued"
    assert r.json()["ignored_columns"] == ["__malformed__"]
    assert "PATIENT SECRET" not in r.text
    assert _refusal_rows(runtime) == []


# --- 7. out-of-range values are 400/422 with the error envelope ----------------------------


def _cursor(log: str, at: str, id_: Any) -> str:
    import base64

    raw = json.dumps({"log": log, "at": at, "id": id_}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("path,log,ok_id", [("/v1/refusals", "refusals", 1),
                                            ("/v1/call-log", "call_log", "x")])
def test_out_of_range_cursors_are_422(client: TestClient, keys: Keys, path: str, log: str,
                                      ok_id: Any) -> None:
    for at, id_ in [("9999-12-31T23:59:59-05:00", ok_id),
                    ("0001-01-01T00:00:00+05:00", ok_id),
                    ("2026-11-01T00:00:00+00:00", 10**30 if isinstance(ok_id, int) else "x" * 99),
                    ("2026-11-01T00:00:00+00:00", -1 if isinstance(ok_id, int) else ok_id * 37)]:
        r = client.get(path, params={"cursor": _cursor(log, at, id_)}, headers=keys["compliance"])
        assert r.status_code == 422, (at, id_, r.text)
        assert r.json()["error"]["details"][0]["field"] == "query.cursor"
    # The largest instant with a UTC date still works.
    r = client.get(path, params={"cursor": _cursor(log, "9999-12-31T23:59:59+00:00", ok_id)},
                   headers=keys["compliance"])
    assert r.status_code == 200, r.text


def _ui_login(client: TestClient, keys: Keys) -> str:
    import re

    token = re.compile(r'name="csrf" value="([^"]+)"')
    page = client.get("/ui/login")
    m = token.search(page.text)
    assert m
    key = keys["compliance"]["Authorization"].split(" ", 1)[1]
    r = client.post("/ui/login", data={"key": key, "csrf": m.group(1)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    m = token.search(client.get("/ui/").text)
    assert m
    return m.group(1)


def test_dashboard_until_the_last_day_and_huge_ids(client: TestClient, keys: Keys) -> None:
    csrf = _ui_login(client, keys)
    for path in ("/ui/refusals", "/ui/calls", "/ui/refusals.csv", "/ui/calls.csv"):
        r = client.get(path, params={"until": "9999-12-31", "since": "9999-12-30"})
        assert r.status_code == 200, (path, r.text)
    for path, data in [("/ui/refusals/reveal", {"refusal_id": "9" * 31}),
                       ("/ui/numbers/lookup", {"refusal_id": "9" * 31})]:
        r = client.post(path, data={"csrf": csrf, **data}, follow_redirects=False)
        assert r.status_code in (400, 422), (path, r.status_code)
        assert "error" in r.json()


# --- 8. revocations: dated within bounds; the answer names what they revoked ------------------


def test_revocation_received_at_bounds(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    from tests.conftest import T0

    mgr = keys["campaign_manager"]
    for when in ("0001-01-01T00:00:00Z", (T0 + _td(hours=1)).isoformat(),
                 (T0 - _td(days=runtime.settings.retention_days + 1)).isoformat()):
        r = client.post("/v1/consents/revocations",
                        json={"phone": PHONES[0], "source": "letter", "received_at": when},
                        headers=mgr)
        assert r.status_code == 422, (when, r.text)
        assert r.json()["error"]["details"][0]["field"] == "body.received_at"
    # A minute ahead (clock skew) is taken as now.
    r = client.post("/v1/consents/revocations",
                    json={"phone": PHONES[0], "source": "letter",
                          "received_at": (T0 + _td(minutes=1)).isoformat()}, headers=mgr)
    assert r.status_code == 201, r.text
    assert r.json()["received_at"].startswith(T0.isoformat()[:19])


def _td(**kw: float) -> Any:
    from datetime import timedelta

    return timedelta(**kw)


def test_revocation_answer_names_the_consents_it_revoked(client: TestClient, keys: Keys) -> None:
    from tests.conftest import T0
    from tests.helpers import consent_body

    mgr = keys["campaign_manager"]
    old = client.post("/v1/consents", json=consent_body(T0 - _td(days=60), PHONES[0]),
                      headers=mgr).json()["id"]
    new = client.post("/v1/consents", json=consent_body(T0 - _td(days=10), PHONES[0]),
                      headers=mgr).json()["id"]
    # A letter received between the two: revokes the old, not the re-consent after it.
    r = client.post("/v1/consents/revocations", json={
        "phone": PHONES[0], "source": "letter",
        "received_at": (T0 - _td(days=30)).isoformat()}, headers=mgr)
    assert r.status_code == 201
    assert r.json()["revoked_consents"] == [old]
    assert r.json()["consents_left_active"] == [new]
    # A letter dated before both revoked nothing: the clerk sees it at once.
    r = client.post("/v1/consents/revocations", json={
        "phone": PHONES[0], "source": "letter",
        "received_at": (T0 - _td(days=90)).isoformat()}, headers=mgr)
    assert r.json()["revoked_consents"] == []
    assert r.json()["consents_left_active"] == [old, new]
    # Now one revokes the re-consent; a second one the same day revokes nothing more.
    r = client.post("/v1/consents/revocations", json={"phone": PHONES[0], "source": "web"},
                    headers=mgr)
    assert r.json()["revoked_consents"] == [new] and r.json()["consents_left_active"] == []
    r = client.post("/v1/consents/revocations", json={"phone": PHONES[0], "source": "web"},
                    headers=mgr)
    assert r.json()["revoked_consents"] == []
    hist = client.get("/v1/consents", params={"phone": PHONES[0]}, headers=mgr).json()
    assert [c["status"] for c in hist["consents"]] == ["revoked", "revoked"]
    assert sorted(x for rev in hist["revocations"] for x in rev["revoked_consents"]) == sorted(
        [old, new])
    # Whatever the dates, the number is on the do-not-call list.
    assert client.get(f"/v1/dnc/{PHONES[0]}", headers=mgr).json()["on_list"] is True


# --- 11. the SQLite database and its side files are private ---------------------------------


def test_sqlite_files_are_created_0600(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    from core.db import Database
    from core.migrate import upgrade

    old = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path / 'cg.db'}"
        upgrade(url)
        db = Database(url)
        with db.write() as s:  # WAL, -shm and -writelock exist now
            from sqlalchemy import text

            s.execute(text("CREATE TABLE t (x INTEGER)"))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert {"cg.db", "cg.db-wal", "cg.db-shm", "cg.db-writelock"} <= set(names), names
        for p in tmp_path.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p.name, oct(p.stat().st_mode))
        db.dispose()
        # An existing file with group/other access is made private on the next open.
        os.chmod(tmp_path / "cg.db", 0o644)
        Database(url).dispose()
        assert stat.S_IMODE((tmp_path / "cg.db").stat().st_mode) == 0o600
    finally:
        os.umask(old)


# --- 3. sign-in attempts: throttled per client, refusals cost bounded log space ---------------


def _login_form(client: TestClient) -> str:
    import re

    page = client.get("/ui/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m
    return m.group(1)


def test_sign_in_flood_is_throttled_and_counted(client: TestClient, runtime: Runtime,
                                                clock: Any) -> None:
    from datetime import timedelta

    from review.sessions import flush_login_counts
    from tests.helpers import audit_entries

    csrf = _login_form(client)
    limit = runtime.settings.ui_login_attempts_per_minute
    codes = []
    import re

    for i in range(300):
        r = client.post("/ui/login", data={"key": f"cg_guess-{i}", "csrf": csrf},
                        follow_redirects=False)
        codes.append(r.status_code)
        m = re.search(r'name="csrf" value="([^"]+)"', r.text)  # each page sets a new one
        assert m
        csrf = m.group(1)
    assert codes == [403] * limit + [429] * (300 - limit)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "Too many sign-in attempts" in r.text and r.headers["content-type"].startswith(
        "text/html")
    # One entry at once; the rest of the minute is one entry with the count when the next
    # minute starts (here: a sign-in attempt a minute later, then a flush).
    assert len(audit_entries(runtime, "ui.login_refused")) == 1
    assert audit_entries(runtime, "ui.login_refused_more") == []
    clock.advance(timedelta(minutes=1))
    r = client.post("/ui/login", data={"key": "cg_guess-x", "csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 403  # a new minute: admitted again
    [more] = audit_entries(runtime, "ui.login_refused_more")
    payload = json.loads(more.payload)
    assert payload["count"] == 299 and payload["source"] == "testclient"
    assert payload["reasons"] == {"throttled": 300 - limit, "unknown_key": limit - 1}
    assert len(audit_entries(runtime, "ui.login_refused")) == 2
    flush_login_counts(runtime)  # nothing more to count: the new minute's one was audited
    assert len(audit_entries(runtime, "ui.login_refused_more")) == 1
    assert not any("cg_guess" in e.payload for e in audit_entries(runtime))


def test_sources_are_addresses_and_ipv6_prefixes() -> None:
    from review.sessions import source_of

    assert source_of("203.0.113.7") == "203.0.113.7"
    assert source_of("2001:db8:1:2:3:4:5:6") == source_of("2001:db8:1:2::9") == \
        "2001:db8:1:2::/64"
    assert source_of("::ffff:203.0.113.7") == "203.0.113.7"
    assert source_of(None) == "unknown"


# --- 12. HTTPS: Secure cookies and HSTS -------------------------------------------------------


def test_https_setting_makes_cookies_secure_and_sends_hsts(runtime: Runtime, keys: Keys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from api.app import create_app

    plain = TestClient(create_app(runtime, migrate=False))
    assert "strict-transport-security" not in plain.get("/healthz").headers
    assert "secure" not in plain.get("/ui/login").headers["set-cookie"].lower()
    monkeypatch.setattr(runtime.settings, "https", True)
    tls = TestClient(create_app(runtime, migrate=False))
    assert tls.get("/healthz").headers["strict-transport-security"] == "max-age=31536000"
    assert "secure" in tls.get("/ui/login").headers["set-cookie"].lower()
    # Over https (the scheme uvicorn takes from a trusted proxy): HSTS without the setting.
    monkeypatch.setattr(runtime.settings, "https", False)
    via = TestClient(create_app(runtime, migrate=False), base_url="https://testserver")
    assert via.get("/healthz").headers["strict-transport-security"] == "max-age=31536000"
