"""The dialer queue: lease, dial check, outcome, release, preflight/reserve, lease expiry.

Concurrency (PRODUCT.md 4; API.md "Queue"): the caps and "one live lease per call" hold
whatever the number of pollers and API processes.

* SQLite: every unit of work here runs in ``db.write()``, i.e. ``BEGIN IMMEDIATE``: the
  whole check-and-lease holds the database's single write lock, so no two can interleave.
  The lease and outcome requests of a process that wait for that lock together are served
  in one such transaction, one after the other (dialer.groupcommit; see _serve).
* PostgreSQL: candidate calls are locked ``FOR UPDATE SKIP LOCKED`` (two pollers never take
  the same call), and each number is serialised through its ``number_ledger`` row, locked
  ``FOR UPDATE`` (``SKIP LOCKED`` while leasing: a number being leased elsewhere is simply
  left for the next poll) *before* its attempts are counted, so two processes can never both
  see "2 attempts this week" and both add a third. Revocations lock the number's calls
  ``FOR UPDATE`` and so wait for, then withdraw, any lease committed before them.
* In both: a partial unique index allows one live attempt per call.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, cast

from sqlalchemy import (
    Integer,
    Select,
    String,
    Table,
    Text,
    bindparam,
    func,
    inspect,
    literal_column,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from config.errors import KIND_STATUS, Conflict, DomainError, Invalid, NotFound
from config.ids import new_id
from config.policy import Window
from config.reasons import Code, Reason, reason
from consent import phones
from consent import rules as consent_rules
from consent.service import dnc_numbers, facts_for, read_conn
from core import audit, refusals
from core.db import UTCDateTime, insert_rows, one_of_param, one_of_value, update_rows
from core.groupcommit import GroupCommit
from core.keys import Identity
from core.models import PARKED_SQL, QUEUE_ORDER_SQL, Attempt, Call, Campaign
from core.numbers import lock_numbers
from core.runtime import Runtime
from dialer.campaigns import campaign_window
from dialer.rules.dispatch import CallFacts, DispatchDecision, decide
from dialer.rules.windows import CandidateZone, applicable_states, candidate_zones

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


# --- shared loading -----------------------------------------------------------------------
#
# The hot paths (lease, outcome, release, expiry) read and write calls and attempts with
# Core statements: a call is read into a plain QCall, and new state goes out in executemany
# updates. Measured in-process, the ORM's loading, change tracking and flush (with the
# autoflush that every later read triggers) were a third of a lease-and-outcome cycle.

_ATTEMPTS = cast(Table, Attempt.__table__)
_CALLS = cast(Table, Call.__table__)


@dataclass(slots=True)
class QCall:
    """A call as the queue reads it (the columns it needs; no patient reference)."""

    id: str
    campaign_id: str
    external_id: str
    phone: str
    state: str | None
    postal_code: str | None
    not_before: datetime | None
    not_after: datetime | None
    status: str
    accepted: bool
    next_eligible_at: datetime | None
    parked: bool
    attempts: int
    candidate_zones: str | list[dict[str, str]] | None  # the JSON text on SQLite
    last_reason: str | None
    lease_id: str | None
    lease_expires_at: datetime | None
    updated_at: datetime

    def apply(self, values: dict[str, Any]) -> None:
        """Mirror an update just queued for this call (later items of a batch see it)."""
        for k, v in values.items():
            if k != "b_id":
                setattr(self, k, v)


# candidate_zones as stored (text on SQLite; PostgreSQL's driver decodes it): see _zones.
_QCALL_COLUMNS = tuple(
    type_coerce(_CALLS.c[f], Text).label(f) if f == "candidate_zones" else _CALLS.c[f]
    for f in QCall.__dataclass_fields__
)
_NQ = len(_QCALL_COLUMNS)
_NOW = bindparam("now", type_=UTCDateTime())
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)


def _variants(q: Select[Any]) -> tuple[Select[Any], Select[Any]]:
    """A statement and its PostgreSQL variant locking what it reads FOR UPDATE SKIP LOCKED,
    both built once (a statement built per call costs more to build than to run)."""
    return q, q.with_for_update(skip_locked=True)


_QCALLS_BY_ID = _variants(select(*_QCALL_COLUMNS).where(_CALLS.c.id.in_(_IDS)))
_QCALLS_EXPIRED = _variants(
    select(*_QCALL_COLUMNS).where(_CALLS.c.lease_expires_at <= _NOW).limit(500)
)


def _qcalls(
    s: Session, q: tuple[Select[Any], Select[Any]], params: dict[str, Any], lock: bool = False
) -> list[QCall]:
    """Calls as QCalls; ``lock``: locked FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite's write
    transaction already holds the database's lock)."""
    stmt = q[1] if lock and s.get_bind().dialect.name == "postgresql" else q[0]
    return [QCall(*row) for row in s.execute(stmt, params)]


