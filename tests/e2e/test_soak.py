"""Soak: two ``callgate serve`` processes on one fresh PostgreSQL database, with concurrent
pollers (lease, dial check, outcome, release, abandon), revocations (consent revocations,
do-not-call additions, opt-outs reported as outcomes) and intake, all at once, for a bounded
time over loopback (issue 6, item 5). PostgreSQL only: skipped without
``CALLGATE_TEST_POSTGRES_URL``. ``CALLGATE_SOAK_SECONDS`` sets the length (default 40).

What must hold, whatever the interleaving:

* no number's caps exceeded (``dialer.queue.store.cap_violations``);
* no double lease: never two live leases for one call, and per call the lease intervals
  recorded in the call log never overlap;
* nothing for a revoked number once the revocation's response has returned: every client
  request *sent* after that moment got no lease for it, no ``go`` from the dial check, no
  accepted outcome and no queued intake row; the call log has no attempt for it later than
  that moment; and the preflight check and the dial check say no for it afterwards;
* the audit log is intact (rebuilt and checked in full).

The servers run on the wall clock with a policy whose calling window is open at any hour,
so the test does not depend on when it runs. Client and servers share the machine's clock,
so client-side instants and the server's ``attempts.at`` compare directly.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, select

from core import audit
from core.db import Database
from core.models import Attempt
from dialer.queue.store import cap_violations, live_lease_doubles
from tests.conftest import PG_URL
from tests.e2e.serverproc import Server, campaign, make_keys, seed_consents, write_policy
from tests.helpers import log_holds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="CALLGATE_TEST_POSTGRES_URL not set"),
]

SOAK_SECONDS = float(os.environ.get("CALLGATE_SOAK_SECONDS", "40"))
NUMBERS = 1500
POLLERS = 6
CALLBACK = "+13145550199"
PURPOSE = "discharge_followup"


def _phone(i: int) -> str:
    return f"+1636{3_000_000 + i:07d}"


def _formats(e164: str) -> list[str]:
    d = e164[2:]
    return [e164, d, f"({d[:3]}) {d[3:6]}-{d[6:]}", f"1-{d[:3]}-{d[3:6]}-{d[6:]}"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Record:
    """What the clients saw, for the checks after the run."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    revoked_at: dict[str, datetime] = field(default_factory=dict)  # response returned
    # (kind, phone, request sent at): a lease, a dial "go", an accepted outcome, a queued row
    granted: list[tuple[str, str, datetime]] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)

    def revoke(self, phone: str, when: datetime) -> None:
        with self.lock:
            self.revoked_at.setdefault(phone, when)
            self.stats["revoked"] += 1

    def grant(self, kind: str, phone: str, sent: datetime) -> None:
        with self.lock:
            self.granted.append((kind, phone, sent))
            self.stats[kind] += 1


def _admin_sql(statement: str) -> None:
    import psycopg

    url = make_url(PG_URL)
    with psycopg.connect(host=url.host or "localhost", port=url.port or 5432,
                         user=url.username, password=url.password, dbname=url.database,
                         autocommit=True) as conn:
        conn.execute(statement.encode())


