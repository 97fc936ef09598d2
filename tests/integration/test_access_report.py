"""Every read of patient data leaves an access entry, and the access report finds it, by the
number and by the patient reference (both databases). The log never holds the number or the
reference in clear; the report's own use is audited."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config.clock import FakeClock
from core.keys import Role
from core.runtime import Runtime
from tests.helpers import (
    PHONE,
    audit_entries,
    campaign_body,
    consent_body,
    identity,
    seal,
)

Keys = dict[str, dict[str, str]]
OTHER = "+13145550177"  # the same patient's second number: named by a call only, no consent
STRANGER = "+13145550155"  # another patient's number (MRN-2002)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Site:
    client: TestClient
    keys: Keys
    rt: Runtime
    call_id: str
    other_call_id: str


@pytest.fixture
def site(client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock) -> Site:
    """Patient MRN-1001: a consent for PHONE, calls to PHONE and OTHER (refused: no consent);
    PHONE's call leased (an attempt in the call log). Patient MRN-2002: STRANGER."""
    mgr = keys["campaign_manager"]
    assert client.post("/v1/consents", json=consent_body(clock.now() - timedelta(days=3)),
                       headers=mgr).status_code == 201
    assert client.post("/v1/consents", headers=mgr, json={
        **consent_body(clock.now() - timedelta(days=3), STRANGER), "patient_ref": "MRN-2002",
    }).status_code == 201
    cid = client.post("/v1/campaigns", json=campaign_body(), headers=mgr).json()["id"]
    rows = [{"external_id": "e1", "patient_ref": "MRN-1001", "phone": PHONE},
            {"external_id": "e2", "patient_ref": "MRN-1001", "phone": OTHER},
            {"external_id": "e3", "patient_ref": "MRN-2002", "phone": STRANGER}]
    out = client.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=mgr).json()
    assert [r["status"] for r in out["results"]] == ["queued", "refused", "queued"]
    leased = client.post("/v1/queue/lease", json={"dialer_id": "d", "limit": 10},
                         headers=keys["dialer"]).json()["tasks"]
    assert {t["call_id"] for t in leased} >= {out["results"][0]["call_id"]}
    return Site(client, keys, runtime, out["results"][0]["call_id"],
                out["results"][1]["call_id"])


def _ui_csrf(s: Site, path: str = "/ui/numbers") -> str:
    page = s.client.get("/ui/login")
    token = CSRF.search(page.text)
    assert token
    key = s.keys["compliance"]["Authorization"].split(" ", 1)[1]
    r = s.client.post("/ui/login", data={"key": key, "csrf": token.group(1)},
                      follow_redirects=False)
    assert r.status_code == 303
    m = CSRF.search(s.client.get(path).text)
    assert m
    return m.group(1)


def _get(s: Site, path: str, role: str = "compliance", **params: Any) -> Any:
    r = s.client.get(path, params=params, headers=s.keys[role])
    assert r.status_code in (200, 404), (path, r.text)
    return r


def _refusal_id(s: Site) -> int:
    items = _get(s, "/v1/refusals", stage="intake").json()["items"]
    return int(next(i["id"] for i in items if i["external_id"] == "e2"))


def _attempt_id(s: Site) -> str:
    items = _get(s, "/v1/call-log").json()["items"]
    return str(next(i["id"] for i in items if i["call_id"] == s.call_id))