class _Writes:
    """Updates queued during a unit of work, sent as one executemany per table and set of
    columns, in the order they were first queued (core.db.update_rows)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}

    def call(self, c: QCall, values: dict[str, Any]) -> None:
        c.apply(values)
        self._add("calls", {"b_id": c.id, **values})

    def attempt(self, attempt_id: str, values: dict[str, Any]) -> None:
        self._add("attempts", {"b_id": attempt_id, **values})

    def _add(self, table: str, row: dict[str, Any]) -> None:
        self._groups.setdefault((table, tuple(row)), []).append(row)

    def send(self, s: Session) -> None:
        groups, self._groups = self._groups, {}
        for (table, _cols), rows in groups.items():
            update_rows(s, _CALLS if table == "calls" else _ATTEMPTS, rows)


@dataclass(frozen=True, slots=True)
class CampaignView:
    """What the queue reads of a campaign. Campaigns never change once created (there is no
    update), so each process keeps the ones it has read."""

    id: str
    purpose: str
    channel: str
    provider_name: str
    callback_number: str
    script_id: str | None
    max_attempts: int
    window: Window | None


_CAMPAIGN_COLUMNS = select(Campaign).where(Campaign.id.in_(_IDS))
_campaign_cache: dict[tuple[str, str], CampaignView] = {}


def _campaigns(s: Session, ids: Iterable[str]) -> dict[str, CampaignView]:
    url = s.get_bind().engine.url.database or ""
    out: dict[str, CampaignView] = {}
    missing: list[str] = []
    for i in set(ids):
        view = _campaign_cache.get((url, i))
        if view is None:
            missing.append(i)
        else:
            out[i] = view
    if missing:
        if len(_campaign_cache) > 10_000:
            _campaign_cache.clear()
        for c in s.scalars(_CAMPAIGN_COLUMNS, {"ids": missing}):
            out[c.id] = _campaign_cache[(url, c.id)] = CampaignView(
                c.id, c.purpose, c.channel, c.provider_name, c.callback_number, c.script_id,
                c.max_attempts, campaign_window(c),
            )
    return out


class _CallLike(Protocol):
    @property
    def phone(self) -> str: ...
    @property
    def state(self) -> str | None: ...
    @property
    def postal_code(self) -> str | None: ...
    @property
    def not_before(self) -> datetime | None: ...
    @property
    def not_after(self) -> datetime | None: ...
    @property
    def candidate_zones(self) -> str | list[dict[str, str]] | None: ...


_ZONES: dict[str, tuple[CandidateZone, ...]] = {}


def _zones(c: _CallLike, rt: Runtime) -> list[CandidateZone]:
    """The zones recorded on the call at intake (decoded once per distinct JSON text: a
    queue's calls share a few), else worked out now."""
    raw = c.candidate_zones
    got: tuple[CandidateZone, ...] = ()
    if isinstance(raw, str):
        cached = _ZONES.get(raw)
        if cached is None:
            cached = tuple(CandidateZone(z["zone"], z["source"]) for z in json.loads(raw))
            if len(_ZONES) < 4096:
                _ZONES[raw] = cached
        got = cached
    elif raw:
        got = tuple(CandidateZone(z["zone"], z["source"]) for z in raw)
    if got:
        return list(got)
    return candidate_zones(c.phone, c.state, c.postal_code, rt.policy.default_region)


@lru_cache(maxsize=1024)
def _callback_e164(raw: str, default_region: str, allowed: tuple[str, ...]) -> str | None:
    """A disclosed callback number as E.164 (None if invalid): dialers disclose a handful of
    numbers, each parsed and validated once."""
    return phones.check(raw, default_region, allowed, "disclosed_callback_number")[0]


_ATTEMPT_TIMES: dict[str, Any] = {}


def attempt_times(
    s: Session, phone_list: Iterable[str], now: datetime
) -> dict[str, list[datetime]]:
    """Counted attempts of the last 8 days per number (set-based)."""
    wanted = sorted(set(phone_list))
    out: dict[str, list[datetime]] = defaultdict(list)
    if not wanted:
        return out
    conn = read_conn(s)
    dialect = conn.dialect.name
    q = _ATTEMPT_TIMES.get(dialect)
    if q is None:
        q = _ATTEMPT_TIMES[dialect] = select(Attempt.phone, Attempt.at).where(
            one_of_param(dialect, Attempt.phone, "phones"), Attempt.counted.is_(True),
            Attempt.at > bindparam("since", type_=UTCDateTime()),
        )
    for phone, at in conn.execute(q, {"phones": one_of_value(dialect, wanted),
                                      "since": now - HISTORY}):
        out[phone].append(at)
    return out


def _facts(
    rt: Runtime,
    c: _CallLike,
    campaign: CampaignView,
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
        campaign_window=campaign.window,
        not_before=c.not_before,
        not_after=c.not_after,
        consents=consents,
        revocations=revs,
        on_dnc=c.phone in dnc,
        attempt_times=times.get(c.phone, []),
    )


def _refuse(
    rt: Runtime, s: Session, w: _Writes, c: QCall, status: str, why: Sequence[Reason],
    now: datetime, actor: str,
) -> None:
    """The call leaves the queue (refused or expired at dispatch): its new state, a row in
    the refusal log and an audit entry."""
    values: dict[str, Any] = {
        "status": status, "next_eligible_at": None, "lease_id": None, "lease_expires_at": None,
        "last_reason": why[0].code.value, "updated_at": now,
    }
    if status == "refused":
        # Only then: a write that names the column rewrites the call's entry in
        # uq_calls_campaign_external_accepted (migration 0002).
        values["accepted"] = False
    w.call(c, values)
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


# --- the lease query ------------------------------------------------------------------------
#
# Queued calls eligible now, highest priority then oldest first. A deferred call is parked
# (calls.parked, migration 0003): out of ix_calls_queue_order until it is due, so that a
# walk of the queue order does not step over every deferred call ahead of the first
# eligible one. Each lease transaction first unparks the parked calls that are due, in the
# order they became due, up to UNPARK_LIMIT: beyond that (a calling window opening on a
# larger backlog) the rest join the queue order over the next polls; within one instant,
# higher priority first.
#
# Then two plans, one meaning (the unparked queued calls eligible now, in queue order):
#
# * few eligible (the steady state; an empty or fully capped queue has none): range-scan
#   them in ix_calls_status_next_eligible and sort them in the database;
# * many (a fresh list): walk ix_calls_queue_order in priority order, skipping (inside the
#   index) a call not yet due that was never parked, and stop after n.
#
# ix_calls_queue_order (migration 0003):
#   CREATE INDEX ix_calls_queue_order ON calls (priority DESC, created_at, id,
#   next_eligible_at) WHERE status = 'queued' AND NOT parked
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
    f"WHERE {QUEUE_ORDER_SQL} AND next_eligible_at <= :now "
    "ORDER BY priority DESC, created_at, id LIMIT :n"
)
_SQLITE_FEW, _SQLITE_MANY = (
    text(_SQLITE_LEASE_QUERY.format(index=index)).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("n", type_=Integer())
    )
    for index in ("ix_calls_status_next_eligible", QUEUE_ORDER_INDEX)
)
UNPARK_LIMIT = 1000
_UNPARK = (
    "UPDATE calls SET parked = false WHERE id IN ("
    "SELECT id FROM calls {hint}"
    f"WHERE {PARKED_SQL} AND next_eligible_at <= :now "
    "ORDER BY next_eligible_at, priority DESC, created_at, id LIMIT :n{lock})"
)
_SQLITE_UNPARK, _PG_UNPARK = (
    text(_UNPARK.format(hint=hint, lock=lock)).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("n", type_=Integer())
    )
    for hint, lock in (("INDEXED BY ix_calls_parked ", ""), ("", " FOR UPDATE SKIP LOCKED"))
)