@pytest.fixture
def fresh_pg_url(pg_template: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database (a copy of the session's migrated template)."""
    name = f"cg_soak_{uuid.uuid4().hex[:10]}"
    _admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _poller(n: int, servers: list[Server], auth: dict[str, str], rec: Record,
            deadline: float) -> None:
    rnd = random.Random(n)
    clients = [httpx.Client(base_url=s.url, headers=auth, timeout=30) for s in servers]
    try:
        while time.monotonic() < deadline:
            sent = _now()
            r = clients[n % len(clients)].post("/v1/queue/lease", json={
                "dialer_id": f"soak-{n}", "limit": rnd.randint(1, 8), "lease_seconds": 15})
            if r.status_code != 200:
                rec.bad.append(f"lease {r.status_code} {r.text[:200]}")
                continue
            tasks = r.json()["tasks"]
            for t in tasks:
                rec.grant("lease", t["phone"], sent)
            with rec.lock:
                rec.recent.extend(t["phone"] for t in tasks)
                del rec.recent[:-100]
            if not tasks:
                time.sleep(0.05)
            for t in tasks:
                c = rnd.choice(clients)  # the follow-up may reach the other server
                roll = rnd.random()
                if roll < 0.05:
                    rec.stats["abandoned"] += 1  # the lease expires and counts
                    continue
                if roll < 0.25:
                    r = c.post(f"/v1/queue/{t['call_id']}/release",
                               json={"lease_id": t["lease_id"]})
                    if r.status_code == 200:
                        rec.stats["released"] += 1
                    elif r.status_code == 409:
                        rec.stats["lost"] += 1
                    else:
                        rec.bad.append(f"release {r.status_code} {r.text[:200]}")
                    continue
                sent = _now()
                d = c.post(f"/v1/queue/{t['call_id']}/dial", json={"lease_id": t["lease_id"]})
                if d.status_code == 409:
                    rec.stats["dial_no"] += 1
                    continue  # not dialled: a real dialer drops it here
                if d.status_code != 200 or d.json() != {"go": True}:
                    rec.bad.append(f"dial {d.status_code} {d.text[:200]}")
                    continue
                rec.grant("dial_go", t["phone"], sent)
                result = ("opted_out" if roll < 0.28 else "connected" if roll < 0.55
                          else rnd.choice(("no_answer", "busy", "failed", "voicemail")))
                sent = _now()
                r = c.post(f"/v1/queue/{t['call_id']}/outcome", json={
                    "lease_id": t["lease_id"], "agent_id": f"A-{n}", "agent_name": "Dana",
                    "disclosed_callback_number": CALLBACK, "result": result,
                    "started_at": sent.isoformat(), "ended_at": sent.isoformat()})
                if r.status_code == 200:
                    rec.grant("outcome", t["phone"], sent)
                    if result == "opted_out":
                        rec.revoke(t["phone"], _now())  # revoked by the outcome itself
                elif r.status_code == 409 and r.json()["error"]["code"] == "LEASE_NOT_HELD":
                    rec.stats["lost"] += 1
                else:
                    rec.bad.append(f"outcome {r.status_code} {r.text[:200]}")
    except Exception as exc:  # surfaced by the main thread
        rec.bad.append(f"poller {type(exc).__name__}: {exc}")
    finally:
        for c in clients:
            c.close()


def _revoker(servers: list[Server], auth: dict[str, str], pool: list[str], rec: Record,
             deadline: float) -> None:
    rnd = random.Random(7)
    clients = [httpx.Client(base_url=s.url, headers=auth, timeout=30) for s in servers]
    sources = ["ivr_keypress", "agent", "sms_stop", "web", "letter", "in_person"]
    try:
        while time.monotonic() < deadline:
            with rec.lock:
                recent = list(rec.recent)
            # Mostly numbers just leased: the race with their dial checks and outcomes.
            phone = rnd.choice(recent) if recent and rnd.random() < 0.7 else rnd.choice(pool)
            if phone in rec.revoked_at:
                continue
            raw = rnd.choice(_formats(phone))
            c = rnd.choice(clients)
            if rnd.random() < 0.6:
                r = c.post("/v1/consents/revocations",
                           json={"phone": raw, "source": rnd.choice(sources)})
            else:
                r = c.post("/v1/dnc", json={"phone": raw, "reason": "asked not to be called"})
            if r.status_code == 201:
                rec.revoke(phone, _now())
            else:
                rec.bad.append(f"revoke {r.status_code} {r.text[:200]}")
            time.sleep(0.15)
    except Exception as exc:
        rec.bad.append(f"revoker {type(exc).__name__}: {exc}")
    finally:
        for c in clients:
            c.close()


def _intake(servers: list[Server], auth: dict[str, str], campaign_id: str, pool: list[str],
            rec: Record, deadline: float) -> None:
    rnd = random.Random(11)
    clients = [httpx.Client(base_url=s.url, headers=auth, timeout=60) for s in servers]
    n = 0
    try:
        while time.monotonic() < deadline:
            rows = []
            for _ in range(25):
                rows.append({"external_id": f"late-{n}", "phone": rnd.choice(pool)})
                n += 1
            sent = _now()
            r = rnd.choice(clients).post(f"/v1/campaigns/{campaign_id}/calls", json=rows)
            if r.status_code != 200:
                rec.bad.append(f"intake {r.status_code} {r.text[:200]}")
                continue
            for row, res in zip(rows, r.json()["results"], strict=True):
                if res["status"] == "queued":
                    rec.grant("queued", row["phone"], sent)
            time.sleep(0.3)
    except Exception as exc:
        rec.bad.append(f"intake {type(exc).__name__}: {exc}")
    finally:
        for c in clients:
            c.close()


def _lease_overlaps(attempts: list[Attempt]) -> list[str]:
    """Calls whose lease intervals overlap: a lease ends when reported, released or withdrawn
    (recorded_at) and at the latest at its expiry."""
    by_call: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        if a.kind == "lease" and a.call_id:
            by_call[a.call_id].append(a)
    bad = []
    for call_id, rows in by_call.items():
        rows.sort(key=lambda a: a.at)
        for prev, nxt in itertools.pairwise(rows):
            assert prev.expires_at is not None
            end = min(prev.expires_at, prev.recorded_at or prev.expires_at)
            if nxt.at < end:
                bad.append(call_id)
    return bad


def test_soak_two_servers(fresh_pg_url: str, tmp_path: Path) -> None:
    url = fresh_pg_url
    pool = [_phone(i) for i in range(NUMBERS)]
    seed_consents(url, pool)
    keys = make_keys(url)
    policy = write_policy(tmp_path, per_day=1, per_week=3)
    servers = [Server(tmp_path, url, policy=policy, name=f"server{i}") for i in range(2)]
    db = Database(url)
    try:
        for server in servers:
            server.start()
        mgr = keys["campaign_manager"]
        with httpx.Client(base_url=servers[0].url, timeout=120) as c:
            campaigns = [campaign(c, mgr, name=f"soak-{i}", purpose=PURPOSE) for i in range(3)]
            # Two lists on the same numbers: every number has two calls in the queue, so the
            # per-number caps are contended from the start; the third list grows during the run.
            for cid in campaigns[:2]:
                rows = [{"external_id": f"{cid[:8]}-{i}", "phone": p,
                         "priority": 1 + i % 10} for i, p in enumerate(pool)]
                r = c.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=mgr)
                assert r.status_code == 200 and r.json()["accepted"] == NUMBERS, r.text[:300]

        rec = Record()
        deadline = time.monotonic() + SOAK_SECONDS
        threads = [
            threading.Thread(target=_poller, args=(n, servers, keys["dialer"], rec, deadline))
            for n in range(POLLERS)
        ]
        threads.append(threading.Thread(target=_revoker,
                                        args=(servers, mgr, pool, rec, deadline)))
        threads.append(threading.Thread(target=_intake,
                                        args=(servers, mgr, campaigns[2], pool, rec, deadline)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=SOAK_SECONDS + 60)
        assert not any(t.is_alive() for t in threads), "a client thread did not finish"
        assert not rec.bad, rec.bad[:10]
        # The run did what it says: leases, outcomes, releases, revocations, new rows.
        for kind in ("lease", "dial_go", "outcome", "released", "revoked", "queued"):
            assert rec.stats[kind] > 0, rec.stats

        # Nothing granted for a number on a request sent after its revocation returned.
        late = [(kind, phone[:-4] + "****", sent.isoformat(), rec.revoked_at[phone].isoformat())
                for kind, phone, sent in rec.granted
                if phone in rec.revoked_at and sent > rec.revoked_at[phone]]
        assert not late, late[:10]

        with db.read() as s:
            attempts = list(s.scalars(select(Attempt)))
            assert cap_violations(s, per_day=1, per_week=3) == 0
            assert live_lease_doubles(s) == 0
        entries = log_holds(db)
        assert entries > 0
        assert not _lease_overlaps(attempts)
        after = [a for a in attempts
                 if a.phone in rec.revoked_at and a.at > rec.revoked_at[a.phone]]
        assert not after, [(a.id, a.state, a.at.isoformat()) for a in after[:10]]

        # And afterwards every check says no for a revoked number.
        with httpx.Client(base_url=servers[1].url, timeout=60) as c:
            for phone in list(rec.revoked_at)[:200]:
                r = c.post("/v1/check", json={"phone": phone, "purpose": PURPOSE},
                           headers=keys["dialer"])
                assert r.status_code == 200, r.text
                body = r.json()
                codes = {x["code"] for x in body["reasons"]}
                assert body["allowed"] is False and codes & {"CONSENT_REVOKED", "DO_NOT_CALL"}
            revoked_calls = [a.call_id for a in attempts
                             if a.phone in rec.revoked_at and a.call_id and a.kind == "lease"]
            for call_id in revoked_calls[:100]:
                r = c.post(f"/v1/queue/{call_id}/dial", json={}, headers=keys["dialer"])
                assert r.status_code == 409, r.text
            for s_ in servers:
                verify = httpx.get(f"{s_.url}/v1/audit/verify", headers=keys["compliance"],
                                   timeout=60)
                assert verify.status_code == 200 and verify.json()["ok"], verify.text
        for s_ in servers:
            log = s_.log_text()
            assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
        print(f"soak {SOAK_SECONDS:.0f}s: {dict(rec.stats)}; audit entries {entries}")
    finally:
        for s_ in servers:
            s_.stop()
        db.dispose()


def test_lease_overlap_detector() -> None:
    """The double-lease check above finds what it is meant to find."""
    t = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
    from datetime import timedelta

    def lease(at: int, exp: int, rec: int | None) -> Any:
        return Attempt(id=str(uuid.uuid4()), call_id="c", kind="lease", phone="p",
                       at=t + timedelta(seconds=at), expires_at=t + timedelta(seconds=exp),
                       recorded_at=None if rec is None else t + timedelta(seconds=rec))

    assert _lease_overlaps([lease(0, 15, 5), lease(6, 21, None)]) == []
    assert _lease_overlaps([lease(0, 15, None), lease(16, 31, None)]) == []
    assert _lease_overlaps([lease(0, 15, None), lease(10, 25, None)]) == ["c"]


def test_full_check_while_entries_are_appended_and_sealed(fresh_pg_url: str) -> None:
    """The full check of the audit log while other transactions append and a sequencer
    integrates: it reads the sealed tree (immutable once written) up to the size it found,
    so it never reports a sound log broken however the appends interleave."""
    from config.settings import Settings
    from core import auditlog, auditverify

    db = Database(fresh_pg_url)
    try:
        with db.write() as s:
            for i in range(10_000):
                audit.record(s, at=_now(), actor="system:test", kind="test.entry",
                             subject=f"n:{i}", policy_version="v")
        auditlog.integrate(db)
        stop = threading.Event()

        def append() -> None:
            while not stop.is_set():
                with db.write() as s:
                    audit.record(s, at=_now(), actor="system:test", kind="test.entry",
                                 subject="more", policy_version="v")
                auditlog.integrate(db, batch=3)

        writer = threading.Thread(target=append)
        writer.start()
        sign, _ = auditlog.load_signer(Settings())
        try:
            results = [auditverify.verify_full(db, sign.verifier, sign.origin, None)
                       for _ in range(4)]
        finally:
            stop.set()
            writer.join(timeout=30)
        assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
        assert results[-1].size > 10_000
    finally:
        db.dispose()