# Each access: what it does, the number it shows, the role that did it, and its "via".
ACCESSES: dict[str, tuple[Callable[[Site], Any], str, str, str]] = {
    "consents": (lambda s: _get(s, "/v1/consents", phone=PHONE), PHONE, "compliance",
                 "GET /v1/consents"),
    "dnc, not on the list (404)": (lambda s: _get(s, f"/v1/dnc/{PHONE}"), PHONE,
                                   "compliance", "GET /v1/dnc/{phone}"),
    "dnc, on the list": (
        lambda s: (s.client.post("/v1/dnc", json={"phone": OTHER, "reason": "asked"},
                                 headers=s.keys["campaign_manager"]),
                   _get(s, f"/v1/dnc/{OTHER}", role="campaign_manager")),
        OTHER, "campaign_manager", "GET /v1/dnc/{phone}"),
    "a call": (lambda s: _get(s, f"/v1/calls/{s.call_id}"), PHONE, "compliance",
               "GET /v1/calls/{call_id}"),
    "preflight check": (
        lambda s: s.client.post("/v1/check", headers=s.keys["dialer"],
                                json={"phone": OTHER, "purpose": "discharge_followup"}),
        OTHER, "dialer", "POST /v1/check"),
    "preflight check with a reservation": (
        lambda s: s.client.post("/v1/check", headers=s.keys["admin"], json={
            "phone": PHONE, "purpose": "discharge_followup", "reserve": True,
            "agent_id": "A-1", "agent_name": "Dana",
            "campaign_id": _get(s, f"/v1/calls/{s.call_id}").json()["campaign_id"]}),
        PHONE, "admin", "POST /v1/check"),
    "unmasked refusal log": (lambda s: _get(s, "/v1/refusals", unmask="true"), OTHER,
                             "compliance", "GET /v1/refusals"),
    "unmasked refusal export": (lambda s: _get(s, "/v1/refusals.csv", unmask="true"), OTHER,
                                "compliance", "GET /v1/refusals.csv"),
    "unmasked call log": (lambda s: _get(s, "/v1/call-log", unmask="true"), PHONE,
                          "compliance", "GET /v1/call-log"),
    "unmasked call-log export": (lambda s: _get(s, "/v1/call-log.csv", unmask="true"), PHONE,
                                 "compliance", "GET /v1/call-log.csv"),
    "dashboard: reveal": (
        lambda s: s.client.post("/ui/refusals/reveal", data={
            "csrf": _ui_csrf(s, "/ui/refusals"), "refusal_id": str(_refusal_id(s))}),
        OTHER, "compliance", "ui: reveal a refusal's number"),
    "dashboard: number look-up": (
        lambda s: s.client.post("/ui/numbers/lookup",
                                data={"csrf": _ui_csrf(s), "phone": "(314) 555-0177"}),
        OTHER, "compliance", "ui: number look-up"),
    "dashboard: story from a refusal row": (
        lambda s: s.client.post("/ui/numbers/lookup", data={
            "csrf": _ui_csrf(s), "refusal_id": str(_refusal_id(s))}),
        OTHER, "compliance", "ui: a number's story (from a log row)"),
    "dashboard: story from a call-log row": (
        lambda s: s.client.post("/ui/numbers/lookup", data={
            "csrf": _ui_csrf(s), "attempt_id": _attempt_id(s)}),
        PHONE, "compliance", "ui: a number's story (from a log row)"),
    "access report": (lambda s: _get(s, "/v1/access-report", phone=OTHER), OTHER,
                      "compliance", "GET /v1/access-report"),
    "dashboard: access report": (
        lambda s: s.client.post("/ui/access", data={
            "csrf": _ui_csrf(s, "/ui/access"), "by": "patient_ref", "value": "MRN-1001"}),
        PHONE, "compliance", "ui: access report"),
}


def _report(s: Site, **params: str) -> list[dict[str, Any]]:
    r = s.client.get("/v1/access-report", params=params, headers=s.keys["compliance"])
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(ACCESSES))
def test_every_read_of_patient_data_is_in_the_access_report(site: Site, name: str) -> None:
    do, number, role, via = ACCESSES[name]
    before = len(audit_entries(site.rt))
    result = do(site)
    responses = result if isinstance(result, tuple) else (result,)
    assert all(r.status_code in (200, 201, 404) for r in responses), name
    new = audit_entries(site.rt)[before:]
    assert any(json.loads(e.payload).get("via") == via for e in new), (name, new)
    who = identity(site.rt, Role(role))
    for params in ({"phone": number}, {"patient_ref": "MRN-1001"}):
        items = [i for i in _report(site, **params) if i["via"] == via]
        assert items, (name, params)
        assert items[0]["actor"] == who.actor and items[0]["key_name"] == who.name
        assert items[0]["kind"].startswith("patient_data.")
    # Another patient's report does not show it (an unmasked call log shows both
    # patients' attempts, so it is in both reports).
    in_other = [i for i in _report(site, patient_ref="MRN-2002") if i["via"] == via]
    assert bool(in_other) == via.startswith("GET /v1/call-log"), (name, in_other)
    # The number and the reference are nowhere in the log, in clear.
    dump = " ".join(f"{e.subject} {e.payload}" for e in audit_entries(site.rt))
    assert "5550177" not in dump and "5550100" not in dump and "MRN-" not in dump


def test_masked_reads_are_audited_but_name_no_patient(site: Site) -> None:
    before = len(audit_entries(site.rt))
    for path in ("/v1/refusals", "/v1/refusals.csv", "/v1/call-log", "/v1/call-log.csv"):
        _get(site, path)
    new = audit_entries(site.rt)[before:]
    assert [(e.kind, json.loads(e.payload)["via"]) for e in new] == [
        ("patient_data.list", "GET /v1/refusals"), ("patient_data.list", "GET /v1/refusals.csv"),
        ("patient_data.list", "GET /v1/call-log"), ("patient_data.list", "GET /v1/call-log.csv")]
    assert all("patients" not in json.loads(e.payload) for e in new)
    assert [json.loads(e.payload)["rows"] for e in new] == [1, 1, 2, 2]