def _unpark_due(s: Session, now: datetime) -> None:
    """Return the parked calls due by ``now`` to the queue order (up to UNPARK_LIMIT; on
    PostgreSQL skipping those another transaction holds)."""
    sqlite = s.get_bind().dialect.name == "sqlite"
    s.execute(_SQLITE_UNPARK if sqlite else _PG_UNPARK, {"now": now, "n": UNPARK_LIMIT})


_has_queue_index: dict[str, bool] = {}
# SQLite: when the probe last found many eligible calls (per database). For a second after,
# polls take the queue-order walk without probing again: the probe reads up to
# SMALL_ELIGIBLE index entries, and a queue that had that many a second ago has (give or
# take a second's leases) as many now. Either plan returns the same calls; a wrong guess
# costs time, never a different answer.
_many_since: dict[str, float] = {}
MANY_FOR = 1.0


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


_PROBE_MANY: Select[Any] = (
    select(literal_column("1")).select_from(Call)
    .where(Call.status == _QUEUED, Call.next_eligible_at <= bindparam("now", type_=UTCDateTime()))
    .offset(SMALL_ELIGIBLE).limit(1)
)
_PG_LEASE_QUERY = (
    select(Call.id)
    .where(text(QUEUE_ORDER_SQL), Call.next_eligible_at <= bindparam("now", type_=UTCDateTime()))
    .order_by(Call.priority.desc(), Call.created_at, Call.id)
    .limit(bindparam("n", type_=Integer()))
)


