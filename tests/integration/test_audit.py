"""The audit hash chain: verifies after real operations, detects tampering and deletion, and
stays one unbroken chain under concurrent writers on both databases."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from config.clock import FakeClock
from consent.schemas import ConsentIn
from consent.service import record_consent
from core import audit
from core.keys import Role
from core.models import AuditEntry, AuditHead
from core.runtime import Runtime
from tests.helpers import PHONE, audit_entries, campaign_body, consent_body, days, identity

Keys = dict[str, dict[str, str]]


def _operations(client: TestClient, keys: Keys, clock: FakeClock) -> None:
    mgr, admin = keys["campaign_manager"], keys["admin"]
    steps = [
        client.post("/v1/consents", json=consent_body(clock.now() - days(3)), headers=mgr),
        client.post("/v1/campaigns", json=campaign_body(), headers=mgr),
        client.get("/v1/consents", params={"phone": PHONE}, headers=keys["compliance"]),
        client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "web"},
                    headers=mgr),
        client.delete(f"/v1/dnc/{PHONE}", headers=admin),
        client.post("/v1/dnc", json={"phone": "+13145550111", "reason": "r"}, headers=mgr),
    ]
    assert [r.status_code for r in steps] == [201, 201, 200, 201, 200, 201]


def _verify(client: TestClient, keys: Keys) -> dict[str, object]:
    resp = client.get("/v1/audit/verify", headers=keys["compliance"])
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_empty_chain_verifies(client: TestClient, keys: Keys) -> None:
    assert _verify(client, keys) == {"ok": True, "entries": 0, "last_hash": None,
                                     "broken_at": None, "problem": None}


def test_chain_verifies_after_operations(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    _operations(client, keys, clock)
    entries = audit_entries(runtime)
    kinds = [e.kind for e in entries]
    assert kinds == [
        "consent.recorded",
        "campaign.created",
        "patient_data.read",
        "consent.revoked",
        "dnc.added",
        "dnc.lifted",
        "dnc.added",
    ]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert all(e.policy_version == runtime.policy_version for e in entries)
    out = _verify(client, keys)
    assert out["ok"] is True and out["entries"] == len(entries)
    assert out["last_hash"] == entries[-1].hash


def test_tampered_row_is_detected(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    _operations(client, keys, clock)
    original = audit_entries(runtime)[2]
    for column, value in [("payload", '{"method":"oral"}'), ("actor", "key:someone-else"),
                          ("kind", "dnc.added"), ("at", "2020-01-01 00:00:00.000000")]:
        if column == "at" and not runtime.db.is_sqlite:
            value = "2020-01-01T00:00:00+00:00"
        with runtime.db.write() as s:
            s.execute(text(f"UPDATE audit_log SET {column} = :v WHERE seq = 3"), {"v": value})
        out = _verify(client, keys)
        assert out["ok"] is False, column
        assert out["broken_at"] == 3, column
        assert out["entries"] == 2, column
        assert out["problem"] == "entry content does not match its hash", column
        with runtime.db.write() as s:  # put it back: the chain verifies again
            restored = s.get(AuditEntry, 3)
            assert restored is not None
            setattr(restored, column, getattr(original, column))
        assert _verify(client, keys)["ok"] is True, column


def test_rehashed_tampered_row_still_breaks_the_next_link(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    """An editor who recomputes the edited row's own hash breaks the link to the next row."""
    _operations(client, keys, clock)
    e = audit_entries(runtime)[2]
    forged = audit.entry_hash(e.prev_hash, e.seq, e.at, e.actor, e.kind, e.subject, "{}",
                              e.policy_version)
    with runtime.db.write() as s:
        s.execute(text("UPDATE audit_log SET payload = '{}', hash = :h WHERE seq = 3"),
                  {"h": forged})
    out = _verify(client, keys)
    assert (out["ok"], out["broken_at"]) == (False, 4)
    assert out["problem"] == "prev_hash does not match previous entry"


def test_deleted_middle_row_is_detected(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    _operations(client, keys, clock)
    with runtime.db.write() as s:
        s.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    out = _verify(client, keys)
    assert out["ok"] is False
    assert out["broken_at"] == 5
    assert str(out["problem"]).startswith("sequence gap")


def test_deleted_last_row_is_detected(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    _operations(client, keys, clock)
    n = len(audit_entries(runtime))
    with runtime.db.write() as s:
        s.execute(text("DELETE FROM audit_log WHERE seq = :n"), {"n": n})
    out = _verify(client, keys)
    assert out["ok"] is False
    assert out["entries"] == n - 1
    assert out["problem"] == "entries missing after the last one"


def test_rolled_back_unit_writes_no_entry(runtime: Runtime) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), runtime.db.write() as s:
        audit.record(s, at=runtime.clock.now(), actor="key:x", kind="test.kind",
                     subject="x:1", policy_version="v")
        raise Boom
    with runtime.db.write() as s:
        audit.record(s, at=runtime.clock.now(), actor="key:x", kind="test.ok",
                     subject="x:2", policy_version="v")
    assert [e.kind for e in audit_entries(runtime)] == ["test.ok"]
    with runtime.db.read() as s:
        assert audit.verify(s).ok


WRITERS = 8
PER_WRITER = 25


def test_concurrent_writers_keep_one_chain(
    runtime: Runtime, keys: Keys, clock: FakeClock
) -> None:
    who = identity(runtime, Role.campaign_manager)
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(PER_WRITER):
                body = consent_body(clock.now() - timedelta(days=1),
                                    phone=f"+1314555{w:02d}{i:02d}")
                record_consent(runtime, who, ConsentIn.model_validate(body))
        except BaseException as exc:  # reported below, with the thread's number
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    expected = WRITERS * PER_WRITER
    with runtime.db.read() as s:
        v = audit.verify(s)
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == expected
        head = s.get(AuditHead, 1)
    assert v.ok, v
    assert v.entries == expected
    assert head is not None and head.seq == expected
