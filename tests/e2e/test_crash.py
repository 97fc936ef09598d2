"""Crash safety with a real ``callgate serve`` process and ``kill -9`` (issue 6, item 4).

* Intake: a 30,000-row CSV (15,000 on PostgreSQL) is being decided when the server is
  killed (after its first chunk has committed, before the response). After a restart the
  same list is submitted again: every good row is queued exactly once, none is lost, the
  refused and invalid rows stay out of the queue, and the audit log is intact, with one
  ``intake.decided`` entry per committed chunk and none for the chunk that died.
* Leasing: pollers are leasing when the server is killed. After a restart no call has two
  live leases and every lease a poller received is in the database. The leases then expire
  and come back: they count as attempts (``state = 'expired'``, counted), so with
  ``per_day = 2`` a call leased and abandoned twice is not leased a third time, and no
  number's caps are exceeded.

The servers run on the wall clock (a FakeClock cannot cross processes), with a policy whose
calling window is open at any hour. Rather than wait out a lease, the test moves the leases'
expiry into the past with a direct SQL UPDATE of ``calls.lease_expires_at`` (and of the
attempt's ``expires_at``): what a lease's expiry means is the same, and the test stays fast.
Runs on SQLite and, with ``CALLGATE_TEST_POSTGRES_URL``, on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from core.db import Database
from core.models import Attempt, AuditEntry, Call
from dialer.intake.parse import CHUNK_ROWS
from dialer.queue.store import cap_violations, live_lease_doubles
from tests.e2e.serverproc import Server, campaign, make_keys, seed_consents, write_policy
from tests.helpers import log_holds

pytestmark = pytest.mark.slow

# SQLite decides about 1,500 rows a second here (phone parsing dominates), PostgreSQL fewer:
# the PostgreSQL list is shorter to keep the test near half a minute; still several chunks.
ROWS = {"sqlite": 30_000, "postgresql": 15_000}


def _phone(i: int) -> str:
    return f"+1314{2_000_000 + i:07d}"


def _csv(rows: int) -> tuple[bytes, set[str], set[str]]:
    """The list, the external ids that must be queued, and the numbers with consent.
    Every 50th row has no consent (refused), every 97th an invalid number."""
    lines = ["external_id,patient_ref,phone,state,postal_code,priority"]
    good: set[str] = set()
    consented: set[str] = set()
    for i in range(rows):
        ext = f"enc-{i}"
        if i % 97 == 0:
            lines.append(f"{ext},MRN-{i},555,MO,63110,5")
            continue
        phone = _phone(i)
        if i % 50 != 0:
            consented.add(phone)
            good.add(ext)
        lines.append(f"{ext},MRN-{i},{phone[2:]},MO,63110,{1 + i % 10}")
    return ("\n".join(lines) + "\n").encode(), good, consented


def _verify_chain(db: Database) -> int:
    return log_holds(db)


def test_kill_during_intake_then_resubmit(db_url: str, tmp_path: Path) -> None:
    rows = ROWS["sqlite" if db_url.startswith("sqlite") else "postgresql"]
    body, good, consented = _csv(rows)
    seed_consents(db_url, consented)
    keys = make_keys(db_url)
    server = Server(tmp_path, db_url, policy=write_policy(tmp_path), log_level="WARNING")
    db = Database(db_url)
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=120) as c:
            campaign_id = campaign(c, keys["campaign_manager"])
        csv_headers = {**keys["campaign_manager"], "Content-Type": "text/csv"}
        outcome: dict[str, Any] = {}

        def submit() -> None:
            try:
                r = httpx.post(f"{server.url}/v1/campaigns/{campaign_id}/calls", content=body,
                               headers=csv_headers, timeout=120)
                outcome["status"] = r.status_code
            except httpx.TransportError as exc:
                outcome["error"] = type(exc).__name__

        def committed() -> int:
            with db.read() as s:
                return int(s.scalar(select(func.count()).select_from(Call).where(
                    Call.campaign_id == campaign_id)) or 0)

        sender = threading.Thread(target=submit)
        sender.start()
        # Kill once the first chunk is in (a partial list) and before the answer.
        deadline = time.monotonic() + 60
        while committed() < CHUNK_ROWS and time.monotonic() < deadline and sender.is_alive():
            time.sleep(0.02)
        server.kill9()
        sender.join(timeout=30)
        before = committed()
        assert "error" in outcome, f"the request finished before the kill: {outcome}"
        assert 0 < before < rows, before  # a real mid-request crash: some chunks, not all
        _verify_chain(db)

        server.start()
        with httpx.Client(base_url=server.url, timeout=180) as c:
            r = c.post(f"/v1/campaigns/{campaign_id}/calls", content=body, headers=csv_headers)
            assert r.status_code == 200, r.text[:500]
            second = r.json()
            verify = c.get("/v1/audit/verify", headers=keys["compliance"])
            assert verify.status_code == 200 and verify.json()["ok"], verify.text
        results = second["results"]
        assert len(results) == rows
        statuses = Counter(res["status"] for res in results)
        # Rows committed before the kill come back as duplicates; the rest are decided now.
        assert statuses["queued"] + statuses["duplicate"] == len(good), statuses
        assert statuses["duplicate"] > 0 and statuses["queued"] > 0, statuses
        for res in results:
            ext = res["external_id"]
            expected = {"queued", "duplicate"} if ext in good else {"refused", "invalid"}
            assert res["status"] in expected, res

        with db.read() as s:
            queued = list(s.scalars(select(Call.external_id).where(
                Call.campaign_id == campaign_id, Call.status == "queued")))
            accepted = Counter(s.scalars(select(Call.external_id).where(
                Call.campaign_id == campaign_id, Call.status != "refused")))
            decided = [
                e.payload for e in s.scalars(
                    select(AuditEntry).where(AuditEntry.kind == "intake.decided"))
            ]
        assert len(queued) == len(good) and set(queued) == good  # exactly once, none lost
        assert max(accepted.values()) == 1
        # One audit entry per committed chunk: the queued counts it records add up to the
        # queue, so no entry speaks for the chunk that died with the process.
        queued_in_audit = sum(json.loads(p)["counts"]["queued"] for p in decided)
        assert queued_in_audit == len(good)
        _verify_chain(db)
    finally:
        server.kill9()
        db.dispose()


def _lease(url: str, headers: dict[str, str], limit: int = 50) -> list[dict[str, Any]]:
    r = httpx.post(f"{url}/v1/queue/lease", json={"dialer_id": "crash", "limit": limit,
                                                  "lease_seconds": 15},
                   headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return list(r.json()["tasks"])


def _expire_leases_now(db: Database) -> int:
    """Move every live lease's expiry into the past (instead of waiting 15 s)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with db.write() as s:
        n = s.scalar(select(func.count()).select_from(Call).where(Call.status == "leased"))
        s.execute(update(Call).where(Call.status == "leased").values(lease_expires_at=past))
        s.execute(update(Attempt).where(Attempt.state == "live").values(expires_at=past))
    return int(n or 0)