def _candidate_ids(s: Session, now: datetime, n: int) -> list[str]:
    """Up to ``n`` ids of queued calls eligible now, in queue order (see above)."""
    if s.get_bind().dialect.name != "sqlite":
        return list(s.scalars(_PG_LEASE_QUERY, {"now": now, "n": n}))
    query = _SQLITE_FEW
    if _queue_index(s):
        key = str(s.get_bind().engine.url)
        since = _many_since.get(key)
        clock = time.monotonic()
        if since is None or clock - since > MANY_FOR:
            many = s.execute(_PROBE_MANY, {"now": now}).first() is not None
            if many:
                _many_since[key] = clock
            else:
                _many_since.pop(key, None)
        if key in _many_since:
            query = _SQLITE_MANY
    return list(s.scalars(query, {"now": now, "n": n}))


def _lock_calls(s: Session, ids: Sequence[str], now: datetime) -> list[QCall]:
    if not ids:
        return []
    # By primary key only, re-checked here: given the status and time terms in SQL, SQLite's
    # planner walks the whole eligible range of ix_calls_status_next_eligible instead. The
    # re-check sees the row as locked (PostgreSQL returns the latest committed version).
    by_id = {
        c.id: c for c in _qcalls(s, _QCALLS_BY_ID, {"ids": list(ids)}, lock=True)
        if c.status == "queued" and c.next_eligible_at is not None and c.next_eligible_at <= now
    }
    return [by_id[i] for i in ids if i in by_id]


# Whether this process's last lease found work: then the next one goes straight to the write
# transaction instead of probing first in a read transaction (the probe only saves an empty
# or fully capped poll a wait for the write lock).
_last_found: dict[str, bool] = {}
_ONE = literal_column("1", Integer())
# Only a leased call has a lease_expires_at (see _sweep_expired).
_LEASE_EXPIRED = (
    select(_ONE).select_from(Call)
    .where(Call.lease_expires_at <= bindparam("now", type_=UTCDateTime())).limit(1)
)
_ANY_ELIGIBLE = (
    select(_ONE).select_from(Call)
    .where(Call.status == _QUEUED, Call.next_eligible_at <= bindparam("now", type_=UTCDateTime()))
    .limit(1)
)


def _nothing_to_do(s: Session, now: datetime) -> bool:
    """No lease has expired and no queued call is eligible: two index probes."""
    return all(s.execute(q, {"now": now}).first() is None
               for q in (_LEASE_EXPIRED, _ANY_ELIGIBLE))


@dataclass(eq=False, slots=True)
class _LeaseJob:
    """One lease request; ``tasks`` is its answer."""

    who: Identity
    req: LeaseRequest
    tasks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _OutcomeJob:
    """One request's outcomes; ``results`` is its answer, one per item."""

    who: Identity
    items: Sequence[tuple[str, Outcome]]
    results: list[tuple[dict[str, Any], DomainError | None]] = field(default_factory=list)


_Job = _LeaseJob | _OutcomeJob


def _serve(rt: Runtime, s: Session, jobs: list[_Job]) -> None:
    """Lease and outcome requests in one write transaction (dialer.groupcommit): first the
    outcomes, then the leases, all leases drawn together from the queue in its order and
    dealt to the requests in turn, each up to its own limit. Every job's answer is set
    afresh (a job may come here again, alone, after its group failed)."""
    now = rt.clock.now()  # taken under the write lock: the instant the decisions hold at
    outcome_jobs = [j for j in jobs if isinstance(j, _OutcomeJob)]
    if outcome_jobs:
        results = _outcomes_in(
            rt, s, [(j.who, call_id, o) for j in outcome_jobs for call_id, o in j.items], now
        )
        at = 0
        for j in outcome_jobs:
            j.results = results[at:at + len(j.items)]
            at += len(j.items)
    lease_jobs = [j for j in jobs if isinstance(j, _LeaseJob)]
    if lease_jobs:
        _lease_in(rt, s, lease_jobs, now)


