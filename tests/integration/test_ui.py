"""The compliance dashboard (/ui) through the app: sign-in, cookie flags, role refusal,
CSRF, automatic logoff (idle and absolute, on the fake clock), logout, no-store, and an audit
entry for every view of patient data, reveal, story and CSV export."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.clock import FakeClock
from core import auditlog
from core.keys import Role, revoke_key
from core.runtime import Runtime
from review import dashboard
from review import sessions as ui_sessions
from tests.helpers import (
    CALLBACK,
    PHONE,
    audit_entries,
    campaign_body,
    consent_body,
    identity,
    seal,
)

NO_CONSENT_PHONE = "+13145550101"
ORAL_PHONE = "+13145550102"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _key(keys: dict[str, dict[str, str]], role: str) -> str:
    return keys[role]["Authorization"].split(" ", 1)[1]


def login(client: TestClient, key: str) -> Any:
    page = client.get("/ui/login")
    assert page.status_code == 200
    token = CSRF.search(page.text)
    assert token
    return client.post(
        "/ui/login", data={"key": key, "csrf": token.group(1)}, follow_redirects=False
    )


def csrf_of(client: TestClient, path: str = "/ui/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    m = CSRF.search(page.text)
    assert m
    return m.group(1)


def seed(client: TestClient, keys: dict[str, dict[str, str]], clock: FakeClock) -> dict[str, Any]:
    """One consented number (queued, leased, flagged, completed), one without consent, one
    with oral consent, one malformed row: refusals of three codes, a flagged attempt."""
    mgr = keys["campaign_manager"]
    start = clock.now() - timedelta(days=20)
    assert client.post("/v1/consents", json=consent_body(start), headers=mgr).status_code == 201
    assert client.post(
        "/v1/consents", json=consent_body(start, ORAL_PHONE, method="oral"), headers=mgr
    ).status_code == 201
    camp = client.post("/v1/campaigns", json=campaign_body(), headers=mgr)
    assert camp.status_code == 201, camp.text
    cid = camp.json()["id"]
    rows = [
        {"external_id": "enc-1", "patient_ref": "MRN-1001", "phone": PHONE},
        {"external_id": "enc-2", "patient_ref": "MRN-1002", "phone": NO_CONSENT_PHONE},
        {"external_id": "enc-3", "patient_ref": "MRN-1003", "phone": ORAL_PHONE},
        {"external_id": "enc-4", "patient_ref": "MRN-1004", "phone": "12"},
    ]
    out = client.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=mgr)
    assert out.status_code == 200, out.text
    assert [r["status"] for r in out.json()["results"]] == [
        "queued", "refused", "refused", "invalid"
    ]
    call_id = out.json()["results"][0]["call_id"]
    task = client.post("/v1/queue/lease", json={"dialer_id": "d-1"}, headers=keys["dialer"])
    assert task.status_code == 200, task.text
    lease = task.json()["tasks"][0]["lease_id"]
    times = {"started_at": clock.now().isoformat(),
             "ended_at": (clock.now() + timedelta(seconds=95)).isoformat()}
    missing = client.post(
        f"/v1/queue/{call_id}/outcome", headers=keys["dialer"],
        json={"lease_id": lease, "result": "connected", "agent_name": "Dana",
              "disclosed_callback_number": CALLBACK, **times},
    )
    assert missing.status_code == 422
    done = client.post(
        f"/v1/queue/{call_id}/outcome", headers=keys["dialer"],
        json={"lease_id": lease, "result": "connected", "agent_id": "A-17",
              "agent_name": "Dana", "disclosed_callback_number": CALLBACK, **times},
    )
    assert done.status_code == 200, done.text
    return {"campaign_id": cid, "call_id": call_id}


@pytest.fixture
def seeded(client: TestClient, keys: dict[str, dict[str, str]], clock: FakeClock
           ) -> dict[str, Any]:
    return seed(client, keys, clock)


def _signed_in(client: TestClient, keys: dict[str, dict[str, str]], role: str = "compliance"
               ) -> None:
    r = login(client, _key(keys, role))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/"


def _views(rt: Runtime, via: str) -> list[dict[str, Any]]:
    """The audit entries of the dashboard page ``via`` (a read, a masked list, an unmask)."""
    out = []
    for e in audit_entries(rt):
        if not e.kind.startswith("patient_data."):
            continue
        payload = json.loads(e.payload)
        if payload.get("via") == via:
            out.append({"actor": e.actor, "subject": e.subject, "kind": e.kind, **payload})
    return out


# --- sign-in, cookies, roles -----------------------------------------------------------------


def test_unauthenticated_pages_redirect_to_login(client: TestClient) -> None:
    for path in ("/ui/", "/ui/refusals", "/ui/calls", "/ui/numbers", "/ui/refusals.csv",
                 "/ui/calls.csv", "/ui/audit", "/ui/audit.csv", "/ui/access"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/ui/login", path
        assert r.headers["cache-control"] == "no-store"
    for path in ("/ui/logout", "/ui/refusals/reveal", "/ui/numbers/lookup", "/ui/access"):
        r = client.post(path, data={"csrf": "x", "refusal_id": "1"}, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/ui/login"
    # The sign-in page and the stylesheet need no session.
    assert client.get("/ui/login").status_code == 200
    css = client.get("/ui/static/ui.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
    # The pages are not part of the JSON contract.
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]


def test_login_sets_a_hashed_session_in_a_strict_httponly_cookie(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    r = login(client, _key(keys, "compliance"))
    assert r.status_code == 303
    cookie = next(v for v in r.headers.get_list("set-cookie")
                  if v.startswith(ui_sessions.COOKIE + "="))
    flags = [p.strip().lower() for p in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/ui" in flags
    assert "secure" not in flags  # plain http here; see the https test
    assert not any(f.startswith(("max-age", "expires")) for f in flags)  # a browser-session cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40
    # Only the hash is stored.
    from sqlalchemy import select

    from core.models import UiSession

    with runtime.db.read() as s:
        rows = list(s.scalars(select(UiSession)))
    assert len(rows) == 1
    assert rows[0].id_hash != token and token not in rows[0].id_hash
    me = identity(runtime, Role.compliance)
    assert rows[0].key_id == me.key_id
    page = client.get("/ui/")
    assert page.status_code == 200
    assert "Signed in as" in page.text and "test-compliance" in page.text
    assert page.headers["cache-control"] == "no-store"
    logins = audit_entries(runtime, "ui.login")
    assert [e.actor for e in logins] == [me.actor]


def test_cookie_is_secure_over_https(app: Any, keys: dict[str, dict[str, str]]) -> None:
    with TestClient(app, base_url="https://testserver") as c:
        r = login(c, _key(keys, "admin"))
        assert r.status_code == 303
        cookie = next(v for v in r.headers.get_list("set-cookie")
                      if v.startswith(ui_sessions.COOKIE + "="))
        assert "secure" in [p.strip().lower() for p in cookie.split(";")]
        assert c.get("/ui/").status_code == 200


@pytest.mark.parametrize("role", ["dialer", "campaign_manager"])
def test_other_roles_are_refused_and_audited(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime, role: str
) -> None:
    r = login(client, _key(keys, role))
    assert r.status_code == 403
    assert "cannot sign in" in r.text and role in r.text
    assert not any(v.startswith(ui_sessions.COOKIE + "=")
                   for v in r.headers.get_list("set-cookie"))
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    refused = audit_entries(runtime, "ui.login_refused")
    who = identity(runtime, Role(role))
    assert [e.actor for e in refused] == [who.actor]
    assert json.loads(refused[0].payload) == {"reason": "role", "role": role,
                                              "source": "testclient"}
    assert _key(keys, role) not in refused[0].payload


def test_unknown_key_refused_and_audited(client: TestClient, runtime: Runtime) -> None:
    r = login(client, "cg_not-a-real-key")
    assert r.status_code == 403
    assert "unknown or has been revoked" in r.text
    refused = audit_entries(runtime, "ui.login_refused")
    assert [(e.actor, json.loads(e.payload)) for e in refused] == [
        ("anonymous", {"reason": "unknown_key", "source": "testclient"})
    ]
    assert "cg_not-a-real-key" not in refused[0].payload


def test_login_form_needs_its_csrf_token(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    client.get("/ui/login")
    r = client.post("/ui/login", data={"key": _key(keys, "compliance"), "csrf": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403
    assert not audit_entries(runtime, "ui.login")


# --- CSRF, logout, automatic logoff ------------------------------------------------------------


def test_post_forms_without_the_session_csrf_token_are_rejected(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys)
    for path, data in (
        ("/ui/logout", {}),
        ("/ui/refusals/reveal", {"refusal_id": "1"}),
        ("/ui/numbers/lookup", {"phone": PHONE}),
    ):
        for token in ("", "forged"):
            r = client.post(path, data={**data, "csrf": token}, follow_redirects=False)
            assert r.status_code == 403, (path, token)
            assert "did not come from this site" in r.text
            assert r.headers["cache-control"] == "no-store"
    assert not audit_entries(runtime, "patient_data.unmask")
    assert not audit_entries(runtime, "ui.logout")
    assert client.get("/ui/").status_code == 200  # still signed in


def test_logout_ends_the_session(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    _signed_in(client, keys)
    token = csrf_of(client)
    r = client.post("/ui/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?reason=logout"
    assert any(v.startswith(ui_sessions.COOKIE + "=") and "max-age=0" in v.lower()
               for v in r.headers.get_list("set-cookie"))
    assert "You have signed out" in client.get(r.headers["location"]).text
    me = identity(runtime, Role.compliance)
    assert ui_sessions.live_sessions(runtime, me.key_id) == 0
    assert [json.loads(e.payload)["reason"] for e in audit_entries(runtime, "ui.logout")] == [
        "logout"
    ]


def test_logoff_after_idle_timeout(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime, clock: FakeClock
) -> None:
    assert runtime.settings.ui_idle_minutes == 15
    _signed_in(client, keys)
    page = client.get("/ui/")
    # The page itself leaves the screen when the session times out (no script needed).
    assert 'http-equiv="refresh" content="901;url=/ui/login?reason=idle_timeout"' in page.text
    clock.advance(timedelta(minutes=14))
    assert client.get("/ui/", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=14))  # 28 min since sign-in, 14 since the last request
    assert client.get("/ui/refusals", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=15))
    r = client.get("/ui/refusals", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?reason=idle_timeout"
    assert "signed out automatically" in client.get(r.headers["location"]).text
    # Ended for good: activity after the logoff does not bring it back.
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    offs = audit_entries(runtime, "ui.logoff")
    assert len(offs) == 1
    assert json.loads(offs[0].payload)["reason"] == "idle_timeout"
    assert offs[0].actor == identity(runtime, Role.compliance).actor


def test_logoff_after_absolute_limit(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime, clock: FakeClock
) -> None:
    _signed_in(client, keys)
    for _ in range(47):  # active every 10 minutes for 7 h 50 min
        clock.advance(timedelta(minutes=10))
        assert client.get("/ui/numbers", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=10))  # 8 h since sign-in
    r = client.get("/ui/numbers", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?reason=absolute_timeout"
    assert [json.loads(e.payload)["reason"] for e in audit_entries(runtime, "ui.logoff")] == [
        "absolute_timeout"
    ]


def test_revoked_key_ends_its_sessions(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime, clock: FakeClock
) -> None:
    _signed_in(client, keys)
    revoke_key(runtime.db, "test-compliance", clock.now())
    r = client.get("/ui/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?reason=key_revoked"


def test_idle_limit_is_configurable(
    runtime: Runtime, keys: dict[str, dict[str, str]], clock: FakeClock
) -> None:
    rt = Runtime(db=runtime.db, policy=runtime.policy, clock=clock,
                 settings=runtime.settings.model_copy(update={"ui_idle_minutes": 1.0,
                                                              "ui_max_hours": 0.5}))
    token, user = ui_sessions.login(rt, _key(keys, "compliance"))
    assert user.idle_expires_at == clock.now() + timedelta(minutes=1)
    assert user.expires_at == clock.now() + timedelta(minutes=30)
    clock.advance(timedelta(seconds=59))
    assert ui_sessions.resume(rt, token).user is not None
    clock.advance(timedelta(seconds=61))
    assert ui_sessions.resume(rt, token) == ui_sessions.Resumed(None, ui_sessions.IDLE)


# --- pages and their audit ---------------------------------------------------------------------


def test_overview_shows_charts_flags_and_the_log_checkpoint(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys)
    assert "No checkpoint signed yet" in client.get("/ui/").text
    seal(runtime)
    page = client.get("/ui/")
    assert page.status_code == 200
    text = page.text
    assert text.count("<svg") == 5
    assert "Refusals by reason code" in text and "NO_CONSENT" in text
    assert "CONSENT_NOT_WRITTEN" in text and "INVALID_PHONE" in text
    assert "Cardiology discharge follow-up" in text
    cp = client.get("/v1/audit/checkpoint", headers=keys["compliance"]).json()
    assert f'id="cp-size">{cp["size"]}<' in text
    assert cp["root_hash"] in text and 'id="cp-signature">valid<' in text
    assert "Verified incrementally" in text
    assert auditlog.signer(runtime).vkey in text
    assert "AGENT_ID_MISSING" in text  # the flagged attempt
    assert "<script" not in text
    assert PHONE not in text and "+1314555" not in text  # no patient data on the overview


def test_refusals_page_masks_filters_and_is_audited(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys)
    page = client.get("/ui/refusals")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    text = page.text
    assert "+1314555****" in text
    assert NO_CONSENT_PHONE not in text and ORAL_PHONE not in text
    assert text.count('<tr id="refusal-') == 3
    assert "47 CFR 64.1200(a)(1)-(2)" in text  # the rule citation
    assert runtime.policy_version.replace("+", "<wbr>+") in text  # may wrap at the hash
    filtered = client.get("/ui/refusals", params={"code": "NO_CONSENT"}).text
    assert filtered.count('<tr id="refusal-') == 1
    assert 'data-code="NO_CONSENT"' in filtered
    assert client.get("/ui/refusals", params={"stage": "dispatch"}).text.count(
        '<tr id="refusal-') == 0
    assert client.get("/ui/refusals", params={"campaign_id": seeded["campaign_id"],
                                              "since": "2026-11-24",
                                              "until": "2026-11-24"}).text.count(
        '<tr id="refusal-') == 3
    bad = client.get("/ui/refusals", params={"code": "NOPE", "since": "yesterday"})
    assert bad.status_code == 200
    assert "Some filters were not applied" in bad.text
    views = _views(runtime, "ui: refusal log")
    me = identity(runtime, Role.compliance)
    assert {v["actor"] for v in views} == {me.actor}
    assert {v["kind"] for v in views} == {"patient_data.list"}  # masked: no number named
    assert len(views) == 5
    assert views[0]["rows"] == 3 and views[1]["rows"] == 1
    assert views[1]["filter"] == {"code": "NO_CONSENT"}


def test_refusals_keyset_pagination(
    client: TestClient, keys: dict[str, dict[str, str]], seeded: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dashboard, "PAGE_SIZE", 2)
    _signed_in(client, keys)
    first = client.get("/ui/refusals", params={"stage": "intake"}).text
    assert first.count('<tr id="refusal-') == 2
    nxt = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert nxt
    url = nxt.group(1).replace("&amp;", "&")
    assert "stage=intake" in url and "cursor=" in url
    second = client.get(url).text
    assert second.count('<tr id="refusal-') == 1
    assert 'rel="next"' not in second
    ids = set(re.findall(r'<tr id="(refusal-\d+)"', first))
    assert ids.isdisjoint(re.findall(r'<tr id="(refusal-\d+)"', second))
    bad = client.get("/ui/refusals", params={"cursor": "garbage"})
    assert bad.status_code == 400
    assert "cursor" in bad.text


def test_reveal_shows_one_row_and_is_audited(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys)
    page = client.get("/ui/refusals", params={"code": "NO_CONSENT"}).text
    rid = int(re.search(r'<tr id="refusal-(\d+)"', page).group(1))  # type: ignore[union-attr]
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    r = client.post("/ui/refusals/reveal",
                    data={"csrf": token, "refusal_id": str(rid), "code": "NO_CONSENT"})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    assert f'data-revealed="1">{NO_CONSENT_PHONE}<' in r.text
    assert r.text.count('<tr id="refusal-') == 1  # the filter was kept
    assert ORAL_PHONE not in r.text
    unmasks = audit_entries(runtime, "patient_data.unmask")
    assert len(unmasks) == 1
    assert unmasks[0].actor == identity(runtime, Role.compliance).actor
    assert json.loads(unmasks[0].payload) == {
        "refusals": [rid], "via": "ui: reveal a refusal's number",
        "patients": [runtime.pseudonym(NO_CONSENT_PHONE)]}
    assert NO_CONSENT_PHONE not in unmasks[0].payload


def test_csv_export_of_the_current_filter(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys)
    page = client.get("/ui/refusals", params={"code": "CONSENT_NOT_WRITTEN"}).text
    href = re.search(r'id="csv-export" href="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert href == "/ui/refusals.csv?code=CONSENT_NOT_WRITTEN"
    r = client.get(href)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["codes"] for row in rows] == ["CONSENT_NOT_WRITTEN"]
    assert rows[0]["phone"] == "'+1314555****"
    assert ORAL_PHONE not in r.text
    everything = list(csv.DictReader(io.StringIO(client.get("/ui/refusals.csv").text)))
    assert len(everything) == 3
    exports = _views(runtime, "ui: refusal log CSV")
    assert exports[0]["filter"] == {"code": "CONSENT_NOT_WRITTEN"} and exports[0]["rows"] == 1
    assert len(exports) == 2 and exports[1]["rows"] == 3
    assert exports[0]["actor"] == identity(runtime, Role.compliance).actor


def test_call_log_page(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys, "admin")
    page = client.get("/ui/calls")
    assert page.status_code == 200
    text = page.text
    assert "A-17" in text and "Dana" in text
    assert CALLBACK in text  # the callback number disclosed
    assert "AGENT_ID_MISSING" in text
    assert "95 s" in text
    assert "connected" in text
    assert PHONE not in text.replace(CALLBACK, "")
    assert "+1314555****" in text
    assert client.get("/ui/calls", params={"agent_id": "B-2"}).text.count(
        '<tr id="attempt-') == 0
    assert client.get("/ui/calls", params={"agent_id": "A-17", "result": "connected",
                                           "campaign_id": seeded["campaign_id"]}).text.count(
        '<tr id="attempt-') == 1
    csv_text = client.get("/ui/calls.csv", params={"agent_id": "A-17"}).text
    assert len(list(csv.DictReader(io.StringIO(csv_text)))) == 1
    views = _views(runtime, "ui: call log")
    assert views and views[0]["actor"] == identity(runtime, Role.admin).actor
    assert views[0]["rows"] == 1 and views[0]["kind"] == "patient_data.list"


def test_number_story_is_complete_in_time_order_and_audited(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime,
    seeded: dict[str, Any],
) -> None:
    _signed_in(client, keys)
    token = csrf_of(client, "/ui/numbers")
    page = client.post("/ui/numbers/lookup", data={"csrf": token, "phone": "(314) 555-0100"},
                       follow_redirects=False)
    # The story is the answer to the POST: the number is never in a URL.
    assert page.status_code == 200 and "location" not in page.headers
    assert str(page.url).endswith("/ui/numbers/lookup")
    assert page.headers["cache-control"] == "no-store"
    text = page.text
    assert "scan://consents/1001.pdf#sha256=ab12" in text  # evidence reference
    assert "Consent obtained (written)" in text
    assert "Accepted at intake" in text
    assert "outcome.rejected" in text and "AGENT_ID_MISSING" in text
    assert "Attempt (lease, reported)" in text
    order = [text.index(s) for s in ("Consent obtained", "Accepted at intake",
                                     "Decision: outcome.rejected", "Attempt (lease")]
    assert order == sorted(order)
    views = _views(runtime, "ui: number look-up")
    assert len(views) == 1
    assert views[0]["actor"] == identity(runtime, Role.compliance).actor
    assert views[0]["calls"] == [seeded["call_id"]]
    assert views[0]["patients"] == [runtime.pseudonym(PHONE)]
    assert PHONE not in json.dumps(views)
    # The refused number's story, opened from its refusal row.
    rows = client.get("/ui/refusals", params={"code": "NO_CONSENT"}).text
    rid = re.search(r'<tr id="refusal-(\d+)"', rows).group(1)  # type: ignore[union-attr]
    r = client.post("/ui/numbers/lookup", data={"csrf": token, "refusal_id": rid},
                    follow_redirects=False)
    assert r.status_code == 200 and "location" not in r.headers
    story = r.text
    assert NO_CONSENT_PHONE in story
    (from_row,) = _views(runtime, "ui: a number's story (from a log row)")
    assert from_row["patients"] == [runtime.pseudonym(NO_CONSENT_PHONE)]
    assert "No consent on file." in story
    assert "Refused at intake" in story and "NO_CONSENT" in story
    assert "47 CFR 64.1200(a)(1)-(2)" in story
    bad = client.post("/ui/numbers/lookup", data={"csrf": token, "phone": "12"})
    assert bad.status_code == 400
    # No page is named by a number any more.
    assert client.get(f"/ui/numbers/{PHONE}", follow_redirects=False).status_code in (404, 405)


def test_dnc_and_revocation_in_the_story(
    client: TestClient, keys: dict[str, dict[str, str]], seeded: dict[str, Any],
    clock: FakeClock,
) -> None:
    mgr = keys["campaign_manager"]
    clock.advance(timedelta(hours=1))
    assert client.post("/v1/consents/revocations", headers=mgr,
                       json={"phone": PHONE, "source": "sms_stop",
                             "received_at": clock.now().isoformat()}).status_code == 201
    _signed_in(client, keys)
    token = csrf_of(client, "/ui/numbers")
    text = client.post("/ui/numbers/lookup", data={"csrf": token, "phone": PHONE}).text
    assert "Consent revoked" in text and "sms_stop" in text
    assert "Added to do-not-call" in text