def test_the_report_in_time_order_with_dates_pages_and_its_own_entry(
    site: Site, clock: FakeClock
) -> None:
    s = site
    _get(s, "/v1/consents", phone=PHONE)
    clock.advance(timedelta(days=2))
    _get(s, f"/v1/calls/{s.call_id}")
    _get(s, f"/v1/dnc/{PHONE}")
    seal(s.rt)
    items = _report(s, phone=PHONE)
    assert [i["via"] for i in items] == ["GET /v1/consents", "GET /v1/calls/{call_id}",
                                         "GET /v1/dnc/{phone}"]
    assert all(isinstance(i["index"], int) for i in items)  # sealed
    assert items == sorted(items, key=lambda i: i["at"])
    later = _report(s, phone=PHONE, since=(clock.now() - timedelta(days=1)).isoformat())
    assert [i["via"] for i in later][:2] == ["GET /v1/calls/{call_id}", "GET /v1/dnc/{phone}"]
    # The two reports above were themselves accesses to PHONE's data.
    assert [i["via"] for i in _report(s, phone=PHONE)][-2:] == ["GET /v1/access-report"] * 2
    # Pages.
    first = s.client.get("/v1/access-report", params={"phone": PHONE, "limit": 2},
                         headers=s.keys["admin"]).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = s.client.get("/v1/access-report", headers=s.keys["admin"], params={
        "phone": PHONE, "limit": 100, "cursor": first["next_cursor"]}).json()
    assert [i["via"] for i in first["items"] + rest["items"]][:3] == [
        "GET /v1/consents", "GET /v1/calls/{call_id}", "GET /v1/dnc/{phone}"]
    (own,) = [e for e in audit_entries(s.rt, "patient_data.report")][:1]
    payload = json.loads(own.payload)
    assert payload["by"] == "phone" and payload["patients"] == [s.rt.pseudonym(PHONE)]


def test_report_by_patient_ref_covers_every_number_of_the_patient(site: Site) -> None:
    _get(site, "/v1/consents", phone=PHONE)
    _get(site, "/v1/consents", phone=OTHER)
    _get(site, "/v1/consents", phone=STRANGER)
    vias = [i for i in _report(site, patient_ref="MRN-1001") if i["via"] == "GET /v1/consents"]
    assert len(vias) == 2  # PHONE's (a consent) and OTHER's (a call), not STRANGER's
    (own,) = [e for e in audit_entries(site.rt, "patient_data.report")]
    assert json.loads(own.payload)["patients"] == sorted(
        [site.rt.pseudonym(PHONE), site.rt.pseudonym(OTHER)])
    assert json.loads(own.payload)["numbers"] == 2
    assert _report(site, patient_ref="MRN-unknown") == []


def test_report_parameters_and_roles(site: Site) -> None:
    c = site.keys["compliance"]
    for params in ({}, {"phone": PHONE, "patient_ref": "MRN-1001"}, {"phone": "12"},
                   {"phone": PHONE, "since": "2026-11-25T00:00:00Z",
                    "until": "2026-11-24T00:00:00Z"},
                   {"phone": PHONE, "limit": "0"}, {"phone": PHONE, "cursor": "garbage"}):
        r = site.client.get("/v1/access-report", params=params, headers=c)
        assert r.status_code == 422, (params, r.text)
        assert "5550100" not in r.text
    for role in ("dialer", "campaign_manager"):
        r = site.client.get("/v1/access-report", params={"phone": PHONE},
                            headers=site.keys[role])
        assert r.status_code == 403
    assert site.client.get("/v1/access-report", params={"phone": PHONE}).status_code == 401


def test_the_dashboard_report_page_posts_and_never_puts_the_number_in_a_url(
    site: Site
) -> None:
    _get(site, "/v1/consents", phone=OTHER)
    token = _ui_csrf(site, "/ui/access")
    page = site.client.post("/ui/access", data={"csrf": token, "by": "phone",
                                                "value": "+1 314 555 0177"})
    assert page.status_code == 200 and str(page.url).endswith("/ui/access")
    assert "GET /v1/consents" in page.text and "test-compliance" in page.text
    bad = site.client.post("/ui/access", data={"csrf": token, "by": "phone", "value": "12"})
    assert bad.status_code == 400
    empty = site.client.post("/ui/access", data={"csrf": token, "by": "phone", "value": ""})
    assert empty.status_code == 400
    assert site.client.post("/ui/access", data={"csrf": "x", "value": PHONE}).status_code == 403


def test_a_check_of_an_unparseable_number_reads_nothing_and_is_not_audited(site: Site) -> None:
    before = len(audit_entries(site.rt))
    r = site.client.post("/v1/check", headers=site.keys["dialer"],
                         json={"phone": "12", "purpose": "discharge_followup"})
    assert r.status_code == 200 and r.json()["allowed"] is False
    assert len(audit_entries(site.rt)) == before



