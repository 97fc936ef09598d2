"""Exactly one opt-out confirmation across two served instances on one PostgreSQL database
(issue 18; API.md ``POST /v1/sms/inbound``; 47 CFR 64.1200(a)(12)).

Client threads send, at once and to both ``callgate serve`` processes, the same STOP (a
gateway delivering one message twice) and different STOPs from one number (a patient who
sent two): the number is revoked, each message is decided once, one confirmation is queued,
and it is leased once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from core.db import Database
from core.migrate import upgrade
from core.models import SmsInbound, SmsReply
from tests.conftest import PG_URL, _pg_admin, _pg_url_for
from tests.e2e.serverproc import Server, make_keys, write_policy


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("CALLGATE_TEST_POSTGRES_URL not set")
    name = f"callgate_sms_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _pg_url_for(name)
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_one_confirmation_across_two_instances(pg_url: str, tmp_path: Path) -> None:
    upgrade(pg_url)
    keys = make_keys(pg_url)
    policy = write_policy(tmp_path)
    servers = [Server(tmp_path, pg_url, policy=policy, name=f"s{i}").start() for i in (0, 1)]
    try:
        phone = "+13145550142"
        now = datetime.now(UTC).isoformat()
        bodies = [{"message_id": "dup-1", "from": phone, "body": "STOP", "received_at": now}
                  for _ in range(4)]
        bodies += [{"message_id": f"m-{i}", "from": phone, "body": "stop", "received_at": now}
                   for i in range(4)]
        barrier = threading.Barrier(len(bodies))
        answers: list[dict[str, object]] = []
        errors: list[str] = []

        def send(i: int) -> None:
            with httpx.Client(base_url=servers[i % 2].url, headers=keys["dialer"],
                              timeout=60) as c:
                barrier.wait()
                r = c.post("/v1/sms/inbound", json=bodies[i])
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    answers.append(r.json())

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(a["action"] == "revoked" for a in answers)
        assert sum(1 for a in answers if a["duplicate"]) == 3
        assert sum(1 for a in answers if a["reply_id"] and not a["duplicate"]) == 1
        db = Database(pg_url)
        try:
            with db.read() as s:
                assert s.scalar(select(func.count()).select_from(SmsReply)) == 1
                assert s.scalar(select(func.count()).select_from(SmsInbound)) == 5
        finally:
            db.dispose()
        tasks = []
        for srv in servers:
            r = httpx.post(f"{srv.url}/v1/queue/lease", headers=keys["dialer"], json={
                "dialer_id": srv.name, "channels": ["sms"]}, timeout=30)
            assert r.status_code == 200, r.text
            tasks += r.json()["tasks"]
        assert [t["kind"] for t in tasks] == ["sms_confirmation"]
        r = httpx.get(f"{servers[0].url}/v1/dnc/{phone}", headers=keys["admin"], timeout=30)
        assert r.status_code == 200
    finally:
        for srv in servers:
            srv.stop()