def _expired_leases_left(db: Database) -> int:
    """Leased calls whose lease has expired but which no sweep has returned to the queue."""
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Call).where(
            Call.status == "leased", Call.lease_expires_at <= datetime.now(UTC))) or 0)


def test_kill_during_leasing_leases_expire_and_count(db_url: str, tmp_path: Path) -> None:
    n_calls = 600
    phones = [_phone(i) for i in range(n_calls)]
    seed_consents(db_url, phones)
    keys = make_keys(db_url)
    server = Server(tmp_path, db_url, policy=write_policy(tmp_path, per_day=2, per_week=3),
                    log_level="WARNING")
    db = Database(db_url)
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            campaign_id = campaign(c, keys["campaign_manager"], max_attempts=5)
            rows = [{"external_id": f"enc-{i}", "phone": p, "state": "MO"}
                    for i, p in enumerate(phones)]
            r = c.post(f"/v1/campaigns/{campaign_id}/calls", json=rows,
                       headers=keys["campaign_manager"])
            assert r.status_code == 200 and r.json()["accepted"] == n_calls, r.text[:300]

        received: list[dict[str, Any]] = []
        errors: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def poller() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/v1/queue/lease", json={"dialer_id": "crash", "limit": 20,
                                                            "lease_seconds": 15},
                                   headers=keys["dialer"])
                    except httpx.TransportError as exc:
                        errors.append(type(exc).__name__)
                        return
                    assert r.status_code == 200, r.text
                    with lock:
                        received.extend(r.json()["tasks"])

        threads = [threading.Thread(target=poller) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(received) >= 40:
                    break
            time.sleep(0.01)
        time.sleep(0.3)
        server.kill9()  # pollers are mid-request
        stop.set()
        for t in threads:
            t.join(timeout=30)
        # At least one poller lost a request in flight (not merely refused a connection).
        assert any(e != "ConnectError" for e in errors), errors
        assert 40 <= len(received) <= n_calls

        server.start()
        with db.read() as s:
            assert live_lease_doubles(s) == 0
            leased = {c.id: c.lease_id for c in s.scalars(
                select(Call).where(Call.status == "leased"))}
            live = Counter(s.scalars(select(Attempt.call_id).where(Attempt.state == "live")))
        # Every lease a poller received is in the database, with its lease id; maybe more
        # (committed, then killed before the answer left).
        got = {t["call_id"]: t["lease_id"] for t in received}
        assert len(got) == len(received), "a call was leased twice"
        assert all(leased.get(cid) == lid for cid, lid in got.items())
        assert set(live) == set(leased) and set(live.values()) == {1}
        first = set(leased)

        # Round 1: the dialer never comes back; the leases expire and the calls are leased
        # again (per_day = 2 allows a second attempt).
        assert _expire_leases_now(db) == len(first)
        again: set[str] = set()
        for _ in range(60):
            tasks = _lease(server.url, keys["dialer"], limit=100)
            again.update(t["call_id"] for t in tasks if t["call_id"] in first)
            if not tasks or first <= again:
                break
        assert again == first, len(first - again)
        with db.read() as s:
            expired = Counter(
                s.scalars(select(Attempt.call_id).where(
                    Attempt.call_id.in_(first), Attempt.state == "expired",
                    Attempt.counted.is_(True)))
            )
        assert set(expired) == first and set(expired.values()) == {1}

        # Round 2: expired again; now each of these numbers has two counted attempts today,
        # and per_day = 2 keeps them out of the queue until tomorrow.
        # A poll sweeps at most 500 expired leases, and by now more than that may be expired
        # (round 1 leased other calls too): poll until nothing is leasable and none is left.
        _expire_leases_now(db)
        third: set[str] = set()
        for _ in range(60):
            tasks = _lease(server.url, keys["dialer"], limit=100)
            third.update(t["call_id"] for t in tasks if t["call_id"] in first)
            if not tasks and _expired_leases_left(db) == 0:
                break
        assert third == set(), f"{len(third)} calls leased past per_day"
        with db.read() as s:
            rows_first = list(s.scalars(select(Call).where(Call.id.in_(first))))
            assert all(c.status == "queued" and c.attempts == 2 for c in rows_first)
            assert all(c.last_reason == "DAILY_CAP" for c in rows_first)
            assert all(c.next_eligible_at is not None
                       and c.next_eligible_at > datetime.now(UTC) + timedelta(hours=20)
                       for c in rows_first)
            assert cap_violations(s, per_day=2, per_week=3) == 0
            assert live_lease_doubles(s) == 0
        with httpx.Client(base_url=server.url, timeout=60) as c:
            verify = c.get("/v1/audit/verify", headers=keys["compliance"])
            assert verify.status_code == 200 and verify.json()["ok"], verify.text
        _verify_chain(db)
    finally:
        server.kill9()
        db.dispose()
