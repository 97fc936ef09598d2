"""Whose clock rules when instances share a PostgreSQL database (issue 21; core.dbclock):
the database's. Two real ``callgate serve`` processes on one database, the second with its
own clock deliberately 25 hours ahead (CALLGATE_TEST_CLOCK_OFFSET_SECONDS). Two calls to one
number (two campaigns), caps 1 a day: the first instance leases one of them; the skewed one
must not lease the other. On its own clock the first attempt is more than 24 h old, and the
other call's deferral (to 24 h after it) is past, so without the database's clock it would
lease it: a second call within the day. It also warns of its skew in its log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from core.db import Database
from core.models import Attempt
from dialer.queue.store import cap_violations, live_lease_doubles
from tests.e2e.serverproc import Server, campaign, make_keys, seed_consents, write_policy

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)]

PHONE = "+13142000042"
SKEW_SECONDS = 25 * 3600


def _lease(server: Server, headers: dict[str, str]) -> list[dict[str, object]]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/queue/lease", json={"dialer_id": "skew", "limit": 10},
                   headers=headers)
        assert r.status_code == 200, r.text
        tasks: list[dict[str, object]] = r.json()["tasks"]
        return tasks


def test_a_skewed_instance_breaks_no_cap(db_url: str, tmp_path: Path) -> None:
    seed_consents(db_url, [PHONE])
    keys = make_keys(db_url)
    policy = write_policy(tmp_path, per_day=1, per_week=3)
    right = Server(tmp_path, db_url, policy=policy, name="right", log_level="WARNING")
    skewed = Server(tmp_path, db_url, policy=policy, name="skewed", log_level="WARNING",
                    env={"CALLGATE_TEST_CLOCK_OFFSET_SECONDS": str(SKEW_SECONDS)})
    try:
        right.start()
        with httpx.Client(base_url=right.url, timeout=60) as c:
            for n in range(2):
                cid = campaign(c, keys["campaign_manager"], name=f"skew {n}")
                r = c.post(f"/v1/campaigns/{cid}/calls", headers=keys["campaign_manager"],
                           json=[{"external_id": f"enc-{n}", "phone": PHONE, "state": "MO"}])
                assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        first = _lease(right, keys["dialer"])
        assert len(first) == 1  # the cap defers the other call by a day
        skewed.start()
        assert _lease(skewed, keys["dialer"]) == []
        assert _lease(right, keys["dialer"]) == []
        assert "CLOCK:" in skewed.log_text()  # the skew is reported
        assert "CLOCK:" not in right.log_text()
    finally:
        right.stop()
        skewed.stop()
    db = Database(db_url)
    try:
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(Attempt)
                            .where(Attempt.phone == PHONE, Attempt.counted.is_(True))) == 1
            assert cap_violations(s, 1, 3) == 0
            assert live_lease_doubles(s) == 0
            # The first lease is still live: the skewed instance did not expire it early.
            assert s.scalar(select(func.count()).select_from(Attempt)
                            .where(Attempt.state == "live")) == 1
    finally:
        db.dispose()
