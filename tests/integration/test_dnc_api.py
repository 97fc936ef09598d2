"""The do-not-call list: add, read, lift (admin only, audited, the row stays)."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from consent.store import dnc_numbers
from core.keys import Role
from core.models import DncEntry
from core.runtime import Runtime
from tests.helpers import PHONE, PHONE_DIGITS, audit_entries, identity

Keys = dict[str, dict[str, str]]


def test_add_get_lift(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    mgr, admin = keys["campaign_manager"], keys["admin"]
    assert client.get(f"/v1/dnc/{PHONE}", headers=mgr).status_code == 404

    added = client.post("/v1/dnc", json={"phone": "(314) 555-0100", "reason": "asked by letter"},
                        headers=mgr)
    assert added.status_code == 201, added.text
    entry = added.json()
    assert entry["phone"] == PHONE
    assert entry["source"] == "manual" and entry["reason"] == "asked by letter"
    assert entry["added_by"] == identity(runtime, Role.campaign_manager).key_id
    assert entry["lifted_at"] is None

    got = client.get("/v1/dnc/+1 314 555 0100", headers=keys["compliance"])
    assert got.status_code == 200, got.text
    assert got.json()["on_list"] is True
    assert [e["id"] for e in got.json()["entries"]] == [entry["id"]]
    with runtime.db.read() as s:
        assert dnc_numbers(s, [PHONE, "+13145550111"]) == {PHONE}

    # campaign_manager may add but not lift.
    denied = client.delete(f"/v1/dnc/{PHONE}", headers=mgr)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "FORBIDDEN"
    assert client.get(f"/v1/dnc/{PHONE}", headers=mgr).status_code == 200

    lifted = client.request("DELETE", f"/v1/dnc/{PHONE}", json={"reason": "patient asked again"},
                            headers=admin)
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["on_list"] is False

    after = client.get(f"/v1/dnc/{PHONE}", headers=mgr)
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "NOT_FOUND"
    assert PHONE_DIGITS not in after.text

    with runtime.db.read() as s:
        [row] = s.scalars(select(DncEntry).where(DncEntry.phone == PHONE)).all()
        assert dnc_numbers(s, [PHONE]) == set()
    admin_id = identity(runtime, Role.admin).key_id
    assert row.lifted_at == runtime.clock.now()
    assert (row.lifted_by, row.lift_reason) == (admin_id, "patient asked again")

    [audit] = audit_entries(runtime, "dnc.lifted")
    assert audit.actor == f"key:{admin_id}"
    assert audit.subject == f"dnc:{entry['id']}"
    assert json.loads(audit.payload) == {"reason": "patient asked again"}

    # Nothing left to lift.
    again = client.delete(f"/v1/dnc/{PHONE}", headers=admin)
    assert again.status_code == 404


def test_lift_without_body_uses_default_reason(client: TestClient, keys: Keys,
                                               runtime: Runtime) -> None:
    client.post("/v1/dnc", json={"phone": PHONE, "reason": "r"}, headers=keys["admin"])
    resp = client.delete(f"/v1/dnc/{PHONE}", headers=keys["admin"])
    assert resp.status_code == 200, resp.text
    [entry] = resp.json()["entries"]
    assert entry["lift_reason"] == "lifted by an administrator"


def test_re_adding_after_lift_puts_the_number_back(
    client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    h = keys["admin"]
    client.post("/v1/dnc", json={"phone": PHONE, "reason": "first"}, headers=h)
    runtime.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    client.delete(f"/v1/dnc/{PHONE}", headers=h)
    runtime.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    client.post("/v1/dnc", json={"phone": PHONE, "reason": "second"}, headers=h)
    got = client.get(f"/v1/dnc/{PHONE}", headers=h)
    assert got.status_code == 200
    entries = got.json()["entries"]
    assert [e["reason"] for e in entries] == ["first", "second"]
    assert [e["lifted_at"] is None for e in entries] == [False, True]


def test_dnc_read_is_audited(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    client.post("/v1/dnc", json={"phone": PHONE, "reason": "r"}, headers=keys["admin"])
    client.get(f"/v1/dnc/{PHONE}", headers=keys["compliance"])
    [read] = audit_entries(runtime, "patient_data.read")
    assert read.actor == f"key:{identity(runtime, Role.compliance).key_id}"
    assert PHONE_DIGITS not in read.payload + read.subject


def test_dnc_input_errors_name_no_number(client: TestClient, keys: Keys) -> None:
    h = keys["admin"]
    for path in ("/v1/dnc/+1 314 555 01", "/v1/dnc/+1 900 200 0100", "/v1/dnc/+44 20 7946 0100"):
        resp = client.get(path, headers=h)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "INVALID_PHONE"
        assert resp.json()["error"]["details"] == {"field": "phone"}
        assert "0100" not in resp.text and "555" not in resp.text
    resp = client.post("/v1/dnc", json={"phone": "+1 314 555 01", "reason": "r"}, headers=h)
    assert resp.status_code == 422 and "555" not in resp.text
    resp = client.post("/v1/dnc", json={"phone": PHONE}, headers=h)
    assert resp.status_code == 422
    assert [d["field"] for d in resp.json()["error"]["details"]] == ["body.reason"]
    assert PHONE_DIGITS not in resp.text
    assert client.post("/v1/dnc", json={"phone": PHONE, "reason": "r"},
                       headers=keys["dialer"]).status_code == 403
