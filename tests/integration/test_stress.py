"""Race test with real threads against a real database, on both backends (STYLE.md: assert
the invariant, not the timing).

16 pollers, each with its own key, lease concurrently through ``dialer.queue.lease`` (one
shared runtime, as in one API process) from 600 calls that share 100 numbers across 6
campaigns, and report random outcomes, releases, opt-outs, or nothing (the lease expires).
The fake clock moves a little with every poll and jumps about a day between rounds, so the
daily, weekly, window and quiet-day rules all come into play. Afterwards: no cap was ever
exceeded, no call ever had two live leases, and the rows agree with each other.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from config.clock import FakeClock
from config.errors import Conflict
from consent.schemas import ConsentIn
from consent.service import record_consent
from core.keys import Identity, Role
from core.models import Attempt, Call
from core.runtime import Runtime
from dialer.campaigns import create_campaign
from dialer.intake import service as intake
from dialer.queue import service as queue
from dialer.queue import store as queue_store
from dialer.schemas import CampaignIn
from tests.conftest import T0
from tests.helpers import log_holds, new_identity, written_consents

THREADS = 16
NUMBERS = 100
CAMPAIGNS = 6
ROUNDS = 12  # > 7 days, so the weekly cap binds
POLLS_PER_THREAD = 4
PURPOSES = ("discharge_followup", "appointment_reminder", "test_results")


def _phone(i: int) -> str:
    return f"+1314555{100 + i:04d}"  # St. Louis: America/Chicago


def _setup(rt: Runtime) -> list[str]:
    admin = new_identity(rt, Role.admin, "stress-admin")
    written_consents(rt, admin, [_phone(i) for i in range(NUMBERS)], T0 - timedelta(days=30),
                     "scan://stress")
    campaign_ids = []
    for c in range(CAMPAIGNS):
        out = create_campaign(rt, admin, CampaignIn(
            name=f"stress-{c}", purpose=PURPOSES[c % len(PURPOSES)],
            provider_name="Mercy", callback_number="+13145550199", max_attempts=4,
        ))
        campaign_ids.append(out.id)
        rows = [
            {"external_id": f"c{c}-n{i}", "phone": _phone(i), "priority": 1 + (i + c) % 10}
            for i in range(NUMBERS)
        ]
        res = intake.submit(rt, admin, out.id, rows)
        assert res.counts()["accepted"] == NUMBERS
    return campaign_ids


def _poller(
    rt: Runtime, clock: FakeClock, who: Identity, seed: int, start: threading.Barrier,
    stats: Counter[str], errors: list[BaseException],
) -> None:
    rnd = random.Random(seed)
    try:
        start.wait()
        for _ in range(POLLS_PER_THREAD):
            tasks = queue.lease(rt, who, queue.LeaseRequest(
                who.name, limit=rnd.randint(1, 10), lease_seconds=rnd.choice((15, 60, 120)),
            ))
            stats["leased"] += len(tasks)
            for t in tasks:
                roll = rnd.random()
                try:
                    if roll < 0.2:
                        queue.release(rt, who, t["call_id"], t["lease_id"])
                        stats["released"] += 1
                    elif roll < 0.3:
                        stats["abandoned"] += 1  # never reported: the lease expires
                    else:
                        result = ("opted_out" if roll < 0.32 else "connected" if roll < 0.55
                                  else rnd.choice(("no_answer", "busy", "failed")))
                        now = clock.now()
                        queue.report_outcome(rt, who, t["call_id"], queue.Outcome(
                            t["lease_id"], result, "A-1", "Dana", "+13145550199",
                            now, now + timedelta(seconds=20),
                        ))
                        stats[result] += 1
                except Conflict as exc:
                    # Withdrawn meanwhile by another poller's opt-out, or expired.
                    assert exc.code == "LEASE_NOT_HELD", exc.code
                    stats["lost"] += 1
            clock.advance(timedelta(seconds=rnd.randint(0, 2)))
    except BaseException as exc:  # surfaced in the main thread
        errors.append(exc)


def _rolling_violations(rt: Runtime, ends: list[datetime]) -> list[Any]:
    """DB-level: numbers with more counted attempts than the caps in the 24 h / 7 days up to
    each given instant (one GROUP BY per instant)."""
    caps = rt.policy.caps
    bad: list[Any] = []
    with rt.db.read() as s:
        for end in ends:
            for span, limit in ((timedelta(hours=24), caps.per_day),
                                (timedelta(days=7), caps.per_week)):
                bad += s.execute(
                    select(Attempt.phone, func.count())
                    .where(Attempt.counted.is_(True), Attempt.at > end - span, Attempt.at <= end)
                    .group_by(Attempt.phone)
                    .having(func.count() > limit)
                ).all()
    return bad


def test_concurrent_pollers_never_break_the_caps(runtime: Runtime, clock: FakeClock) -> None:
    started = time.monotonic()
    rt = runtime
    _setup(rt)
    pollers = [new_identity(rt, Role.dialer, f"poller-{i}") for i in range(THREADS)]
    stats: Counter[str] = Counter()
    errors: list[BaseException] = []
    rnd = random.Random(20261124)
    rounds: list[tuple[datetime, datetime]] = []
    for day in range(ROUNDS):
        # About a day later, at a time of day that moves by up to 2 h either way: rolling
        # days of 20-28 h between rounds.
        begin = T0 + timedelta(days=day, minutes=rnd.randint(-120, 120) if day else 0)
        clock.set(begin)
        barrier = threading.Barrier(THREADS)
        threads = [
            threading.Thread(target=_poller,
                             args=(rt, clock, who, day * 100 + i, barrier, stats, errors))
            for i, who in enumerate(pollers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a poller hung"
        assert not errors, errors
        rounds.append((begin, clock.now()))
    # The last leases expire and are swept.
    clock.advance(timedelta(minutes=30))
    queue.expire_leases(rt)

    caps = rt.policy.caps
    assert stats["leased"] > 300, stats  # the run did real work
    assert stats["opted_out"] > 0 and stats["released"] > 0 and stats["abandoned"] > 0, stats
    with rt.db.read() as s:
        assert queue_store.cap_violations(s, caps.per_day, caps.per_week) == 0
        assert queue_store.live_lease_doubles(s) == 0
        # No number had more than per_day attempts in any round (each round spans < 24 h).
        for begin, end in rounds:
            over = s.execute(
                select(Attempt.phone, func.count())
                .where(Attempt.counted.is_(True), Attempt.at >= begin, Attempt.at <= end)
                .group_by(Attempt.phone).having(func.count() > caps.per_day)
            ).all()
            assert over == [], (begin, over)
        weekly = Counter(
            p for (p,) in s.execute(select(Attempt.phone).where(Attempt.counted.is_(True)))
        )
        assert max(weekly.values()) > caps.per_week  # 12 rounds: the weekly cap did bind
        # No live attempt is left, and every call's attempt counter matches its rows.
        assert s.scalar(select(func.count()).where(Attempt.state == "live")) == 0
        assert s.scalar(select(func.count()).select_from(Call)
                        .where(Call.status == "leased")) == 0
        counted = dict(s.execute(
            select(Attempt.call_id, func.count())
            .where(Attempt.counted.is_(True), Attempt.call_id.is_not(None))
            .group_by(Attempt.call_id)
        ).all())
        for call_id, attempts in s.execute(select(Call.id, Call.attempts)):
            assert counted.get(call_id, 0) == attempts, call_id
        # Released attempts are the only uncounted ones; the rest are reported, expired or
        # withdrawn, never still live.
        states = dict(s.execute(
            select(Attempt.state, func.count()).group_by(Attempt.state)
        ).all())
        assert set(states) <= {"reported", "released", "expired", "withdrawn"}, states
        assert s.scalar(select(func.count()).where(
            and_(Attempt.counted.is_(False), Attempt.state != "released"))) == 0
    log_holds(rt.db)
    ends = sorted({a for (a,) in _attempt_times(rt)})
    assert _rolling_violations(rt, ends) == []
    assert time.monotonic() - started < 30


def _attempt_times(rt: Runtime) -> list[Any]:
    with rt.db.read() as s:
        return list(s.execute(select(Attempt.at).where(Attempt.counted.is_(True))).all())


def _race_round(runtime: Runtime, admin: Identity, dialer: Identity, campaigns: list[str],
                round_: int, errors: list[str]) -> None:
    from consent.schemas import DncIn, RevocationIn
    from consent.service import add_dnc, revoke

    phone = _phone(200 + round_)
    record_consent(runtime, admin, ConsentIn(
        patient_ref=f"MRN-r{round_}", phone=phone, channels=["autodialed_voice"],
        purposes=["*"], method="written", obtained_at=T0 - timedelta(days=30),
        evidence_ref="scan://race"))
    for cid in campaigns:
        res = intake.submit(runtime, admin, cid, [{"external_id": f"r{round_}", "phone": phone}])
        assert res.counts()["accepted"] == 1
    tasks = queue.lease(runtime, dialer, queue.LeaseRequest("race", 10, 120))
    mine = [t for t in tasks if t["phone"] == phone]
    assert len(mine) == 3, len(mine)

    def outcome(t: dict[str, Any]) -> queue.Outcome:
        return queue.Outcome(t["lease_id"], "opted_out", "A-1", "Dana", "+13145550199",
                             None, None)

    start = threading.Barrier(4)

    def run(fn: Any) -> None:
        start.wait()
        try:
            fn()
        except Conflict:
            pass  # the lease was withdrawn by one of the others: LEASE_NOT_HELD
        except Exception as exc:  # a deadlock or any database error
            errors.append(f"{type(exc).__name__}: {exc}"[:300])

    jobs = [
        lambda: queue.report_outcome(runtime, dialer, mine[0]["call_id"], outcome(mine[0])),
        lambda: queue.report_outcomes(runtime, dialer, [(mine[1]["call_id"], outcome(mine[1]))]),
        lambda: revoke(runtime, admin, RevocationIn(phone=phone, source="letter")),
        lambda: add_dnc(runtime, admin, DncIn(phone=phone, reason="asked")),
    ]
    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a unit of work hung"
    with runtime.db.read() as s:
        pending = s.scalar(select(func.count()).select_from(Call).where(
            Call.phone == phone, Call.status.in_(("queued", "leased"))))
    assert pending == 0  # every call of the number left the queue


def test_opt_outs_and_revocations_of_one_number_never_deadlock(runtime: Runtime) -> None:
    """An opt-out reported on one live lease, a batch opt-out on another, a revocation and
    a do-not-call entry for the same number, all at once, many times: each ends with its
    documented answer (never a database error). On PostgreSQL they all take the number's
    lock first (core.numbers), which is what keeps them out of a lock cycle."""
    from config.policy import _default_policy_bytes, parse_policy

    text = _default_policy_bytes().decode().replace("per_day = 1", "per_day = 3")
    runtime.policy = parse_policy(text.encode(), "test policy")
    admin = new_identity(runtime, Role.admin, "race-admin")
    dialer = new_identity(runtime, Role.dialer, "race-dialer")
    campaigns = [create_campaign(runtime, admin, CampaignIn(
        name=f"race-{c}", purpose="discharge_followup", provider_name="Mercy",
        callback_number="+13145550199", max_attempts=4)).id for c in range(3)]
    errors: list[str] = []
    for round_ in range(12):
        _race_round(runtime, admin, dialer, campaigns, round_, errors)
    assert errors == []
    log_holds(runtime.db)