def group_commit(rt: Runtime) -> GroupCommit[_Job]:
    """This process's group commit for ``rt`` (SQLite: see _run), made on first use."""
    group = rt.extras.get("group_commit")
    if group is None:
        group = rt.extras.setdefault(
            "group_commit", GroupCommit(rt.db, lambda s, jobs: _serve(rt, s, jobs))
        )
    return cast("GroupCommit[_Job]", group)


def _run(rt: Runtime, job: _Job) -> None:
    """Serve one job: on SQLite in a transaction shared with the process's other requests
    waiting for the write lock (dialer.groupcommit; weighed by its calls), else (or if that
    group failed) alone."""
    weight = job.req.limit if isinstance(job, _LeaseJob) else len(job.items)
    if rt.db.is_sqlite and group_commit(rt).submit(job, weight):
        return
    with rt.db.write() as s:
        _serve(rt, s, [job])


def lease(rt: Runtime, who: Identity, req: LeaseRequest) -> list[dict[str, Any]]:
    # SQLite: an empty or fully capped queue is answered from a read transaction, without
    # queueing for the database's one write lock behind the outcomes (a call that becomes
    # eligible meanwhile goes to the next poll, as if it had become eligible a moment later).
    # PostgreSQL has no such lock to spare; the write transaction is as cheap.
    if rt.db.is_sqlite and not _last_found.get(rt.db.url):
        with rt.db.read() as s:
            if _nothing_to_do(s, rt.clock.now()):
                return []
    job = _LeaseJob(who, req)
    _run(rt, job)
    _last_found[rt.db.url] = bool(job.tasks)
    return job.tasks


def _lease_in(rt: Runtime, s: Session, jobs: list[_LeaseJob], now: datetime) -> None:
    """The lease requests ``jobs`` in one pass over the queue: expired leases back first,
    then the eligible calls in queue order, each that may go now dealt to the first request
    still short of its limit."""
    for j in jobs:
        j.tasks = []
    _sweep_expired(rt, s, now, jobs[0].who.actor)
    _unpark_due(s, now)
    pg = s.get_bind().dialect.name == "postgresql"
    takers = deque(jobs)
    seen: set[str] = set()
    for _round in range(6):
        want = sum(j.req.limit - len(j.tasks) for j in takers)
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
        _lease_batch(rt, s, calls, takers, now)


