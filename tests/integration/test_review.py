"""Compliance review: refusal log, summary, CSV exports and the call log, on both databases."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from config.reasons import Code, reason
from core import refusals
from core.keys import Role
from core.models import Attempt, Campaign, Refusal
from core.runtime import Runtime
from review import exports
from review import logs as review
from tests.conftest import T0
from tests.helpers import audit_entries, campaign_body, consent_body, days, identity

H = dict[str, dict[str, str]]
CAMP_A, CAMP_B = "camp-a", "camp-b"
HOUR = timedelta(hours=1)


def phone(i: int) -> str:
    return f"+1314555{100 + i:04d}"


def add_refusal(
    rt: Runtime,
    at: datetime,
    codes: list[str],
    *,
    campaign_id: str | None = CAMP_A,
    stage: str = "intake",
    status: str = "refused",
    ext: str | None = None,
    ph: str | None = "+13145550100",
    row: int | None = None,
) -> int:
    data = refusals.refusal_row(
        at=at, stage=stage, status=status, reasons=[reason(Code(c)) for c in codes],
        policy_version=rt.policy_version, external_id=ext or f"ext-{uuid.uuid4().hex[:6]}",
        campaign_id=campaign_id, phone=ph, row=row,
    )
    with rt.db.write() as s:
        return int(s.execute(insert(Refusal).returning(Refusal.id), [data]).scalar_one())


@pytest.fixture
def seeded(runtime: Runtime) -> dict[str, int]:
    """Five refusals over three UTC days, two campaigns, both stages."""
    return {
        "a1": add_refusal(runtime, T0 - days(2), ["NO_CONSENT"], ext="a1", row=1),
        "a2": add_refusal(runtime, T0 - days(1), ["DO_NOT_CALL", "CONSENT_REVOKED"], ext="a2"),
        "b1": add_refusal(runtime, T0 - days(1) + HOUR, ["CONSENT_REVOKED"], campaign_id=CAMP_B,
                          stage="dispatch", status="withdrawn", ext="b1"),
        "b2": add_refusal(runtime, T0, ["INVALID_FIELD", "INVALID_PHONE"], campaign_id=CAMP_B,
                          status="invalid", ph=None, ext="b2", row=7),
        "a3": add_refusal(runtime, T0, ["DEADLINE_PASSED"], stage="dispatch", status="expired",
                          ext="a3", ph=phone(3)),
    }


def get(client: TestClient, keys: H, path: str, role: str = "compliance", **params: Any) -> Any:
    return client.get(path, params=params, headers=keys[role])


def exts(res: Any) -> list[str]:
    assert res.status_code == 200, res.text
    return [i["external_id"] for i in res.json()["items"]]


# --- the refusal log ---------------------------------------------------------------------


def test_refusal_log_filters(client: TestClient, keys: H, seeded: dict[str, int]) -> None:
    path = "/v1/refusals"
    # newest first; equal `at` by id descending
    assert exts(get(client, keys, path)) == ["a3", "b2", "b1", "a2", "a1"]
    assert exts(get(client, keys, path, since=(T0 - days(1)).isoformat())) == [
        "a3", "b2", "b1", "a2"]
    assert exts(get(client, keys, path, until=T0.isoformat())) == ["b1", "a2", "a1"]
    assert exts(get(client, keys, path, since=(T0 - days(1)).isoformat(),
                    until=(T0 - days(1) + HOUR).isoformat())) == ["a2"]
    assert exts(get(client, keys, path, campaign_id=CAMP_A)) == ["a3", "a2", "a1"]
    # any reason with the code, not only the first one
    assert exts(get(client, keys, path, code="CONSENT_REVOKED")) == ["b1", "a2"]
    assert exts(get(client, keys, path, code="INVALID_PHONE")) == ["b2"]
    assert exts(get(client, keys, path, code="CONSENT_EXPIRED")) == []
    assert exts(get(client, keys, path, stage="dispatch")) == ["a3", "b1"]
    assert exts(get(client, keys, path, campaign_id=CAMP_B, code="CONSENT_REVOKED",
                    stage="dispatch")) == ["b1"]
    item = get(client, keys, path, code="DO_NOT_CALL").json()["items"][0]
    assert item["id"] == seeded["a2"] and item["campaign_id"] == CAMP_A
    assert item["stage"] == "intake" and item["status"] == "refused"
    assert item["code"] == "DO_NOT_CALL"
    assert [r["code"] for r in item["reasons"]] == ["DO_NOT_CALL", "CONSENT_REVOKED"]
    assert all(r["message"] and r["rule"] for r in item["reasons"])
    assert item["at"].startswith("2026-11-23T17:00:00") and item["policy_version"]
    invalid = get(client, keys, path, code="INVALID_FIELD").json()["items"][0]
    assert invalid["phone"] is None and invalid["row"] == 7 and invalid["status"] == "invalid"


BAD_QUERIES: list[tuple[dict[str, Any], str]] = [
    ({"since": "yesterday"}, "query.since"),
    ({"since": "2026-11-24T00:00:00"}, "query.since"),  # no offset
    ({"since": "2026-11-24T00:00:00Z", "until": "2026-11-23T00:00:00Z"}, "query.until"),
    ({"limit": 0}, "query.limit"),
    ({"limit": 1001}, "query.limit"),
    ({"code": "NOT_A_CODE"}, "query.code"),
    ({"stage": "later"}, "query.stage"),
    ({"cursor": "not-a-cursor"}, "query.cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'{"log":"refusals","at":"x","id":1}').decode()},
     "query.cursor"),
    ({"cursor": review.encode_cursor("refusals", T0, 1)[:-3]}, "query.cursor"),
    ({"cursor": review.encode_cursor("call_log", T0, "abc")}, "query.cursor"),
    ({"cursor": review.encode_cursor("refusals", T0, "abc")}, "query.cursor"),
]


def test_bad_queries_are_validation_errors(client: TestClient, keys: H) -> None:
    for params, field in BAD_QUERIES:
        for path in ("/v1/refusals", "/v1/refusals.csv"):
            if path.endswith(".csv") and ("limit" in params or "cursor" in params):
                continue
            res = get(client, keys, path, **params)
            assert res.status_code == 422, (params, res.text)
            err = res.json()["error"]
            assert err["code"] == "VALIDATION_ERROR"
            assert field in {d["field"] for d in err["details"]}, (params, err)


def test_pagination_walks_every_row_once_and_is_stable(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    # 23 rows on 4 distinct instants: lots of ties for the id tie-breaker
    for i in range(23):
        add_refusal(runtime, T0 - (i % 4) * HOUR, ["NO_CONSENT"], ext=f"p{i}")
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    late: dict[str, int] = {}
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = get(client, keys, "/v1/refusals", **params).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        if pages == 2:
            # Rows arriving mid-walk are newer, or tie with a seen instant at a higher id:
            # either way they sort before the cursor and never shift the walk. A row
            # back-dated into the part not yet walked is met in its place.
            last = body["items"][-1]
            late["newer"] = add_refusal(runtime, T0 + HOUR, ["NO_CONSENT"], ext="new-1")
            late["tie"] = add_refusal(runtime, datetime.fromisoformat(last["at"]),
                                      ["NO_CONSENT"], ext="new-2")
            late["ahead"] = add_refusal(runtime, T0 - 3 * HOUR, ["NO_CONSENT"], ext="new-3")
        cursor = body["next_cursor"]
        if cursor is None:
            break
    with runtime.db.read() as s:
        expected = [
            i for i in s.scalars(select(Refusal.id).order_by(Refusal.at.desc(),
                                                             Refusal.id.desc()))
            if i not in (late["newer"], late["tie"])
        ]
    assert late["ahead"] in expected
    assert seen == expected and len(set(seen)) == 24
    assert pages == 6  # 24 rows at 4 per page; the last page has no next_cursor
    first = get(client, keys, "/v1/refusals", limit=4).json()
    assert first["items"][0]["external_id"] == "new-1"


def test_phones_are_masked_unless_unmasked_and_unmasking_is_audited(
    client: TestClient, keys: H, runtime: Runtime, seeded: dict[str, int]
) -> None:
    before = len(audit_entries(runtime))
    items = get(client, keys, "/v1/refusals", stage="intake").json()["items"]
    assert {i["phone"] for i in items} == {"+1314555****", None}
    assert "5550100" not in json.dumps(items)
    # A masked read is audited too: one entry naming the filters and the row count.
    listed = audit_entries(runtime)[before:]
    assert [e.kind for e in listed] == [review.LIST_KIND]
    assert json.loads(listed[0].payload) == {
        "via": "GET /v1/refusals", "filter": {"stage": "intake"}, "rows": len(items)}
    res = get(client, keys, "/v1/refusals", campaign_id=CAMP_A, limit=2, unmask="true")
    shown = res.json()["items"]
    assert [i["phone"] for i in shown] == [phone(3), "+13145550100"]
    entries = audit_entries(runtime, review.UNMASK_KIND)
    assert len(entries) == 1
    e = entries[0]
    who = identity(runtime, Role.compliance)
    assert e.actor == f"key:{who.key_id}" and e.subject == "refusals"
    payload = json.loads(e.payload)
    # An unmasked read names every number it revealed, by pseudonym only.
    assert payload == {"refusals": [i["id"] for i in shown], "via": "GET /v1/refusals",
                       "filter": {"campaign_id": CAMP_A}, "rows": 2,
                       "patients": sorted(runtime.pseudonym(p) for p in
                                          (phone(3), "+13145550100"))}
    assert "555" not in e.payload
    # an admin may unmask too, and is named
    get(client, keys, "/v1/refusals", role="admin", unmask="true")
    admin = identity(runtime, Role.admin)
    assert audit_entries(runtime, review.UNMASK_KIND)[-1].actor == f"key:{admin.key_id}"
    assert client.get("/v1/audit/verify", headers=keys["compliance"]).json()["ok"] is True


def test_summary_counts(
    client: TestClient, keys: H, runtime: Runtime, seeded: dict[str, int]
) -> None:
    body = get(client, keys, "/v1/refusals/summary").json()
    assert body["total"] == 5
    assert {c["code"]: c["count"] for c in body["by_code"]} == {
        "NO_CONSENT": 1, "DO_NOT_CALL": 1, "CONSENT_REVOKED": 2, "INVALID_FIELD": 1,
        "INVALID_PHONE": 1, "DEADLINE_PASSED": 1}
    assert body["by_code"][0] == {"code": "CONSENT_REVOKED", "count": 2}
    assert body["by_campaign"] == [{"campaign_id": CAMP_A, "count": 3},
                                   {"campaign_id": CAMP_B, "count": 2}]
    assert body["by_stage"] == [{"stage": "intake", "count": 3},
                                {"stage": "dispatch", "count": 2}]
    assert body["by_day"] == [{"day": "2026-11-22", "count": 1}, {"day": "2026-11-23", "count": 2},
                              {"day": "2026-11-24", "count": 2}]
    part = get(client, keys, "/v1/refusals/summary", since=(T0 - days(1) + HOUR).isoformat(),
               until=T0.isoformat()).json()
    assert part["total"] == 1 and part["by_code"] == [{"code": "CONSENT_REVOKED", "count": 1}]
    assert part["by_day"] == [{"day": "2026-11-23", "count": 1}]
    # days are UTC dates, whatever the offset the instant was written with
    add_refusal(runtime, datetime.fromisoformat("2026-11-24T00:30:00+00:00"), ["NO_CONSENT"])
    add_refusal(runtime, datetime.fromisoformat("2026-11-23T23:59:59.999999+00:00"),
                ["NO_CONSENT"])
    add_refusal(runtime, datetime.fromisoformat("2026-11-24T20:30:00-05:00"), ["NO_CONSENT"])
    body = get(client, keys, "/v1/refusals/summary",
               since="2026-11-23T20:00:00Z").json()
    assert body["by_day"] == [{"day": "2026-11-23", "count": 1}, {"day": "2026-11-24", "count": 3},
                              {"day": "2026-11-25", "count": 1}]


def test_intake_refusals_appear_in_the_log(client: TestClient, keys: H) -> None:
    r = client.post("/v1/campaigns", json=campaign_body(), headers=keys["campaign_manager"])
    cid = r.json()["id"]
    client.post("/v1/consents", json=consent_body(T0 - days(3), phone(1), method="oral"),
                headers=keys["campaign_manager"])
    rows = [{"external_id": "i1", "phone": phone(1)}, {"external_id": "i2", "phone": "12"}]
    res = client.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=keys["campaign_manager"])
    call_id = res.json()["results"][0]["call_id"]
    items = get(client, keys, "/v1/refusals", campaign_id=cid, stage="intake").json()["items"]
    by_ext = {i["external_id"]: i for i in items}
    assert by_ext["i1"]["code"] == "CONSENT_NOT_WRITTEN" and by_ext["i1"]["row"] == 1
    assert by_ext["i1"]["call_id"] == call_id and by_ext["i1"]["phone"] == "+1314555****"
    assert by_ext["i2"]["status"] == "invalid" and by_ext["i2"]["row"] == 2


# --- CSV export --------------------------------------------------------------------------


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_refusals_csv_export(
    client: TestClient, keys: H, runtime: Runtime, seeded: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_refusal(runtime, T0 + HOUR, ["NO_CONSENT", "DEADLINE_PASSED"], ext='=HYPERLINK("x")')
    monkeypatch.setattr(exports, "EXPORT_PAGE", 2)  # several pages per export
    res = get(client, keys, "/v1/refusals.csv")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/csv")
    assert 'filename="refusals.csv"' in res.headers["content-disposition"]
    assert res.text.splitlines()[0] == ",".join(exports.REFUSAL_CSV_COLUMNS)
    rows = parse_csv(res.text)
    assert [r["external_id"] for r in rows] == [
        "'=HYPERLINK(\"x\")", "a3", "b2", "b1", "a2", "a1"]
    assert rows[0]["codes"] == "NO_CONSENT;DEADLINE_PASSED"
    assert rows[0]["rule"].startswith("47 CFR") and rows[0]["message"]
    assert rows[0]["phone"] == "'+1314555****"
    assert rows[2]["phone"] == "" and rows[2]["row"] == "7"
    assert rows[1]["at"].startswith("2026-11-24T17:00:00")
    assert "5550100" not in res.text
    assert audit_entries(runtime, review.UNMASK_KIND) == []
    # A masked export: one entry for the whole request (filters, rows sent), not per page.
    (listed,) = [e for e in audit_entries(runtime, review.LIST_KIND)
                 if json.loads(e.payload)["via"] == "GET /v1/refusals.csv"]
    assert json.loads(listed.payload) == {"via": "GET /v1/refusals.csv", "filter": {},
                                          "rows": 6}
    # same filters as the list
    filtered = parse_csv(get(client, keys, "/v1/refusals.csv", code="CONSENT_REVOKED").text)
    assert [r["external_id"] for r in filtered] == ["b1", "a2"]
    # unmasked: full numbers, one audit entry per page naming exactly its rows
    res = get(client, keys, "/v1/refusals.csv", unmask="true")
    rows = parse_csv(res.text)
    assert rows[0]["phone"] == "'+13145550100" and rows[1]["phone"] == f"'{phone(3)}"
    entries = audit_entries(runtime, review.UNMASK_KIND)
    ids = [i for e in entries for i in json.loads(e.payload)["refusals"]]
    assert ids == [int(r["id"]) for r in rows]
    assert all(json.loads(e.payload)["via"] == "GET /v1/refusals.csv" for e in entries)
    assert len(entries) == 3
    named = {p for e in entries for p in json.loads(e.payload).get("patients", [])}
    assert named == {runtime.pseudonym(r["phone"][1:]) for r in rows if r["phone"]}
    bad = get(client, keys, "/v1/refusals.csv", since="2026-11-25T00:00:00Z",
              until="2026-11-24T00:00:00Z")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"


def test_csv_cell_neutralises_formulas() -> None:
    for text in ("=1+1", "+1314555****", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert exports.csv_cell(text) == "'" + text
    assert exports.csv_cell("plain") == "plain" and exports.csv_cell(None) == ""
    assert exports.csv_cell(7) == "7" and exports.csv_cell(True) == "true"


# --- the call log ------------------------------------------------------------------------


def add_campaign(rt: Runtime, cid: str) -> None:
    with rt.db.write() as s:
        s.add(Campaign(id=cid, name=cid, purpose="discharge_followup",
                       channel="autodialed_voice", provider_name="Mercy",
                       callback_number="+13145550199", max_attempts=3, created_by="t",
                       created_at=T0 - days(5), policy_version=rt.policy_version))


def add_attempt(rt: Runtime, at: datetime, **kw: Any) -> str:
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()), "call_id": None, "campaign_id": CAMP_A,
        "phone": "+13145550100", "kind": "manual", "state": "manual", "counted": True,
        "at": at, "expires_at": None, "dialer_id": None, "key_id": "k", "agent_id": "A-17",
        "agent_name": "Dana", "disclosed_callback_number": "+13145550199",
        "started_at": None, "ended_at": None, "result": None, "flags": [],
        "recorded_at": None,
    }
    data.update(kw)
    with rt.db.write() as s:
        s.execute(insert(Attempt), [data])
    return str(data["id"])


@pytest.fixture
def attempts(runtime: Runtime) -> dict[str, str]:
    add_campaign(runtime, CAMP_A)
    add_campaign(runtime, CAMP_B)
    return {
        "m1": add_attempt(runtime, T0 - days(2)),
        "l1": add_attempt(runtime, T0 - days(1), kind="lease", state="reported",
                          dialer_id="acme-1", result="connected", agent_id="A-18",
                          agent_name="@SUM(A1)", started_at=T0 - days(1),
                          ended_at=T0 - days(1) + timedelta(minutes=2),
                          recorded_at=T0 - days(1) + timedelta(minutes=3)),
        "l2": add_attempt(runtime, T0 - HOUR, kind="lease", state="reported",
                          campaign_id=CAMP_B, result="no_answer", phone=phone(5),
                          flags=["AGENT_ID_MISSING", "CALLBACK_MISMATCH"]),
        "l3": add_attempt(runtime, T0, kind="lease", state="live", campaign_id=CAMP_B,
                          agent_id=None, agent_name=None, disclosed_callback_number=None),
    }


def ids(res: Any) -> list[str]:
    assert res.status_code == 200, res.text
    return [i["id"] for i in res.json()["items"]]


def test_call_log_lists_every_attempt_with_filters(
    client: TestClient, keys: H, attempts: dict[str, str]
) -> None:
    a = attempts
    path = "/v1/call-log"
    assert ids(get(client, keys, path)) == [a["l3"], a["l2"], a["l1"], a["m1"]]
    assert ids(get(client, keys, path, campaign_id=CAMP_B)) == [a["l3"], a["l2"]]
    assert ids(get(client, keys, path, agent_id="A-17")) == [a["l2"], a["m1"]]
    assert ids(get(client, keys, path, result="connected")) == [a["l1"]]
    assert ids(get(client, keys, path, since=(T0 - days(1)).isoformat(),
                   until=T0.isoformat())) == [a["l2"], a["l1"]]
    items = get(client, keys, path).json()["items"]
    l2 = items[1]
    assert l2["phone"] == "+1314555****" and l2["flags"] == ["AGENT_ID_MISSING",
                                                              "CALLBACK_MISMATCH"]
    assert l2["kind"] == "lease" and l2["state"] == "reported" and l2["result"] == "no_answer"
    l1 = items[2]
    assert l1["agent_name"] == "@SUM(A1)" and l1["dialer_id"] == "acme-1"
    assert l1["started_at"].startswith("2026-11-23T17:00") and l1["recorded_at"]
    assert l1["disclosed_callback_number"] == "+13145550199"
    assert items[0]["agent_id"] is None and items[0]["state"] == "live"
    bad = get(client, keys, path, result="Robert'); DROP TABLE")
    assert bad.status_code == 422
    wrong_log = get(client, keys, path, cursor=review.encode_cursor("refusals", T0, 1))
    assert wrong_log.status_code == 422


def test_call_log_pagination_masking_audit_and_csv(
    client: TestClient, keys: H, runtime: Runtime, attempts: dict[str, str]
) -> None:
    for _ in range(5):  # ties at one instant
        add_attempt(runtime, T0 - 3 * HOUR, campaign_id=CAMP_B)
    with runtime.db.read() as s:
        expected = list(s.scalars(select(Attempt.id).order_by(Attempt.at.desc(),
                                                                Attempt.id.desc())))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = get(client, keys, "/v1/call-log", **params).json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == expected
    res = get(client, keys, "/v1/call-log", unmask="true", limit=2)
    assert [i["phone"] for i in res.json()["items"]] == ["+13145550100", phone(5)]
    (entry,) = audit_entries(runtime, review.UNMASK_KIND)
    who = identity(runtime, Role.compliance)
    assert entry.actor == f"key:{who.key_id}" and entry.subject == "attempts"
    assert json.loads(entry.payload) == {
        "attempts": [attempts["l3"], attempts["l2"]], "via": "GET /v1/call-log", "filter": {},
        "rows": 2, "patients": sorted(runtime.pseudonym(p) for p in ("+13145550100", phone(5)))}
    # the CSV export: same filters, masked, formula cells neutralised
    res = get(client, keys, "/v1/call-log.csv", campaign_id=CAMP_A)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    assert res.text.splitlines()[0] == ",".join(exports.CALL_LOG_CSV_COLUMNS)
    rows = parse_csv(res.text)
    assert [r["id"] for r in rows] == [attempts["l1"], attempts["m1"]]
    assert rows[0]["agent_name"] == "'@SUM(A1)" and rows[0]["phone"] == "'+1314555****"
    assert rows[0]["disclosed_callback_number"] == "'+13145550199"
    assert rows[0]["counted"] == "true" and rows[0]["result"] == "connected"
    flagged = parse_csv(get(client, keys, "/v1/call-log.csv", campaign_id=CAMP_B).text)
    assert flagged[1]["flags"] == "AGENT_ID_MISSING;CALLBACK_MISMATCH"
    unmasked = parse_csv(get(client, keys, "/v1/call-log.csv", unmask="true").text)
    assert unmasked[0]["phone"] == "'+13145550100"
    entry = audit_entries(runtime, review.UNMASK_KIND)[-1]
    payload = json.loads(entry.payload)
    assert payload["attempts"] == [r["id"] for r in unmasked]
    assert payload["via"] == "GET /v1/call-log.csv" and payload["rows"] == len(unmasked)
    assert payload["patients"] == sorted({runtime.pseudonym(r["phone"][1:]) for r in unmasked})


# --- roles and the OpenAPI document ------------------------------------------------------

PATHS = ["/v1/refusals", "/v1/refusals/summary", "/v1/refusals.csv", "/v1/call-log",
         "/v1/call-log.csv"]


def test_roles_and_openapi(client: TestClient, keys: H) -> None:
    for path in PATHS:
        for role in ("dialer", "campaign_manager"):
            res = client.get(path, headers=keys[role])
            assert res.status_code == 403 and res.json()["error"]["code"] == "FORBIDDEN"
        for role in ("compliance", "admin"):
            assert client.get(path, headers=keys[role]).status_code == 200
        assert client.get(path).status_code == 401
    doc = client.get("/openapi.json").json()
    ops = {p: doc["paths"][p]["get"] for p in PATHS}
    assert {o["operationId"] for o in ops.values()} == {
        "list_refusals", "refusal_summary", "export_refusals_csv", "list_call_log",
        "export_call_log_csv"}
    assert all(o["summary"] for o in ops.values())
    assert "text/csv" in ops["/v1/refusals.csv"]["responses"]["200"]["content"]
    assert "example" in ops["/v1/call-log.csv"]["responses"]["200"]["content"]["text/csv"]
    schema = ops["/v1/refusals"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/RefusalPage")
    assert "RefusalItem" in doc["components"]["schemas"]
