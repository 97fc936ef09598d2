"""Call-list intake over HTTP and through the service, on SQLite and PostgreSQL.

Every reason code reachable at intake, input order, bad rows beside good ones, encodings,
multipart, dry runs, resubmission, a real duplicate race, and the size limits."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from datetime import timedelta
from importlib import resources
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, insert, select, text

from config.policy import parse_policy
from config.reasons import Code
from core.keys import Role
from core.models import AuditEntry, Call, Consent, Refusal
from core.runtime import Runtime
from dialer.intake import parse as intake_parse
from dialer.intake import results as intake_results
from dialer.intake import service as intake
from dialer.intake import store as intake_store
from tests.conftest import T0
from tests.helpers import campaign_body, consent_body, days, identity

H = dict[str, dict[str, str]]

# The calls table, and every column of it, as the models define them.
CALLS = cast(Table, Call.__table__)
CALL_COLUMNS = [c.name for c in CALLS.columns]


def num(i: int, area: int = 314) -> str:
    """A distinct, valid US number in the 555-01xx block."""
    assert 0 <= i < 100
    return f"+1{area}555{100 + i:04d}"


def digits(e164: str) -> str:
    return e164[-7:]


def new_campaign(client: TestClient, keys: H, **kw: Any) -> str:
    r = client.post("/v1/campaigns", json=campaign_body(**kw), headers=keys["campaign_manager"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def add_consent(client: TestClient, keys: H, phone: str, **kw: Any) -> None:
    obtained = kw.pop("obtained_at", T0 - days(30))
    r = client.post("/v1/consents", json=consent_body(obtained, phone, **kw),
                    headers=keys["campaign_manager"])
    assert r.status_code == 201, r.text


def submit(client: TestClient, keys: H, cid: str, rows: Any, **params: Any) -> Any:
    return client.post(f"/v1/campaigns/{cid}/calls", json=rows, params=params,
                       headers=keys["campaign_manager"])


def row(ext: str, phone: str, **kw: Any) -> dict[str, Any]:
    return {"external_id": ext, "patient_ref": f"MRN-{ext}", "phone": phone, **kw}


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or ["external_id", "patient_ref", "phone", "not_before", "not_after",
                          "postal_code", "state", "priority"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def counts(rt: Runtime) -> tuple[int, int, int]:
    with rt.db.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Call)) or 0,
            s.scalar(select(func.count()).select_from(Refusal)) or 0,
            s.scalar(select(func.count()).select_from(AuditEntry)) or 0,
        )


def codes_of(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["reasons"]]


def assert_no_phone(text: str, phones: list[str]) -> None:
    for p in phones:
        assert digits(p) not in text


def bulk_consents(rt: Runtime, phones: list[str]) -> None:
    """Written consents inserted directly (fast set-up for big lists)."""
    with rt.db.write() as s:
        s.execute(insert(Consent), [
            {"id": str(uuid.uuid4()), "phone": p, "patient_ref": "MRN-x",
             "channels": ["autodialed_voice"], "purposes": ["*"], "method": "written",
             "obtained_at": T0 - days(10), "evidence_ref": "scan://x", "expires_at": None,
             "recorded_by": "test", "recorded_at": T0 - days(10)}
            for p in phones
        ])


# --- every reason code -------------------------------------------------------------------


def test_mixed_list_reaches_every_intake_code_in_input_order(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    cid = new_campaign(client, keys)
    ok, oral, revoked, expired, sms_only, reminder_only, dnc, late = (num(i) for i in range(8))
    add_consent(client, keys, ok)
    add_consent(client, keys, oral, method="oral")
    add_consent(client, keys, revoked)
    add_consent(client, keys, expired, obtained_at=T0 - days(60), expires_at=T0 - days(1))
    add_consent(client, keys, sms_only, channels=["sms"])
    add_consent(client, keys, reminder_only, purposes=["appointment_reminder"])
    add_consent(client, keys, dnc)
    add_consent(client, keys, late)
    r = client.post("/v1/consents/revocations", json={"phone": revoked, "source": "letter"},
                    headers=keys["campaign_manager"])
    assert r.status_code == 201
    r = client.post("/v1/dnc", json={"phone": dnc, "reason": "asked"},
                    headers=keys["campaign_manager"])
    assert r.status_code == 201
    no_consent = num(8)
    rows = [
        row("r1", ok, not_after=(T0 + days(2)).isoformat(), postal_code="63110", state="MO"),
        row("r2", "12345"),
        row("r3", num(9), priority="eleven"),
        row("r4", no_consent),
        row("r5", oral),
        row("r6", revoked),
        row("r7", expired),
        row("r8", sms_only),
        row("r9", reminder_only),
        row("r10", dnc),
        row("r11", late, not_after=(T0 - timedelta(minutes=1)).isoformat()),
        row("r1", num(10)),  # same external_id as row 1
        row("r13", ok),  # same number as row 1, already pending
    ]
    res = submit(client, keys, cid, rows)
    assert res.status_code == 200, res.text
    body = res.json()
    results = body["results"]
    assert [r["row"] for r in results] == list(range(1, 14))
    assert [r["external_id"] for r in results] == [r["external_id"] for r in rows]
    statuses = [r["status"] for r in results]
    assert statuses == [
        "queued", "invalid", "invalid", "refused", "refused", "refused", "refused",
        "refused", "refused", "refused", "refused", "duplicate", "duplicate",
    ]
    assert (body["accepted"], body["refused"], body["invalid"], body["duplicates"]) == (1, 8, 2, 2)
    expected = {
        2: Code.INVALID_PHONE, 3: Code.INVALID_FIELD, 4: Code.NO_CONSENT,
        5: Code.CONSENT_NOT_WRITTEN, 6: Code.CONSENT_REVOKED, 7: Code.CONSENT_EXPIRED,
        8: Code.CONSENT_CHANNEL_MISMATCH, 9: Code.CONSENT_PURPOSE_MISMATCH,
        10: Code.DO_NOT_CALL, 11: Code.DEADLINE_PASSED, 12: Code.DUPLICATE_REQUEST,
        13: Code.DUPLICATE_REQUEST,
    }
    for n, code in expected.items():
        assert code in codes_of(results[n - 1]), (n, results[n - 1])
    assert results[0]["reasons"] == [] and results[0]["call_id"]
    # a revoked number is also on do-not-call; both reasons are given
    assert set(codes_of(results[5])) == {"DO_NOT_CALL", "CONSENT_REVOKED"}
    # INVALID_FIELD names the field, not the value
    bad = results[2]["reasons"][0]
    assert bad["details"]["field"] == "priority" and "eleven" not in bad["message"]
    for r in results:
        for reason in r["reasons"]:
            assert {"code", "message", "rule"} <= set(reason)
    assert_no_phone(res.text, [ok, oral, revoked, expired, sms_only, reminder_only, dnc, late,
                               no_consent, num(9), num(10)])
    # stored: one queued call, refused calls with their refusal rows, invalid rows logged
    with runtime.db.read() as s:
        stored = {c.external_id: c.status for c in s.scalars(select(Call))}
        refusal_rows = {r.row: r for r in s.scalars(select(Refusal))}
    assert stored["r1"] == "queued" and stored["r4"] == "refused"
    assert "r2" not in stored and "r13" not in stored
    assert sorted(refusal_rows) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert refusal_rows[2].status == "invalid" and refusal_rows[2].phone is None
    assert refusal_rows[10].code == "DO_NOT_CALL"
    assert all(r.stage == "intake" for r in refusal_rows.values())


def test_purpose_no_longer_allowed_by_policy_refuses_rows(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    cid = new_campaign(client, keys)
    add_consent(client, keys, num(0))
    text = resources.files("config").joinpath("policy.toml").read_text()
    before = "[purposes.discharge_followup]\nallowed = true"
    assert before in text
    runtime.policy = parse_policy(
        text.replace(before, "[purposes.discharge_followup]\nallowed = false").encode()
    )
    res = submit(client, keys, cid, [row("a", num(0))])
    assert res.status_code == 200
    r = res.json()["results"][0]
    assert r["status"] == "refused" and codes_of(r) == ["PURPOSE_NOT_ALLOWED"]
    with runtime.db.read() as s:
        ref = s.scalars(select(Refusal)).one()
    assert ref.policy_version == runtime.policy_version and ref.code == "PURPOSE_NOT_ALLOWED"


# --- CSV ---------------------------------------------------------------------------------


def test_csv_bad_rows_never_fail_good_ones(client: TestClient, keys: H) -> None:
    cid = new_campaign(client, keys)
    phones = [num(i) for i in range(7)]
    for p in phones:
        add_consent(client, keys, p)
    rows = [
        row("good-1", phones[0], state="MO", postal_code="63110-1234", priority="3"),
        row("bad-date", phones[1], not_after="next tuesday"),
        row("", phones[2]),  # missing external_id
        row("naive", phones[3], not_before="2026-11-25T09:00:00"),
        row("bad-prio", phones[4], priority="0"),
        row("bad-state", phones[5], state="ZZ"),
        row("good-2", phones[6], not_before=(T0 + days(1)).isoformat()),
    ]
    res = client.post(f"/v1/campaigns/{cid}/calls", content=to_csv(rows),
                      headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    assert [r["status"] for r in results] == [
        "queued", "invalid", "invalid", "invalid", "invalid", "invalid", "queued"]
    fields = [r["reasons"][0]["details"]["field"] for r in results[1:6]]
    assert fields == ["not_after", "external_id", "not_before", "priority", "state"]
    assert "UTC offset" in results[3]["reasons"][0]["message"]
    assert_no_phone(res.text, phones)


def test_csv_encodings_multipart_and_header(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    cid = new_campaign(client, keys)
    add_consent(client, keys, num(0))
    add_consent(client, keys, num(1))
    header = "external_id,patient_ref,phone\n"
    utf8 = ("\ufeff" + header + f"enc-é1,MRN-Zoë,{num(0)}\n").encode("utf-8")
    latin = (header + f"enc-é2,MRN-Müller,{num(1)}\n").encode("latin-1")
    for body in (utf8, latin):
        res = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                          headers={**keys["campaign_manager"],
                                   "Content-Type": "text/csv; charset=whatever"})
        assert res.status_code == 200, res.text
        assert res.json()["results"][0]["status"] == "queued"
        assert res.json()["ignored_columns"] == []
    with runtime.db.read() as s:
        got = {c.external_id: c.patient_ref for c in s.scalars(select(Call))}
    assert got == {"enc-é1": "MRN-Zoë", "enc-é2": "MRN-Müller"}
    # a multipart upload (a browser form)
    add_consent(client, keys, num(2))
    data = to_csv([row("m1", num(2)), row("m2", "not a phone")]).encode()
    res = client.post(f"/v1/campaigns/{cid}/calls", files={"file": ("list.csv", data, "text/csv")},
                      headers=keys["campaign_manager"])
    assert res.status_code == 200, res.text
    assert [r["status"] for r in res.json()["results"]] == ["queued", "invalid"]
    no_file = client.post(f"/v1/campaigns/{cid}/calls", files={"note": (None, "hello")},
                          headers=keys["campaign_manager"])
    assert no_file.status_code == 422
    assert no_file.json()["error"]["details"][0]["field"] == "body.file"
    # a header without the required columns
    res = client.post(f"/v1/campaigns/{cid}/calls", content="patient_ref,tel\nx,y\n",
                      headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert res.status_code == 422
    assert res.json()["error"]["code"] == "VALIDATION_ERROR"
    fields = {d["field"] for d in res.json()["error"]["details"]}
    assert fields == {"header.external_id", "header.phone"}


# --- hostile field values ----------------------------------------------------------------


def test_extreme_values_are_invalid_rows_not_errors(client: TestClient, keys: H) -> None:
    cid = new_campaign(client, keys)
    add_consent(client, keys, num(0))
    rows = [
        row("y1", num(0), not_before="0001-01-01T00:00:00+01:00"),
        row("y9999", num(0), not_after="9999-12-31T23:59:59-01:00"),
        row("zip", num(0), postal_code="\u0661\u0662\u0663\u0664\u0665"),  # Arabic-Indic digits
        row("nul", num(0) + "\x00"),
        row("long", "1" * 300),
        {"external_id": "obj", "phone": {"a": 1}},
        "not an object",
        row("ok", num(0)),
    ]
    res = submit(client, keys, cid, rows)
    assert res.status_code == 200, res.text
    assert [r["status"] for r in res.json()["results"]] == ["invalid"] * 7 + ["queued"]
    deep = client.post(f"/v1/campaigns/{cid}/calls", content="[" * 100_000 + "]" * 100_000,
                       headers={**keys["campaign_manager"], "Content-Type": "application/json"})
    assert deep.status_code == 422 and deep.json()["error"]["code"] == "VALIDATION_ERROR"


# --- dry run, resubmission ---------------------------------------------------------------


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "dry_run"}
    out["results"] = [
        {k: v for k, v in r.items() if k != "call_id"} | {"has_call": bool(r["call_id"])}
        for r in body["results"]
    ]
    return out


def test_dry_run_answers_like_the_real_thing_and_stores_nothing(
    client: TestClient, keys: H, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_parse, "CHUNK_ROWS", 3)  # decisions cross chunk boundaries
    cid = new_campaign(client, keys)
    for i in range(6):
        add_consent(client, keys, num(i))
    rows = [row(f"d{i}", num(i)) for i in range(6)]
    rows += [row("d0", num(7)), row("dx", num(1)), row("bad", "x"), row("nc", num(8)),
             row("d2", num(2))]
    before = counts(runtime)
    dry = submit(client, keys, cid, rows, dry_run="true")
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert counts(runtime) == before
    real = submit(client, keys, cid, rows)
    assert real.status_code == 200 and real.json()["dry_run"] is False
    assert _comparable(dry.json()) == _comparable(real.json())
    assert counts(runtime) != before


def test_resubmitting_the_same_list_queues_nothing_twice(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    cid = new_campaign(client, keys)
    phones = [num(i) for i in range(5)]
    bulk_consents(runtime, phones)
    rows = [row(f"e{i}", p) for i, p in enumerate(phones)]
    first = submit(client, keys, cid, rows).json()
    assert first["accepted"] == 5
    second = submit(client, keys, cid, rows).json()
    assert second["duplicates"] == 5 and second["accepted"] == 0
    # Each duplicate names the call it duplicates (issue 16).
    assert all(codes_of(r) == ["DUPLICATE_REQUEST"] for r in second["results"])
    assert [r["call_id"] for r in second["results"]] == [
        r["call_id"] for r in first["results"]]
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Call)) == 5


# --- a list in many chunks ---------------------------------------------------------------


def decided_entries(rt: Runtime) -> int:
    with rt.db.read() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry)
                        .where(AuditEntry.kind == "intake.decided")) or 0


def _answers_by_row(result: intake_results.IntakeResult) -> list[tuple[Any, ...]]:
    """Each row's status and codes, a duplicate naming the *row* of the call it names."""
    row_of = {r.call_id: r.row for r in result.results if r.status in ("queued", "refused")}
    return [(r.row, r.external_id, r.status, [w.code.value for w in r.reasons],
             row_of.get(r.call_id) if r.status == "duplicate" else None)
            for r in result.results]


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_list_in_many_chunks_answers_as_in_one(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, client: TestClient, keys: H,
    dry_run: bool,
) -> None:
    """On PostgreSQL the chunks of a list overlap (the next decided while one is written,
    dialer.intake.overlap): duplicates across chunks, input order, progress and what is
    stored are as if the list were one chunk."""
    consented = [num(i) for i in range(30)]
    bulk_consents(runtime, consented)
    rows = [row(f"m{i}", num(i)) for i in range(40)]  # 30 to queue, 10 without consent
    rows += [row(f"m{40 + i}", num(2 + i)) for i in range(10)]  # numbers of rows 3-12
    rows += [row(f"m{20 + i}", num(60 + i)) for i in range(5)]  # external ids of rows 21-25
    rows += [row("bad1", "12345"), row("bad2", num(70), priority="eleven")]
    rows += [row(f"m{80 + i}", num(80 + i)) for i in range(3)]  # no consent
    body = to_csv(rows).encode()
    who = identity(runtime, Role.campaign_manager)
    answers = {}
    for chunk_rows in (5000, 7):
        monkeypatch.setattr(intake_parse, "CHUNK_ROWS", chunk_rows)
        cid = new_campaign(client, keys)
        seen: list[int] = []
        before = decided_entries(runtime)
        res = intake.submit_body(runtime, who, cid, body, "csv", dry_run=dry_run,
                                 progress=seen.append)
        assert sum(seen) == len(rows)
        assert seen == ([len(rows)] if chunk_rows == 5000 else
                        [7] * (len(rows) // 7) + [len(rows) % 7])
        answers[chunk_rows] = _answers_by_row(res)
        assert [a[0] for a in answers[chunk_rows]] == list(range(1, len(rows) + 1))
        with runtime.db.read() as s:
            stored = s.scalar(select(func.count()).select_from(Call)
                              .where(Call.campaign_id == cid))
        decided = decided_entries(runtime) - before
        assert stored == (0 if dry_run else 30 + 13), stored
        assert decided == (0 if dry_run else (1 if chunk_rows == 5000 else len(seen)))
    assert answers[7] == answers[5000]
    statuses = [a[2] for a in answers[7]]
    assert statuses.count("queued") == 30 and statuses.count("duplicate") == 15
    assert answers[7][45][4] == 8  # row 46 repeats row 8's number (an earlier chunk)


def test_postgresql_connections_never_compile_plans(runtime: Runtime) -> None:
    """PostgreSQL: every connection of the pool runs with ``jit = off`` (a chunk's reads,
    planned on a calls table the list itself was filling, spent 90-290 ms in JIT
    compilation to run a 10 ms probe), a connection opened later too, and a URL's own
    ``options`` still apply."""
    from sqlalchemy import make_url

    from core.db import Database

    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL's JIT")
    with runtime.db.read() as s, runtime.db.read() as s2:  # two connections of the pool
        assert s.execute(text("SHOW jit")).scalar() == "off"
        assert s2.execute(text("SHOW jit")).scalar() == "off"
    url = make_url(runtime.settings.database_url).update_query_dict(
        {"options": "-c work_mem=7MB"})
    db = Database(url.render_as_string(hide_password=False))
    try:
        with db.read() as s:
            assert s.execute(text("SHOW jit")).scalar() == "off"
            assert s.execute(text("SHOW work_mem")).scalar() == "7MB"
    finally:
        db.dispose()


def test_pending_probe_reads_by_number_on_a_table_never_analysed(runtime: Runtime) -> None:
    """PostgreSQL plans the "already pending?" read before autovacuum has analysed the calls
    a big list is adding. With the campaign inside the probe, on such a table it probed
    the campaign index and read every call of the campaign for each number (345 ms for
    2,000 numbers against 1,000 calls, measured); the probe goes by number instead."""
    if runtime.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner")
    camp = str(uuid.uuid4())
    with runtime.db.write(rollback=True) as s:
        # A temporary copy of calls with its indexes: never analysed (autovacuum skips
        # temporary tables), 1,000 pending calls of one campaign.
        s.execute(text("CREATE TEMP TABLE calls_probe (LIKE calls INCLUDING ALL) "
                       "ON COMMIT DROP"))
        s.execute(text(
            "INSERT INTO calls_probe (id, campaign_id, external_id, phone, priority, status,"
            " attempts, created_at, updated_at, created_by, policy_version) "
            "SELECT gen_random_uuid()::text, :c, 'e' || g, '+1314555' || lpad(g::text, 4, '0'),"
            " 0, 'queued', 0, now(), now(), 'test', 'p' FROM generate_series(1, 1000) g"),
            {"c": camp})
        s.execute(text("SET LOCAL enable_seqscan = off"))  # as intake's reads run
        numbers = [f"+1919555{i:04d}" for i in range(2000)] + ["+13145550007"]
        probe = intake_store.pending_probe("calls_probe")
        plan = "\n".join(s.scalars(text(f"EXPLAIN {probe.text}"),
                                    {"l": numbers, "c": camp}))
        found = list(s.execute(probe, {"l": numbers, "c": camp}))
        other = list(s.execute(probe, {"l": numbers, "c": str(uuid.uuid4())}))
    assert "phone_idx" in plan and "campaign_id_idx" not in plan, plan
    assert [p for p, _ in found] == ["+13145550007"] and other == []


# --- the duplicate race ------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [5000, 97])
def test_two_identical_lists_racing_queue_each_row_once(
    client: TestClient, keys: H, runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
    chunk_rows: int,
) -> None:
    """With 97-row chunks each list is 21 chunks, overlapped on PostgreSQL: a chunk that
    loses the race rolls back the one decided after it, and both are decided again."""
    monkeypatch.setattr(intake_parse, "CHUNK_ROWS", chunk_rows)
    cid = new_campaign(client, keys)
    n = 2000
    phones = [f"+1{[212, 312, 415, 713, 808][i % 5]}{200 + i // 100}{i:04d}" for i in range(n)]
    bulk_consents(runtime, phones)
    body = to_csv([row(f"race-{i}", p) for i, p in enumerate(phones)],
                  ["external_id", "patient_ref", "phone"]).encode()
    who = identity(runtime, Role.campaign_manager)
    barrier = threading.Barrier(2)
    outcomes: list[intake_results.IntakeResult] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            outcomes.append(intake.submit_body(runtime, who, cid, body, "csv"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(outcomes) == 2
    queued = sum(o.counts()["accepted"] for o in outcomes)
    dups = sum(o.counts()["duplicates"] for o in outcomes)
    assert (queued, dups) == (n, n)
    with runtime.db.read() as s:
        ext = list(s.scalars(select(Call.external_id).where(Call.campaign_id == cid)))
        statuses = set(s.scalars(select(Call.status)))
    assert len(ext) == n and len(set(ext)) == n and statuses == {"queued"}


# --- limits and errors -------------------------------------------------------------------


def test_limits_and_request_errors(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    cid = new_campaign(client, keys)
    runtime.settings = runtime.settings.model_copy(update={"max_list_rows": 3})
    before = counts(runtime)
    rows = [row(f"l{i}", num(i)) for i in range(4)]
    for res in (
        submit(client, keys, cid, rows),
        client.post(f"/v1/campaigns/{cid}/calls", content=to_csv(rows),
                    headers={**keys["campaign_manager"], "Content-Type": "text/csv"}),
    ):
        assert res.status_code == 413, res.text
        err = res.json()["error"]
        assert err["code"] == "LIST_TOO_LARGE" and err["details"] == {"rows": 4, "limit": 3}
    assert counts(runtime) == before
    assert submit(client, keys, cid, rows[:3]).status_code == 200
    # the body limit (2 MB in the test settings) is enforced before parsing
    big = "external_id,phone\n" + "x" * (runtime.settings.max_body_bytes + 10)
    res = client.post(f"/v1/campaigns/{cid}/calls", content=big,
                      headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert res.status_code == 413
    assert res.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    chunked = client.post(f"/v1/campaigns/{cid}/calls", content=iter([big.encode()]),
                          headers={**keys["campaign_manager"], "Content-Type": "text/csv"})
    assert chunked.status_code == 413  # no Content-Length: counted as it arrives
    assert counts(runtime)[0] == 3
    # content type, campaign, body shape, roles
    res = client.post(f"/v1/campaigns/{cid}/calls", content="<calls/>",
                      headers={**keys["campaign_manager"], "Content-Type": "application/xml"})
    assert res.status_code == 415 and res.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    res = submit(client, keys, str(uuid.uuid4()), [row("a", num(0))])
    assert res.status_code == 404 and res.json()["error"]["code"] == "NOT_FOUND"
    bad = client.post(f"/v1/campaigns/{cid}/calls", content="{not json",
                      headers={**keys["campaign_manager"], "Content-Type": "application/json"})
    assert bad.status_code == 422
    obj = submit(client, keys, cid, {"external_id": "a"})
    assert obj.status_code == 422
    for role in ("dialer", "compliance"):
        r = client.post(f"/v1/campaigns/{cid}/calls", json=[], headers=keys[role])
        assert r.status_code == 403
    assert json.loads(submit(client, keys, cid, []).text)["results"] == []


# --- the parsing helper process ----------------------------------------------------------


def test_helper_process_parsing_answers_exactly_like_parsing_here(
    client: TestClient, keys: H, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list parsed in the helper process (dialer.intake_pool) gets, row for row, the
    answer the same list gets when parsed in the server process; the stored calls carry the
    same zones."""
    monkeypatch.setattr(intake_parse, "CHUNK_ROWS", 4)  # several chunks in flight at once
    good = [num(i) for i in range(8)]
    bulk_consents(runtime, good)
    rows = [row(f"h{i}", p) for i, p in enumerate(good)]
    rows[1]["state"] = "CA"
    rows[2]["postal_code"] = "99501"
    rows[3]["not_after"] = "2020-01-01T00:00:00Z"
    rows += [row("h0", num(20)), row("hx", good[4]), row("bad", "555"), row("nc", num(9)),
             row("date", num(10), not_before="tomorrow"), {"external_id": "", "phone": ""}]
    answers = []
    zones = []
    for least in (0, 1):  # 0: parsed here; 1: every list goes to the helper
        monkeypatch.setattr(runtime.settings, "intake_parallel_min_rows", least)
        cid = new_campaign(client, keys)
        body = to_csv(rows, ["external_id", "phone", "state", "postal_code", "not_before",
                             "not_after"])
        r = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                        headers={**keys["admin"], "Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        answers.append(_comparable(r.json()))
        with runtime.db.read() as s:
            zones.append(sorted(
                (c.external_id, json.dumps(c.candidate_zones))
                for c in s.scalars(select(Call).where(Call.campaign_id == cid))
            ))
    assert answers[0] == answers[1]
    assert zones[0] == zones[1] and len(zones[0]) == 9  # 8 good rows and one refused
    assert {c for r in answers[1]["results"] for c in codes_of(r)} >= {
        "INVALID_PHONE", "INVALID_FIELD", "DUPLICATE_REQUEST", "NO_CONSENT", "DEADLINE_PASSED"}
    from dialer.intake import pool as intake_pool

    assert intake_pool._pool is not None  # the helper really ran


@pytest.mark.parametrize("shape", ["crlf", "blank_lines", "bare_cr", "quoted"])
def test_csv_read_in_the_helper_answers_exactly_like_reading_it_here(
    client: TestClient, keys: H, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """A CSV without quotes is cut at line breaks and read in the helper process
    (intake_parse.CsvSlice); row numbers, blank and malformed lines, line endings and the answers
    are what reading the whole body here gives. A body with a quote is read here."""
    from dialer.intake import pool as intake_pool

    monkeypatch.setattr(intake_parse, "CHUNK_ROWS", 5)  # many slices, ramped
    good = [num(i) for i in range(30)]
    bulk_consents(runtime, good[:20])
    lines = [f"e{i},{p},{'MO' if i % 4 == 0 else ''}" for i, p in enumerate(good)]
    lines[3] = "e3,555,"  # an invalid phone
    lines[7] = "e7b," + good[6] + ","  # a repeated number
    end = "\r\n" if shape in ("crlf", "quoted") else "\n"
    if shape == "blank_lines":  # blank and comma-only lines are not rows
        lines[5:5] = ["", ",,", " , ,"]
        lines[12:12] = [""]
    if shape == "quoted":  # a quoted field over a line break: one malformed row, read here
        lines[9] = 'e9,"' + good[9][:6] + '\n' + good[9][6:] + '",'
    body = "External_ID,phone,state" + end + end.join(lines) + end
    if shape == "bare_cr":  # old Mac line ends in part of the body
        body = body.replace("\n", "\r", 10)
    slices = intake_parse.csv_slices(body, 40)
    assert (slices is None) == (shape == "quoted")
    answers = []
    for least in (0, 1):
        monkeypatch.setattr(runtime.settings, "intake_parallel_min_rows", least)
        cid = new_campaign(client, keys)
        r = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                        headers={**keys["admin"], "Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        answers.append(_comparable(r.json()))
    assert answers[0] == answers[1]
    results = answers[1]["results"]
    assert [x["row"] for x in results] == list(range(1, len(results) + 1))
    assert len(results) == 30
    # 20 consented numbers: one invalid, one repeated; the quoted one broken by its line break
    assert [x["status"] for x in results].count("queued") == (17 if shape == "quoted" else 18)
    assert intake_pool._pool is not None


def test_sqlite_driver_level_insert_stores_what_sqlalchemy_would(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    """On SQLite, intake writes calls straight through the driver (dialer.intake); every
    stored column must be byte for byte what SQLAlchemy's Core insert of the same values
    stores."""
    from sqlalchemy import text

    if not runtime.db.is_sqlite:
        pytest.skip("the driver-level path is SQLite's")
    cid = new_campaign(client, keys)
    bulk_consents(runtime, [num(1), num(2)])
    rows = [row("q", num(1), state="MO", postal_code="63110", priority=7,
                not_before="0987-06-05T04:03:02.000001+01:00",
                not_after=(T0 + timedelta(days=3)).isoformat()),
            row("later", num(2), not_before=(T0 + timedelta(hours=5)).isoformat()),
            row("r", num(3))]  # refused: no consent
    r = submit(client, keys, cid, rows)
    assert [x["status"] for x in r.json()["results"]] == ["queued", "queued", "refused"]
    cols = [c for c in CALL_COLUMNS if c not in ("id", "external_id")]
    with runtime.db.write() as s:
        stored = {x.external_id: x for x in s.scalars(select(Call).where(Call.campaign_id == cid))}
        copies = []
        for ext, c in stored.items():
            values = {col: getattr(c, col) for col in CALL_COLUMNS}
            copies.append({**values, "id": str(uuid.uuid4()), "external_id": f"sa-{ext}"})
        s.execute(text("DROP INDEX uq_calls_campaign_phone_pending"))  # the copies repeat numbers
        s.execute(insert(CALLS), copies)
    with runtime.db.read() as s:
        raw = {r[0]: r[1:] for r in s.execute(text(
            f"SELECT external_id, {', '.join(cols)} FROM calls WHERE campaign_id = :c"),
            {"c": cid})}
    for ext in ("q", "later", "r"):
        assert raw[ext] == raw[f"sa-{ext}"], ext
    assert "0987-06-05 03:03:02.000001" in raw["q"]


def test_rows_copied_store_what_sqlalchemy_would(
    client: TestClient, keys: H, runtime: Runtime
) -> None:
    """PostgreSQL: core.bulk.copy_rows (intake's calls, COPY in binary, a ``json`` column's
    values sent as their text, each shared value encoded once) stores exactly what
    SQLAlchemy's Core insert of the same rows stores: JSON lists shared by many rows, lists
    of their own, quotes, backslashes and non-ASCII text in them; None as SQL NULL, as
    SQLite's driver path stores it (SQLAlchemy's insert stores JSON ``null``)."""
    from sqlalchemy import text

    from core.bulk import COPY_MIN_ROWS, copy_rows

    if runtime.db.is_sqlite:
        pytest.skip("COPY is PostgreSQL's")
    cid = new_campaign(client, keys)
    shared = [{"zone": "America/Chicago", "source": "number"}]
    odd = [{"zone": 'Am\\er"ica/Zürich', "source": "ünïcode ' \\u0000 {,}"}]
    base = {"campaign_id": cid, "patient_ref": None, "state": None, "postal_code": None,
            "priority": 5, "not_before": None, "not_after": T0 + timedelta(microseconds=3),
            "status": "refused", "accepted": False, "next_eligible_at": None, "parked": False,
            "attempts": 0, "last_reason": "NO_CONSENT", "lease_id": None,
            "lease_expires_at": None, "created_at": T0, "updated_at": T0,
            "created_by": "k", "policy_version": "v1", "appointment_at": None,
            "sms_text": None}
    zones = [shared, shared, odd, None, [dict(z) for z in shared], []]

    def rows(prefix: str) -> list[dict[str, Any]]:
        return [{**base, "id": str(uuid.uuid4()), "external_id": f"{prefix}-{i}",
                 "phone": num(i), "candidate_zones": zones[i % len(zones)]}
                for i in range(COPY_MIN_ROWS + 6)]

    with runtime.db.write() as s:
        s.execute(insert(CALLS), rows("sa"))
        copy_rows(s, CALLS, rows("copy"))
    with runtime.db.read() as s:
        got = {r[0]: r[1:] for r in s.execute(text(
            "SELECT external_id, candidate_zones::text, not_after, status, accepted "
            "FROM calls WHERE campaign_id = :c"), {"c": cid})}
    assert len(got) == 2 * (COPY_MIN_ROWS + 6)
    for i in range(COPY_MIN_ROWS + 6):
        if zones[i % len(zones)] is not None:
            assert got[f"copy-{i}"] == got[f"sa-{i}"], i
    assert got["copy-3"][0] is None and got["sa-3"][0] == "null"
    assert got["copy-5"][0] == "[]"
    assert json.loads(got["copy-2"][0]) == odd


def test_list_parameters_reach_the_database_as_they_are(runtime: Runtime) -> None:
    """core.bulk.one_of's list, one parameter (PostgreSQL: a ``text[]`` in psycopg's binary
    format, not array text quoted in Python), arrives value for value: quotes, commas,
    braces, backslashes, spaces, non-ASCII, the word NULL, the empty string."""
    from sqlalchemy import literal_column

    from core.bulk import one_of, one_of_value

    values = ['a"b', "c,d", "{e}", "f\\g", " h ", "Zürich", "NULL", "", "+13145550100"]
    dialect = "sqlite" if runtime.db.is_sqlite else "postgresql"
    with runtime.db.read() as s:
        got = s.execute(select(literal_column("x")).select_from(
            text("(SELECT 'none' AS x UNION ALL SELECT 'a\"b' UNION ALL SELECT 'NULL' "
                 "UNION ALL SELECT '' UNION ALL SELECT 'Zürich' UNION ALL SELECT 'f\\g') AS t")
        ).where(one_of(dialect, literal_column("x"), values))).scalars().all()
    assert sorted(got) == sorted(['a"b', "NULL", "", "Zürich", "f\\g"])
    if dialect == "postgresql":
        from psycopg.adapt import PyFormat, Transformer
        from psycopg.pq import Format

        value = one_of_value(dialect, values)
        with runtime.db.read() as s:
            conn = s.connection().connection.driver_connection
            assert conn is not None
            dumper = Transformer(conn).get_dumper(value, PyFormat.AUTO)
            assert dumper.format == Format.BINARY
            back = conn.execute("SELECT pg_typeof(%s)::text, %s", [value, value]).fetchone()
        assert back == ("text[]", values)


def test_refusal_rows_written_through_the_driver_match_sqlalchemy(runtime: Runtime) -> None:
    """core.db.insert_rows (the refusal log's bulk write) stores, on SQLite, exactly what
    SQLAlchemy's Core insert stores; elsewhere it is that insert."""
    from sqlalchemy import text

    from config.reasons import reason
    from core import refusals
    from core.bulk import insert_rows

    why = [reason(Code.NO_CONSENT), reason(Code.DEADLINE_PASSED, "not_after passed")]
    rows = [refusals.refusal_row(
        at=T0 + timedelta(microseconds=7), stage="intake", status="refused", reasons=why,
        policy_version="v9", call_id=None, external_id=ext, campaign_id=None,
        phone="+13145550100", row=3) for ext in ("core", "driver")]
    with runtime.db.write() as s:
        s.execute(insert(refusals.REFUSALS), [rows[0]])
        insert_rows(s, refusals.REFUSALS, [rows[1]])
    with runtime.db.read() as s:
        got = {r[0]: r[1:] for r in s.execute(text(
            "SELECT external_id, at, call_id, campaign_id, phone, stage, status, code, codes, "
            "reasons, row, policy_version FROM refusals WHERE policy_version = 'v9'"))}
    assert got["core"] == got["driver"]
    assert len(got) == 2


def test_updates_written_through_the_driver_match_sqlalchemy(
    client: TestClient, keys: dict[str, str], runtime: Runtime
) -> None:
    """core.bulk.update_rows (the queue's bulk updates of calls and attempts: an
    executemany on SQLite, one UPDATE ... FROM binary arrays on PostgreSQL) stores exactly
    what SQLAlchemy's Core update of the same values stores: datetimes with and without
    microseconds, JSON, None, integers; a row updated twice in one batch keeps its last
    values, as sequential updates would."""
    from sqlalchemy import bindparam, text, update

    from core.bulk import update_rows

    cid = new_campaign(client, keys)
    bulk_consents(runtime, [num(1), num(2)])
    r = submit(client, keys, cid, [row("core", num(1)), row("driver", num(2))])
    ids = {x["external_id"]: x["call_id"] for x in r.json()["results"]}
    values = {"status": "leased", "lease_id": "L", "attempts": 2, "last_reason": None,
              "lease_expires_at": T0 + timedelta(seconds=90),
              "next_eligible_at": T0 + timedelta(microseconds=5), "updated_at": T0,
              "candidate_zones": [{"zone": "America/Chicago", "source": "number"}]}
    with runtime.db.write() as s:
        s.execute(update(CALLS).where(CALLS.c.id == bindparam("b_id")),
                  [{"b_id": ids["core"], **values}])
        update_rows(s, CALLS, [
            {"b_id": ids["driver"], **values, "status": "queued", "attempts": 7,
             "last_reason": "DAILY_CAP", "candidate_zones": None},
            {"b_id": ids["driver"], **values},
        ])
    cols = ", ".join(values)
    with runtime.db.read() as s:
        got = {r[0]: r[1:] for r in s.execute(text(
            f"SELECT external_id, {cols} FROM calls WHERE campaign_id = :c"), {"c": cid})}
    assert got["core"] == got["driver"]
    assert got["core"][0] == "leased" and got["core"][2] == 2