def _lease_batch(
    rt: Runtime, s: Session, calls: list[QCall], takers: deque[_LeaseJob], now: datetime
) -> None:
    """Decide ``calls`` in order; each that may go is leased to ``takers[0]``, which leaves
    the deque once it has its limit. Stops when none is left."""
    locked = lock_numbers(s, [c.phone for c in calls], skip_locked=True)
    calls = [c for c in calls if c.phone in locked]
    phone_list = [c.phone for c in calls]
    hist = facts_for(s, phone_list)
    dnc = dnc_numbers(s, phone_list)
    times = attempt_times(s, phone_list, now)
    campaigns = _campaigns(s, (c.campaign_id for c in calls))
    attempt_rows: list[dict[str, Any]] = []
    w = _Writes()
    for c in calls:
        while takers and len(takers[0].tasks) >= takers[0].req.limit:
            takers.popleft()
        if not takers:
            break
        job = takers[0]
        who, req = job.who, job.req
        campaign = campaigns[c.campaign_id]
        facts = _facts(rt, c, campaign, hist, dnc, times)
        d = decide(facts, rt.policy, now)
        if d.outcome != "go":
            _apply_not_go(rt, s, w, c, d, now, who.actor)
            continue
        attempt_id = new_id()
        expires = now + timedelta(seconds=req.lease_seconds)
        if d.window_closes_at is not None and d.window_closes_at < expires:
            expires = d.window_closes_at  # a lease never outlives the calling window
        times[c.phone].append(now)  # counts at once for the rest of this batch
        attempt_no = c.attempts + 1
        w.call(c, {"status": "leased", "lease_id": attempt_id, "lease_expires_at": expires,
                   "next_eligible_at": None, "parked": False, "attempts": attempt_no,
                   "last_reason": None, "updated_at": now})
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
        job.tasks.append(
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
    # The calls' new state first (the live-lease index checks the attempts against it).
    w.send(s)
    if attempt_rows:
        insert_rows(s, _ATTEMPTS, attempt_rows)  # one executemany


def _apply_not_go(
    rt: Runtime, s: Session, w: _Writes, c: QCall, d: DispatchDecision, now: datetime,
    actor: str,
) -> None:
    if d.outcome == "refuse":
        _refuse(rt, s, w, c, "refused", d.reasons, now, actor)
    elif d.outcome == "expire":
        _refuse(rt, s, w, c, "expired", d.reasons, now, actor)
    else:
        parked = d.next_eligible_at is not None and d.next_eligible_at > now
        w.call(c, {"next_eligible_at": d.next_eligible_at, "parked": parked,
                   "last_reason": d.reasons[0].code.value, "updated_at": now})
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
    expired = [
        c for c in _qcalls(s, _QCALLS_EXPIRED, {"now": now}, lock=True)
        if c.status == "leased"
    ]
    if not expired:
        return 0
    ids = [c.lease_id for c in expired if c.lease_id]
    s.execute(
        update(Attempt).where(Attempt.id.in_(ids), Attempt.state == "live")
        .values(state="expired", recorded_at=now)
    )
    camp = _campaigns(s, (c.campaign_id for c in expired))
    w = _Writes()
    for c in expired:
        audit.record(
            s, at=now, actor="system:lease-expiry", kind="lease.expired", subject=f"call:{c.id}",
            policy_version=rt.policy_version, payload={"lease": c.lease_id},
        )
        _requeue(rt, s, w, c, camp[c.campaign_id], now, actor)
    w.send(s)
    return len(expired)


def _requeue(
    rt: Runtime, s: Session, w: _Writes, c: QCall, campaign: CampaignView, now: datetime,
    actor: str,
) -> None:
    if c.attempts >= campaign.max_attempts:
        _refuse(rt, s, w, c, "expired", [reason(Code.MAX_ATTEMPTS)], now, actor)
        return
    w.call(c, {"status": "queued", "lease_id": None, "lease_expires_at": None,
               "next_eligible_at": now, "parked": False, "updated_at": now})


def expire_leases(rt: Runtime) -> int:
    """Scheduled job: return expired leases to the queue. Probed first in a read
    transaction: the write lock only when a lease has expired."""
    now = rt.clock.now()
    total = 0
    while True:
        with rt.db.read() as s:
            if s.execute(_LEASE_EXPIRED, {"now": now}).first() is None:
                return total
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
            rows = [
                c for c in _qcalls(s, _QCALLS_BY_ID, {"ids": ids}, lock=True)
                if c.status == "queued" and c.not_after is not None and c.not_after <= now
            ]
            w = _Writes()
            for c in rows:
                why = [reason(Code.DEADLINE_PASSED)]
                if c.last_reason:
                    why[0] = reason(
                        Code.DEADLINE_PASSED,
                        f"the call could not be made before not_after (last blocked by "
                        f"{c.last_reason})",
                        details={"blocked_by": [c.last_reason]},
                    )
                _refuse(rt, s, w, c, "expired", why, now, "system:jobs")
            w.send(s)
        total += len(rows)
        if len(ids) < 500 or not rows:
            return total


# --- held leases: dial check, release, outcome ----------------------------------------------


@dataclass(slots=True)
class _Held:
    """A leased call with its live attempt's id and flags (checked by :func:`_check_held`)."""

    call: QCall
    attempt_id: str | None
    flags: list[str]


_HELD = select(*_QCALL_COLUMNS, _ATTEMPTS.c.id, _ATTEMPTS.c.flags).select_from(
    _CALLS.outerjoin(_ATTEMPTS, _ATTEMPTS.c.id == _CALLS.c.lease_id)
).where(_CALLS.c.id.in_(_IDS)).order_by(_CALLS.c.id)
_HELD_PG = _HELD.with_for_update(of=_CALLS)


def _held_rows(s: Session, call_ids: Iterable[str]) -> dict[str, _Held]:
    """Calls with their live attempt, in one statement; locked in id order on PostgreSQL
    (so two batches never wait on each other in a cycle). Not yet checked."""
    q = _HELD_PG if s.get_bind().dialect.name == "postgresql" else _HELD
    return {
        row[0]: _Held(QCall(*row[:_NQ]), row[_NQ], list(row[_NQ + 1] or []))
        for row in s.execute(q, {"ids": sorted(set(call_ids))})
    }


def _check_held(
    s: Session, held: _Held | None, lease_id: str | None, now: datetime
) -> tuple[QCall, str, list[str]]:
    """The call, its live attempt's id and flags, if the lease (``lease_id``, or whichever
    when None) is held now; else NOT_FOUND or LEASE_NOT_HELD."""
    if held is None:
        raise NotFound("NOT_FOUND", "no such call")
    c = held.call
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
    if held.attempt_id != c.lease_id:
        # PostgreSQL: the lock waited for a concurrent lease of this call; the joined row is
        # from before it. Read the attempt now.
        flags = s.execute(
            select(_ATTEMPTS.c.flags).where(_ATTEMPTS.c.id == c.lease_id)
        ).scalar_one()
        held.attempt_id, held.flags = c.lease_id, list(flags or [])
    return c, c.lease_id, held.flags


def _held(s: Session, call_id: str, lease_id: str | None, now: datetime) -> QCall:
    return _check_held(s, _held_rows(s, [call_id]).get(call_id), lease_id, now)[0]


def dial_check(rt: Runtime, who: Identity, call_id: str, lease_id: str | None) -> None:
    """The moment before dialling: consent, do-not-call, purpose and window again, now.
    Raises Conflict with the blocking reason."""
    now = rt.clock.now()
    with rt.db.read() as s:
        rows = _qcalls(s, _QCALLS_BY_ID, {"ids": [call_id]})
        if not rows:
            raise NotFound("NOT_FOUND", "no such call")
        if rows[0].status == "withdrawn" and rows[0].last_reason:
            why = reason(Code(rows[0].last_reason))
            raise Conflict(why.code.value, why.message, {"rule": why.rule, "go": False})
        c = _held(s, call_id, lease_id, now)
        campaign = _campaigns(s, [c.campaign_id])[c.campaign_id]
        hist = facts_for(s, [c.phone])
        dnc = dnc_numbers(s, [c.phone])
        facts = _facts(rt, c, campaign, hist, dnc, {})
        from dialer.rules.dispatch import blocks_now, permanent_reasons

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
        c = _held(s, call_id, lease_id, now)
        attempt_id = c.lease_id
        w = _Writes()
        w.attempt(attempt_id or "", {"state": "released", "counted": False, "recorded_at": now})
        w.call(c, {"status": "queued", "lease_id": None, "lease_expires_at": None,
                   "next_eligible_at": now, "parked": False,
                   "attempts": max(0, c.attempts - 1), "updated_at": now})
        w.send(s)
        audit.record(
            s, at=now, actor=who.actor, kind="lease.released", subject=f"call:{c.id}",
            policy_version=rt.policy_version, payload={"lease": attempt_id},
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
    """One outcome (:func:`report_outcomes` with one item, raising its error). An
    identification problem is committed first (the flag and the audit entry stay; the lease
    stays held), then raised."""
    ((out, problem),) = _outcomes(rt, who, [(call_id, o)])
    if problem is not None:
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
    answers: list[dict[str, Any]] = []
    for (call_id, _), (out, problem) in zip(items, _outcomes(rt, who, items), strict=True):
        if problem is None:
            answers.append({"call_id": call_id, "ok": True, **out})
        else:
            answers.append({
                "call_id": call_id, "ok": False, "http_status": KIND_STATUS[problem.kind],
                "error": {"code": problem.code, "message": problem.message,
                          "details": problem.details},
            })
    return answers


def _outcomes(
    rt: Runtime, who: Identity, items: Sequence[tuple[str, Outcome]]
) -> list[tuple[dict[str, Any], DomainError | None]]:
    """The outcomes in one unit of work (maybe shared: dialer.groupcommit), in order: each
    item's answer or error."""
    job = _OutcomeJob(who, items)
    _run(rt, job)
    return job.results


def _outcomes_in(
    rt: Runtime, s: Session, items: Sequence[tuple[Identity, str, Outcome]], now: datetime
) -> list[tuple[dict[str, Any], DomainError | None]]:
    """The outcomes in order, in the open transaction: each item's answer or error. Errors
    other than identification problems are raised before anything changed for that item."""
    results: list[tuple[dict[str, Any], DomainError | None]] = []
    _lock_revoked_numbers(s, [call_id for _, call_id, o in items if o.result in REVOKING])
    rows = _held_rows(s, [call_id for _, call_id, _ in items])
    campaigns = _campaigns(s, (h.call.campaign_id for h in rows.values()))
    w = _Writes()
    for who, call_id, o in items:
        problem: DomainError | None
        try:
            out, problem = _one_outcome(rt, who, s, w, rows.get(call_id), campaigns, o, now)
            if o.result in REVOKING and problem is None:
                # The revocation changed other calls (maybe later items'): read the later
                # items' calls afresh, as the single endpoint would.
                rows = _held_rows(s, [i for _, i, _ in items])
        except DomainError as e:  # raised before anything was changed for this item
            out, problem = {}, e
        results.append((out, problem))
    w.send(s)
    return results


def _one_outcome(
    rt: Runtime, who: Identity, s: Session, w: _Writes, held: _Held | None,
    campaigns: dict[str, CampaignView], o: Outcome, now: datetime,
) -> tuple[dict[str, Any], Invalid | None]:
    """One outcome, its writes queued in ``w``. Identification problems are recorded (flag,
    audit entry) and returned, to be raised after the commit; other errors raise before any
    change."""
    if o.started_at and o.ended_at and o.ended_at < o.started_at:
        raise Invalid("VALIDATION_ERROR", "ended_at is before started_at",
                      [{"field": "body.ended_at", "message": "before started_at"}])
    c, attempt_id, flags = _check_held(s, held, o.lease_id, now)
    if o.result not in RESULTS:
        raise Invalid("VALIDATION_ERROR", "result is not a known outcome",
                      [{"field": "body.result", "message": "unknown"}])
    campaign = campaigns.get(c.campaign_id) or _campaigns(s, [c.campaign_id])[c.campaign_id]
    prerecorded = campaign.channel == "prerecorded_voice"
    missing = [
        f for f, v in (("agent_id", o.agent_id), ("agent_name", o.agent_name),
                       ("disclosed_callback_number", o.disclosed_callback_number))
        if v is None or not str(v).strip()
    ]
    if o.agent_id is not None and o.agent_id.strip().lower() == "ivr" and not prerecorded:
        missing.append("agent_id")
    flags = list(flags)
    problem: tuple[str, str, list[str]] | None = None
    if missing:
        problem = ("AGENT_ID_MISSING",
                   "agent identification is required: " + ", ".join(missing), missing)
    else:
        assert o.disclosed_callback_number is not None
        disclosed = _callback_e164(o.disclosed_callback_number, rt.policy.default_region,
                                   tuple(rt.policy.allowed_regions))
        if disclosed != campaign.callback_number:
            problem = ("CALLBACK_MISMATCH",
                       "disclosed_callback_number is not the campaign's callback number",
                       ["disclosed_callback_number"])
    if problem is not None:
        code, message, fields = problem
        if code not in flags:
            flags.append(code)
        w.attempt(attempt_id, {"flags": flags})
        assert held is not None
        held.flags = flags
        audit.record(
            s, at=now, actor=who.actor, kind="outcome.rejected", subject=f"call:{c.id}",
            policy_version=rt.policy_version,
            payload={"lease": attempt_id, "flag": code, "fields": fields},
        )
        return {}, Invalid(code, message, {"fields": fields, "lease_held": True})
    _apply_outcome(rt, who, s, w, c, attempt_id, campaign, o, flags, now)
    return {"call_id": c.id, "status": c.status, "attempts": c.attempts, "flags": flags}, None


def _apply_outcome(
    rt: Runtime, who: Identity, s: Session, w: _Writes, c: QCall, attempt_id: str,
    campaign: CampaignView, o: Outcome, flags: list[str], now: datetime,
) -> None:
    spec = rt.policy.purposes.get(campaign.purpose)
    if (
        campaign.channel == "prerecorded_voice" and spec is not None
        and o.started_at is not None and o.ended_at is not None
        and (o.ended_at - o.started_at).total_seconds() > spec.max_duration_seconds
    ):
        flags.append("OVER_DURATION")
    w.attempt(attempt_id, {
        "state": "reported", "agent_id": o.agent_id, "agent_name": o.agent_name,
        "disclosed_callback_number": campaign.callback_number, "started_at": o.started_at,
        "ended_at": o.ended_at, "result": o.result, "flags": flags, "recorded_at": now,
    })
    audit.record(
        s, at=now, actor=who.actor, kind="call.outcome", subject=f"call:{c.id}",
        policy_version=rt.policy_version,
        payload={"lease": attempt_id, "result": o.result, "agent_id": o.agent_id,
                 "flags": flags},
    )
    if o.result in COMPLETE:
        w.call(c, {"status": "completed", "lease_id": None, "lease_expires_at": None,
                   "next_eligible_at": None, "updated_at": now})
    else:
        _requeue(rt, s, w, c, campaign, now, who.actor)
    if o.result in REVOKING:
        from consent.service import revoke_in_session

        w.send(s)  # the revocation reads the calls and attempts
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

