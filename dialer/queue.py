"""The dialer queue: lease, dial check, outcome, release, preflight/reserve, lease expiry.

Concurrency (PRODUCT.md 4; API.md "Queue"): the caps and "one live lease per call" hold
whatever the number of pollers and API processes.

* SQLite: every unit of work here runs in ``db.write()``, i.e. ``BEGIN IMMEDIATE``: the
  whole check-and-lease holds the database's single write lock, so no two can interleave.
* PostgreSQL: candidate calls are locked ``FOR UPDATE SKIP LOCKED`` (two pollers never take
  the same call), and each number is serialised through its ``number_ledger`` row, locked
  ``FOR UPDATE`` (``SKIP LOCKED`` while leasing: a number being leased elsewhere is simply
  left for the next poll) *before* its attempts are counted, so two processes can never both
  see "2 attempts this week" and both add a third. Revocations lock the number's calls
  ``FOR UPDATE`` and so wait for, then withdraw, any lease committed before them.
* In both: a partial unique index allows one live attempt per call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    func,
    insert,
    inspect,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from config.errors import KIND_STATUS, Conflict, DomainError, Invalid, NotFound
from config.ids import new_id
from config.reasons import Code, Reason, reason
from consent import phones
from consent import rules as consent_rules
from consent.service import dnc_numbers, facts_for, read_conn
from dialer import audit, refusals
from dialer.campaigns import campaign_window
from dialer.db import UTCDateTime
from dialer.dispatch_rules import CallFacts, DispatchDecision, decide
from dialer.keys import Identity
from dialer.models import Attempt, Call, Campaign
from dialer.runtime import Runtime
from dialer.windows import CandidateZone, applicable_states, candidate_zones
from dialer.withdraw import lock_numbers

HISTORY = timedelta(days=8)  # enough attempts for rolling 7 x 24 h and calendar ISO weeks
SMALL_ELIGIBLE = 2000  # up to this many eligible calls, sort them (see the lease query)
DISCLOSURES_AGENT = ["provider_name", "callback_number", "agent_name"]
DISCLOSURES_IVR = ["provider_name", "callback_number"]
COMPLETE = {"connected", "voicemail", "opted_out", "wrong_number"}
RETRY = {"no_answer", "busy", "failed"}
RESULTS = COMPLETE | RETRY
CHECK_RANGE = timedelta(days=366)  # how far from now a preflight may ask about


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    dialer_id: str
    limit: int = 10
    lease_seconds: int = 120


# --- units of work ------------------------------------------------------------------------

# --- shared loading -----------------------------------------------------------------------


def _zones(c: Call, rt: Runtime) -> list[CandidateZone]:
    if c.candidate_zones:
        return [CandidateZone(z["zone"], z["source"]) for z in c.candidate_zones]
    return candidate_zones(c.phone, c.state, c.postal_code, rt.policy.default_region)


def attempt_times(
    s: Session, phone_list: Iterable[str], now: datetime
) -> dict[str, list[datetime]]:
    """Counted attempts of the last 8 days per number (set-based)."""
    wanted = sorted(set(phone_list))
    out: dict[str, list[datetime]] = defaultdict(list)
    since = now - HISTORY
    for i in range(0, len(wanted), 900):
        for phone, at in read_conn(s).execute(
            select(Attempt.phone, Attempt.at).where(
                Attempt.phone.in_(wanted[i : i + 900]), Attempt.counted.is_(True),
                Attempt.at > since,
            )
        ):
            out[phone].append(at)
    return out


def _facts(
    rt: Runtime,
    c: Call,
    campaign: Campaign,
    hist: dict[str, tuple[list[consent_rules.ConsentFact], list[consent_rules.RevocationFact]]],
    dnc: set[str],
    times: dict[str, list[datetime]],
) -> CallFacts:
    consents, revs = hist.get(c.phone, ([], []))
    return CallFacts(
        phone=c.phone,
        purpose=campaign.purpose,
        channel=campaign.channel,
        zones=_zones(c, rt),
        states=applicable_states(c.phone, c.state, c.postal_code),
        campaign_window=campaign_window(campaign),
        not_before=c.not_before,
        not_after=c.not_after,
        consents=consents,
        revocations=revs,
        on_dnc=c.phone in dnc,
        attempt_times=times.get(c.phone, []),
    )


def _log_refusal(
    rt: Runtime, s: Session, c: Call, status: str, why: Sequence[Reason], now: datetime,
    actor: str,
) -> None:
    c.status = status
    c.next_eligible_at = None
    c.lease_id = None
    c.lease_expires_at = None
    c.last_reason = why[0].code.value
    c.updated_at = now
    refusals.write(
        s,
        [
            refusals.refusal_row(
                at=now, stage="dispatch", status=status, reasons=why,
                policy_version=rt.policy_version, call_id=c.id, external_id=c.external_id,
                campaign_id=c.campaign_id, phone=c.phone,
            )
        ],
    )
    audit.record(
        s, at=now, actor=actor, kind=f"call.{status}", subject=f"call:{c.id}",
        policy_version=rt.policy_version, payload={"codes": [r.code.value for r in why]},
    )


# --- lease --------------------------------------------------------------------------------


# --- the lease query ------------------------------------------------------------------------
#
# Queued calls eligible now, highest priority then oldest first. Two plans, one meaning:
#
# * few eligible (the steady state; an empty or fully capped queue has none): range-scan
#   them in ix_calls_status_next_eligible and sort them in the database;
# * many (a fresh list): walk ix_calls_queue_order in priority order, skipping the deferred
#   ones inside the index, and stop after n.
#
# ix_calls_queue_order (migration 0001):
#   CREATE INDEX ix_calls_queue_order ON calls (priority DESC, created_at, id,
#   next_eligible_at) WHERE status = 'queued'
# Without it the second plan is the first one: every eligible call is sorted on each poll.
#
# SQLite: a probe counts the eligible calls up to SMALL_ELIGIBLE in the range index without
# reading a row, and the statement names its index (INDEXED BY; SQLAlchemy cannot render it,
# hence text): without statistics SQLite's planner always takes the range scan.
# PostgreSQL: one statement; the planner chooses from its statistics.
# Neither locks here: PostgreSQL locks the chosen rows with SKIP LOCKED in _lock_calls;
# SQLite's write transaction already holds the database's lock.
# 'queued' is an SQL literal, not a bound parameter: only then may a planner use the partial
# index (SQLite always; PostgreSQL once it switches to a generic plan).

QUEUE_ORDER_INDEX = "ix_calls_queue_order"
_QUEUED = literal_column("'queued'", String())
_SQLITE_LEASE_QUERY = (
    "SELECT id FROM calls INDEXED BY {index} "
    "WHERE status = 'queued' AND next_eligible_at <= :now "
    "ORDER BY priority DESC, created_at, id LIMIT :n"
)
_SQLITE_FEW, _SQLITE_MANY = (
    text(_SQLITE_LEASE_QUERY.format(index=index)).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("n", type_=Integer())
    )
    for index in ("ix_calls_status_next_eligible", QUEUE_ORDER_INDEX)
)
_has_queue_index: dict[str, bool] = {}


def _queue_index(s: Session) -> bool:
    """Whether ``ix_calls_queue_order`` exists (looked up once per database)."""
    key = s.get_bind().engine.url.render_as_string(hide_password=True)
    found = _has_queue_index.get(key)
    if found is None:
        found = any(
            ix["name"] == QUEUE_ORDER_INDEX for ix in inspect(s.connection()).get_indexes("calls")
        )
        _has_queue_index[key] = found
    return found


def _candidate_ids(s: Session, now: datetime, n: int) -> list[str]:
    """Up to ``n`` ids of queued calls eligible now, in queue order (see above)."""
    if s.get_bind().dialect.name != "sqlite":
        return list(
            s.scalars(
                select(Call.id)
                .where(Call.status == _QUEUED, Call.next_eligible_at <= now)
                .order_by(Call.priority.desc(), Call.created_at, Call.id)
                .limit(n)
            )
        )
    many = s.execute(
        select(literal_column("1")).select_from(Call)
        .where(Call.status == _QUEUED, Call.next_eligible_at <= now)
        .offset(SMALL_ELIGIBLE).limit(1)
    ).first() is not None
    query = _SQLITE_MANY if many and _queue_index(s) else _SQLITE_FEW
    return list(s.scalars(query, {"now": now, "n": n}))


def _lock_calls(s: Session, ids: Sequence[str], now: datetime) -> list[Call]:
    if not ids:
        return []
    # By primary key only, re-checked here: given the status and time terms in SQL, SQLite's
    # planner walks the whole eligible range of ix_calls_status_next_eligible instead. The
    # re-check sees the row as locked (PostgreSQL returns the latest committed version).
    q = select(Call).where(Call.id.in_(ids))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    by_id = {
        c.id: c for c in s.scalars(q)
        if c.status == "queued" and c.next_eligible_at is not None and c.next_eligible_at <= now
    }
    return [by_id[i] for i in ids if i in by_id]


_ATTEMPTS = cast(Table, Attempt.__table__)
_CALLS = cast(Table, Call.__table__)
# Whether this process's last lease found work: then the next one goes straight to the write
# transaction instead of probing first in a read transaction (the probe only saves an empty
# or fully capped poll a wait for the write lock).
_last_found: dict[str, bool] = {}


def _nothing_to_do(s: Session, now: datetime) -> bool:
    """No lease has expired and no queued call is eligible: two index probes."""
    one = literal_column("1", Integer())
    expired = select(one).select_from(Call).where(Call.lease_expires_at <= now)  # see below
    eligible = select(one).select_from(Call).where(
        Call.status == _QUEUED, Call.next_eligible_at <= now
    )
    return all(s.execute(q.limit(1)).first() is None for q in (expired, eligible))


def lease(rt: Runtime, who: Identity, req: LeaseRequest) -> list[dict[str, Any]]:
    now = rt.clock.now()
    tasks: list[dict[str, Any]] = []
    # SQLite: an empty or fully capped queue is answered from a read transaction, without
    # queueing for the database's one write lock behind the outcomes (a call that becomes
    # eligible meanwhile goes to the next poll, as if it had become eligible a moment later).
    # PostgreSQL has no such lock to spare; the write transaction is as cheap.
    if rt.db.is_sqlite and not _last_found.get(rt.db.url):
        with rt.db.read() as s:
            if _nothing_to_do(s, now):
                return tasks
    with rt.db.write() as s:
        _sweep_expired(rt, s, now, who.actor)
        pg = s.get_bind().dialect.name == "postgresql"
        seen: set[str] = set()
        for _round in range(6):
            want = req.limit - len(tasks)
            if want <= 0:
                break
            ids = [i for i in _candidate_ids(s, now, want * (3 if pg else 2) + len(seen))
                   if i not in seen]
            if not ids:
                break
            seen.update(ids)
            calls = _lock_calls(s, ids, now)
            if not calls:
                continue
            tasks.extend(_lease_batch(rt, who, s, req, calls, want, now))
    _last_found[rt.db.url] = bool(tasks)
    return tasks


def _lease_batch(
    rt: Runtime, who: Identity, s: Session, req: LeaseRequest, calls: list[Call], want: int,
    now: datetime,
) -> list[dict[str, Any]]:
    locked = lock_numbers(s, [c.phone for c in calls], skip_locked=True)
    calls = [c for c in calls if c.phone in locked]
    phone_list = [c.phone for c in calls]
    hist = facts_for(s, phone_list)
    dnc = dnc_numbers(s, phone_list)
    times = attempt_times(s, phone_list, now)
    camp_ids = {c.campaign_id for c in calls}
    campaigns = {
        c.id: c for c in s.scalars(select(Campaign).where(Campaign.id.in_(camp_ids)))
    }
    out: list[dict[str, Any]] = []
    attempt_rows: list[dict[str, Any]] = []
    call_updates: list[dict[str, Any]] = []
    for c in calls:
        if len(out) >= want:
            break
        campaign = campaigns[c.campaign_id]
        facts = _facts(rt, c, campaign, hist, dnc, times)
        d = decide(facts, rt.policy, now)
        if d.outcome != "go":
            _apply_not_go(rt, s, c, d, now, who.actor)
            continue
        attempt_id = new_id()
        expires = now + timedelta(seconds=req.lease_seconds)
        if d.window_closes_at is not None and d.window_closes_at < expires:
            expires = d.window_closes_at  # a lease never outlives the calling window
        times[c.phone].append(now)  # counts at once for the rest of this batch
        attempt_no = c.attempts + 1
        # The call's new state goes out in one Core executemany below, not through the
        # ORM's change tracking and flush (measured: the flush was a fifth of a lease).
        # ``c`` is not used again in this unit of work.
        call_updates.append({
            "b_id": c.id, "status": "leased", "lease_id": attempt_id,
            "lease_expires_at": expires, "next_eligible_at": None, "attempts": attempt_no,
            "last_reason": None, "updated_at": now,
        })
        attempt_rows.append(
            {
                "id": attempt_id, "call_id": c.id, "campaign_id": c.campaign_id,
                "phone": c.phone, "kind": "lease", "state": "live", "counted": True,
                "at": now, "expires_at": expires, "dialer_id": req.dialer_id,
                "key_id": who.key_id, "flags": [],
            }
        )
        audit.record(
            s, at=now, actor=who.actor, kind="call.leased", subject=f"call:{c.id}",
            policy_version=rt.policy_version,
            payload={"lease": attempt_id, "dialer_id": req.dialer_id,
                     "expires_at": expires.isoformat(), "attempt": attempt_no},
        )
        spec = rt.policy.purposes.get(campaign.purpose)
        prerecorded = campaign.channel == "prerecorded_voice"
        out.append(
            {
                "call_id": c.id,
                "lease_id": attempt_id,
                "lease_expires_at": expires,
                "phone": c.phone,
                "purpose": campaign.purpose,
                "channel": campaign.channel,
                "campaign_id": campaign.id,
                "provider_name": campaign.provider_name,
                "callback_number": campaign.callback_number,
                "script_id": campaign.script_id,
                "max_duration_seconds": spec.max_duration_seconds
                if (prerecorded and spec is not None) else None,
                "sms_max_chars": spec.sms_max_chars
                if (campaign.channel == "sms" and spec is not None) else None,
                "disclosures": DISCLOSURES_IVR if prerecorded else DISCLOSURES_AGENT,
                "attempt": attempt_no,
                "max_attempts": campaign.max_attempts,
            }
        )
    if attempt_rows:
        s.flush()  # the deferred and refused calls' new state (ORM)
        # The leased calls' new state first: the live-lease index checks against it.
        s.execute(update(_CALLS).where(_CALLS.c.id == bindparam("b_id")), call_updates)
        s.execute(insert(_ATTEMPTS), attempt_rows)  # Core: one executemany
    return out


def _apply_not_go(
    rt: Runtime, s: Session, c: Call, d: DispatchDecision, now: datetime, actor: str
) -> None:
    if d.outcome == "refuse":
        _log_refusal(rt, s, c, "refused", d.reasons, now, actor)
    elif d.outcome == "expire":
        _log_refusal(rt, s, c, "expired", d.reasons, now, actor)
    else:
        c.next_eligible_at = d.next_eligible_at
        c.last_reason = d.reasons[0].code.value
        c.updated_at = now
        audit.record(
            s, at=now, actor=actor, kind="call.deferred", subject=f"call:{c.id}",
            policy_version=rt.policy_version,
            payload={
                "codes": [r.code.value for r in d.reasons],
                "next_eligible_at": d.next_eligible_at.isoformat()
                if d.next_eligible_at else None,
            },
        )


# --- expiry -------------------------------------------------------------------------------


def _sweep_expired(rt: Runtime, s: Session, now: datetime, actor: str) -> int:
    """Leases past their expiry go back to the queue; the attempt counts (it may have been
    dialled). A call out of attempts leaves the queue with MAX_ATTEMPTS."""
    # Only a leased call has a lease_expires_at (every way out of "leased" clears it). The
    # status is checked here rather than in SQL: given "status = 'leased'", SQLite's planner
    # reads every live lease through ix_calls_status_next_eligible instead of the expired
    # ones through ix_calls_lease_expires -- each poll then cost O(live leases).
    q = select(Call).where(Call.lease_expires_at <= now)
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    expired = [c for c in s.scalars(q.limit(500)) if c.status == "leased"]
    if not expired:
        return 0
    ids = [c.lease_id for c in expired if c.lease_id]
    s.execute(
        update(Attempt).where(Attempt.id.in_(ids), Attempt.state == "live")
        .values(state="expired", recorded_at=now)
    )
    camp = {
        c.id: c for c in s.scalars(
            select(Campaign).where(Campaign.id.in_({c.campaign_id for c in expired}))
        )
    }
    for c in expired:
        audit.record(
            s, at=now, actor="system:lease-expiry", kind="lease.expired", subject=f"call:{c.id}",
            policy_version=rt.policy_version, payload={"lease": c.lease_id},
        )
        _requeue(rt, s, c, camp[c.campaign_id], now, actor)
    return len(expired)


def _requeue(
    rt: Runtime, s: Session, c: Call, campaign: Campaign, now: datetime, actor: str
) -> None:
    c.lease_id = None
    c.lease_expires_at = None
    c.updated_at = now
    if c.attempts >= campaign.max_attempts:
        _log_refusal(rt, s, c, "expired", [reason(Code.MAX_ATTEMPTS)], now, actor)
        return
    c.status = "queued"
    c.next_eligible_at = now


def expire_leases(rt: Runtime) -> int:
    """Scheduled job: return expired leases to the queue."""
    now = rt.clock.now()
    total = 0
    while True:
        with rt.db.write() as s:
            n = _sweep_expired(rt, s, now, "system:jobs")
        total += n
        if n < 500:
            return total


def expire_deadlines(rt: Runtime) -> int:
    """Scheduled job: queued calls past not_after leave the queue with DEADLINE_PASSED.

    Only the eligible range is searched: a queued call is never deferred to or past its
    not_after (the decision expires it instead), nor queued at intake with not_after before
    next_eligible_at, so not_after <= now implies next_eligible_at < now. The search runs in
    a read transaction, without the write lock (with no index on not_after it reads every
    eligible call: seconds for a fresh list of a million, which under the lock stalled every
    poller and outcome); the write lock is taken only for the calls found, re-checked."""
    now = rt.clock.now()
    total = 0
    while True:
        with rt.db.read() as s:
            ids = list(s.scalars(
                select(Call.id).where(
                    Call.status == _QUEUED, Call.next_eligible_at <= now, Call.not_after <= now
                ).limit(500)
            ))
        if not ids:
            return total
        with rt.db.write() as s:
            q = select(Call).where(Call.id.in_(ids))
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = [
                c for c in s.scalars(q)
                if c.status == "queued" and c.not_after is not None and c.not_after <= now
            ]
            for c in rows:
                why = [reason(Code.DEADLINE_PASSED)]
                if c.last_reason:
                    why[0] = reason(
                        Code.DEADLINE_PASSED,
                        f"the call could not be made before not_after (last blocked by "
                        f"{c.last_reason})",
                        details={"blocked_by": [c.last_reason]},
                    )
                _log_refusal(rt, s, c, "expired", why, now, "system:jobs")
        total += len(rows)
        if len(ids) < 500 or not rows:
            return total


# --- held leases: dial check, release, outcome ----------------------------------------------


def _held(
    s: Session, call_id: str, lease_id: str | None, now: datetime
) -> tuple[Call, Attempt, Campaign]:
    """The call, its live attempt and its campaign, in one statement; the call is locked on
    PostgreSQL (and re-read: populate_existing, in case the session held it already)."""
    row = s.execute(_held_query(s, Call.id == call_id)).one_or_none()
    if row is None:
        raise NotFound("NOT_FOUND", "no such call")
    return _check_held(s, row[0], row[1], row[2], lease_id, now)


def _check_held(
    s: Session, c: Call, joined: Attempt | None, campaign: Campaign, lease_id: str | None,
    now: datetime,
) -> tuple[Call, Attempt, Campaign]:
    if (
        c.status != "leased"
        or c.lease_id is None
        or (lease_id is not None and c.lease_id != lease_id)
        or c.lease_expires_at is None
        or c.lease_expires_at <= now
    ):
        raise Conflict(
            "LEASE_NOT_HELD", "the lease is unknown, expired, released or withdrawn",
            {"call_status": c.status},
        )
    a: Attempt | None = joined
    if a is None or a.id != c.lease_id:
        # PostgreSQL: the lock waited for a concurrent lease of this call; the joined row is
        # from before it. Read the attempt now.
        a = s.get(Attempt, c.lease_id)
    assert a is not None
    return c, a, campaign


def _held_many(
    s: Session, call_ids: Sequence[str]
) -> dict[str, tuple[Call, Attempt | None, Campaign]]:
    """:func:`_held`'s rows for many calls in one statement (locked in id order on
    PostgreSQL, so two batches never wait on each other in a cycle); not yet checked."""
    q = _held_query(s, Call.id.in_(sorted(set(call_ids)))).order_by(Call.id)
    return {c.id: (c, a, campaign) for c, a, campaign in s.execute(q)}


def _held_query(s: Session, which: ColumnElement[bool]) -> Select[Call, Attempt, Campaign]:
    """Calls with their live attempt and campaign; the calls locked on PostgreSQL (and
    re-read: populate_existing, in case the session held them already)."""
    q = (
        select(Call, Attempt, Campaign)
        .join(Campaign, Campaign.id == Call.campaign_id)
        .outerjoin(Attempt, Attempt.id == Call.lease_id)
        .where(which)
        .execution_options(populate_existing=True)
    )
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=Call)
    return q


def dial_check(rt: Runtime, who: Identity, call_id: str, lease_id: str | None) -> None:
    """The moment before dialling: consent, do-not-call, purpose and window again, now.
    Raises Conflict with the blocking reason."""
    now = rt.clock.now()
    with rt.db.read() as s:
        c = s.get(Call, call_id)
        if c is None:
            raise NotFound("NOT_FOUND", "no such call")
        if c.status == "withdrawn" and c.last_reason:
            why = reason(Code(c.last_reason))
            raise Conflict(why.code.value, why.message, {"rule": why.rule, "go": False})
        c, _, campaign = _held(s, call_id, lease_id, now)
        hist = facts_for(s, [c.phone])
        dnc = dnc_numbers(s, [c.phone])
        facts = _facts(rt, c, campaign, hist, dnc, {})
        from dialer.dispatch_rules import blocks_now, permanent_reasons

        why_list = permanent_reasons(facts, rt.policy, now)
        if not why_list:
            # The attempt was counted at lease time (facts carry no attempts): window only.
            why_list, _ = blocks_now(facts, rt.policy, now, lease_margin=False)
        if why_list:
            raise Conflict(
                why_list[0].code.value, why_list[0].message,
                {"rule": why_list[0].rule, "go": False,
                 "reasons": [r.as_dict() for r in why_list]},
            )


def release(rt: Runtime, who: Identity, call_id: str, lease_id: str) -> None:
    """Returned undialled: the attempt does not count."""
    now = rt.clock.now()
    with rt.db.write() as s:
        c, a, _ = _held(s, call_id, lease_id, now)
        a.state, a.counted, a.recorded_at = "released", False, now
        c.status, c.lease_id, c.lease_expires_at = "queued", None, None
        c.next_eligible_at = now
        c.attempts = max(0, c.attempts - 1)
        c.updated_at = now
        audit.record(
            s, at=now, actor=who.actor, kind="lease.released", subject=f"call:{c.id}",
            policy_version=rt.policy_version, payload={"lease": a.id},
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    lease_id: str
    result: str
    agent_id: str | None
    agent_name: str | None
    disclosed_callback_number: str | None
    started_at: datetime | None
    ended_at: datetime | None


REVOKING = ("opted_out", "wrong_number")


def _lock_revoked_numbers(s: Session, call_ids: Sequence[str]) -> None:
    """PostgreSQL: an outcome that revokes its number takes the number's ledger row before
    it locks any call, as every revocation does (dialer.withdraw), so that it and a
    concurrent revocation of the number never deadlock."""
    if not call_ids or s.get_bind().dialect.name != "postgresql":
        return
    phones = s.scalars(select(Call.phone).where(Call.id.in_(sorted(set(call_ids)))))
    lock_numbers(s, sorted(set(phones)), skip_locked=False)


def report_outcome(rt: Runtime, who: Identity, call_id: str, o: Outcome) -> dict[str, Any]:
    now = rt.clock.now()
    with rt.db.write() as s:
        if o.result in REVOKING:
            _lock_revoked_numbers(s, [call_id])
        out, problem = _one_outcome(rt, who, s, call_id, o, now)
    if problem is not None:
        # Committed above: the flag and the audit entry stay; the lease stays held.
        raise problem
    return out


def report_outcomes(
    rt: Runtime, who: Identity, items: Sequence[tuple[str, Outcome]]
) -> list[dict[str, Any]]:
    """Several outcomes in one transaction, each treated exactly as :func:`report_outcome`
    treats it, in the order given (an opt-out withdraws the number's other leases, so a later
    item for one of them gets ``LEASE_NOT_HELD``). One answer per item, in order:
    ``{"call_id", "ok": true, "status", "attempts", "flags"}`` or
    ``{"call_id", "ok": false, "error": {"code", "message", "details"}, "http_status"}``
    with the error and status the single-call endpoint would have answered."""
    now = rt.clock.now()
    answers: list[dict[str, Any]] = []
    with rt.db.write() as s:
        _lock_revoked_numbers(s, [call_id for call_id, o in items if o.result in REVOKING])
        rows: dict[str, tuple[Call, Attempt | None, Campaign]] | None = _held_many(
            s, [call_id for call_id, _ in items])
        for call_id, o in items:
            problem: DomainError | None
            try:
                out, problem = _one_outcome(rt, who, s, call_id, o, now, rows)
                if o.result in REVOKING and problem is None:
                    # The revocation changed other calls (maybe later items'): read each
                    # later item's call afresh, as the single endpoint would.
                    rows = None
            except DomainError as e:  # raised before anything was changed for this item
                problem = e
            if problem is None:
                answers.append({"call_id": call_id, "ok": True, **out})
            else:
                answers.append({
                    "call_id": call_id, "ok": False, "http_status": KIND_STATUS[problem.kind],
                    "error": {"code": problem.code, "message": problem.message,
                              "details": problem.details},
                })
    return answers


def _one_outcome(
    rt: Runtime, who: Identity, s: Session, call_id: str, o: Outcome, now: datetime,
    prefetched: dict[str, tuple[Call, Attempt | None, Campaign]] | None = None,
) -> tuple[dict[str, Any], Invalid | None]:
    """One outcome in ``s``. Identification problems are recorded (flag, audit entry) and
    returned, to be raised after the commit; other errors raise before any change."""
    if o.started_at and o.ended_at and o.ended_at < o.started_at:
        raise Invalid("VALIDATION_ERROR", "ended_at is before started_at",
                      [{"field": "body.ended_at", "message": "before started_at"}])
    if prefetched is None:
        c, a, campaign = _held(s, call_id, o.lease_id, now)
    elif call_id not in prefetched:
        raise NotFound("NOT_FOUND", "no such call")
    else:
        c, a, campaign = _check_held(s, *prefetched[call_id], o.lease_id, now)
    if o.result not in RESULTS:
        raise Invalid("VALIDATION_ERROR", "result is not a known outcome",
                      [{"field": "body.result", "message": "unknown"}])
    prerecorded = campaign.channel == "prerecorded_voice"
    missing = [
        f for f, v in (("agent_id", o.agent_id), ("agent_name", o.agent_name),
                       ("disclosed_callback_number", o.disclosed_callback_number))
        if v is None or not str(v).strip()
    ]
    if o.agent_id is not None and o.agent_id.strip().lower() == "ivr" and not prerecorded:
        missing.append("agent_id")
    flags = list(a.flags or [])
    problem: tuple[str, str, list[str]] | None = None
    if missing:
        problem = ("AGENT_ID_MISSING",
                   "agent identification is required: " + ", ".join(missing), missing)
    else:
        assert o.disclosed_callback_number is not None
        disclosed, _bad = phones.check(
            o.disclosed_callback_number, rt.policy.default_region,
            tuple(rt.policy.allowed_regions), "disclosed_callback_number",
        )
        if disclosed != campaign.callback_number:
            problem = ("CALLBACK_MISMATCH",
                       "disclosed_callback_number is not the campaign's callback number",
                       ["disclosed_callback_number"])
    if problem is not None:
        code, message, fields = problem
        if code not in flags:
            flags.append(code)
        a.flags = flags
        audit.record(
            s, at=now, actor=who.actor, kind="outcome.rejected", subject=f"call:{c.id}",
            policy_version=rt.policy_version,
            payload={"lease": a.id, "flag": code, "fields": fields},
        )
        return {}, Invalid(code, message, {"fields": fields, "lease_held": True})
    _apply_outcome(rt, who, s, c, a, campaign, o, flags, now)
    return {"call_id": call_id, "status": c.status, "attempts": c.attempts, "flags": flags}, None


def _apply_outcome(
    rt: Runtime, who: Identity, s: Session, c: Call, a: Attempt, campaign: Campaign,
    o: Outcome, flags: list[str], now: datetime,
) -> None:
    spec = rt.policy.purposes.get(campaign.purpose)
    if (
        campaign.channel == "prerecorded_voice" and spec is not None
        and o.started_at is not None and o.ended_at is not None
        and (o.ended_at - o.started_at).total_seconds() > spec.max_duration_seconds
    ):
        flags.append("OVER_DURATION")
    a.state = "reported"
    a.agent_id, a.agent_name = o.agent_id, o.agent_name
    a.disclosed_callback_number = campaign.callback_number
    a.started_at, a.ended_at = o.started_at, o.ended_at
    a.result, a.flags, a.recorded_at = o.result, flags, now
    audit.record(
        s, at=now, actor=who.actor, kind="call.outcome", subject=f"call:{c.id}",
        policy_version=rt.policy_version,
        payload={"lease": a.id, "result": o.result, "agent_id": o.agent_id, "flags": flags},
    )
    if o.result in COMPLETE:
        c.status, c.lease_id, c.lease_expires_at, c.updated_at = "completed", None, None, now
        c.next_eligible_at = None
    else:
        _requeue(rt, s, c, campaign, now, who.actor)
    if o.result in ("opted_out", "wrong_number"):
        from consent.service import revoke_in_session

        revoke_in_session(
            rt, who, s, c.phone,
            "ivr_keypress" if (o.result == "opted_out" and campaign.channel ==
                               "prerecorded_voice") else
            ("agent" if o.result == "opted_out" else "wrong_number"),
            now, call_id=c.id,
        )


# --- preflight ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRequest:
    phone: str
    purpose: str
    channel: str
    state: str | None = None
    postal_code: str | None = None
    at: datetime | None = None
    reserve: bool = False
    agent_id: str | None = None
    agent_name: str | None = None
    campaign_id: str | None = None


def check(rt: Runtime, who: Identity, req: CheckRequest) -> dict[str, Any]:
    now = rt.clock.now()
    at = req.at or now
    if abs(at - now) > CHECK_RANGE:
        # A preflight is about a real call; the window arithmetic of year 1 or 9999 would
        # overflow (a 500) rather than answer.
        raise Invalid("VALIDATION_ERROR", "at must be within a year of now",
                      [{"field": "body.at", "message": "out of range"}])
    if req.reserve:
        missing = [f for f, v in (("agent_id", req.agent_id), ("agent_name", req.agent_name),
                                  ("campaign_id", req.campaign_id)) if not v]
        if missing:
            raise Invalid("AGENT_ID_MISSING" if "campaign_id" not in missing or len(missing) > 1
                          else "VALIDATION_ERROR",
                          "a reservation needs " + ", ".join(missing),
                          [{"field": f"body.{f}", "message": "required"} for f in missing])
        if req.at is not None and abs((req.at - now).total_seconds()) > 60:
            raise Invalid("VALIDATION_ERROR", "a reservation is for now: leave at empty",
                          [{"field": "body.at", "message": "must be empty with reserve"}])
        at = now
    e164, bad = phones.check(req.phone, rt.policy.default_region, tuple(rt.policy.allowed_regions))
    if e164 is None:
        assert bad is not None
        return {"allowed": False, "reasons": [bad.as_dict()], "next_eligible_at": None,
                "candidate_zones": [], "reservation_id": None}
    state = req.state.upper() if req.state else None
    zones = candidate_zones(e164, state, req.postal_code, rt.policy.default_region)
    with (rt.db.write() if req.reserve else rt.db.read()) as s:
        campaign: Campaign | None = None
        if req.campaign_id:
            campaign = s.get(Campaign, req.campaign_id)
            if campaign is None:
                raise NotFound("NOT_FOUND", "no such campaign")
            if req.reserve and campaign.purpose != req.purpose:
                # The attempt is logged under this campaign: its purpose is what was checked.
                # (The channel may differ: an agent may call back on a prerecorded campaign.)
                raise Invalid(
                    "VALIDATION_ERROR",
                    "purpose must be the reservation campaign's purpose",
                    [{"field": "body.purpose", "message": "differs from the campaign's"}],
                )
        if req.reserve and s.get_bind().dialect.name == "postgresql":
            lock_numbers(s, [e164], skip_locked=False)
        hist = facts_for(s, [e164])
        consents, revs = hist.get(e164, ([], []))
        facts = CallFacts(
            phone=e164, purpose=req.purpose, channel=req.channel, zones=zones,
            states=applicable_states(e164, state, req.postal_code),
            campaign_window=campaign_window(campaign) if campaign else None,
            not_before=None, not_after=None, consents=consents, revocations=revs,
            on_dnc=bool(dnc_numbers(s, [e164])),
            attempt_times=attempt_times(s, [e164], at).get(e164, []),
        )
        d = decide(facts, rt.policy, at)
        allowed = d.outcome == "go"
        out: dict[str, Any] = {
            "allowed": allowed,
            "reasons": [r.as_dict() for r in d.reasons],
            "next_eligible_at": at if allowed else d.next_eligible_at,
            "candidate_zones": [z.as_dict() for z in zones],
            "reservation_id": None,
        }
        if req.reserve and allowed:
            assert campaign is not None
            rid = new_id()
            s.add(Attempt(
                id=rid, call_id=None, campaign_id=campaign.id, phone=e164, kind="manual",
                state="manual", counted=True, at=now, expires_at=None, dialer_id=None,
                key_id=who.key_id, agent_id=req.agent_id, agent_name=req.agent_name,
                disclosed_callback_number=campaign.callback_number, result=None, flags=[],
                recorded_at=now,
            ))
            audit.record(
                s, at=now, actor=who.actor, kind="attempt.reserved", subject=f"attempt:{rid}",
                policy_version=rt.policy_version,
                payload={"campaign": campaign.id, "agent_id": req.agent_id,
                         "purpose": req.purpose, "channel": req.channel},
            )
            out["reservation_id"] = rid
        return out


# --- stats for tests and benches ----------------------------------------------------------


def cap_violations(s: Session, per_day: int, per_week: int) -> int:
    """Numbers whose counted attempts exceed the rolling caps anywhere (for stress tests)."""
    rows = s.execute(
        select(Attempt.phone, Attempt.at).where(Attempt.counted.is_(True)).order_by(
            Attempt.phone, Attempt.at
        )
    ).all()
    bad = 0
    by_phone: dict[str, list[datetime]] = defaultdict(list)
    for phone, at in rows:
        by_phone[phone].append(at)
    for times in by_phone.values():
        for i, t in enumerate(times):
            day = sum(1 for u in times[: i + 1] if t - u < timedelta(hours=24))
            week = sum(1 for u in times[: i + 1] if t - u < timedelta(days=7))
            if day > per_day or week > per_week:
                bad += 1
                break
    return bad


def live_lease_doubles(s: Session) -> int:
    return int(
        s.execute(
            select(func.count()).select_from(
                select(Attempt.call_id).where(Attempt.state == "live")
                .group_by(Attempt.call_id).having(func.count() > 1).subquery()
            )
        ).scalar_one()
    )

