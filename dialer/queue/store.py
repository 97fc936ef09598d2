"""Every statement of the queue, SQLite and PostgreSQL side by side, each with why it is
safe under concurrency.

The rules of the house (dialer/queue/service.py has the whole picture):

* SQLite: every unit of work of the queue runs in ``Database.write()``, i.e. ``BEGIN
  IMMEDIATE``: it holds the database's one write lock from its first statement, so nothing
  read here can change before the unit commits. Nothing here locks on SQLite.
* PostgreSQL: what a unit will change is locked as it is read: candidate calls ``FOR UPDATE
  SKIP LOCKED`` (two pollers never take the same call: the second skips it), held calls
  ``FOR UPDATE`` in id order (two batches never wait on each other in a cycle), and each
  number through its advisory lock (core.numbers.lock_numbers) *before* its attempts
  are counted.
* Both: the partial unique index ``uq_attempts_call_live`` allows one live attempt per call,
  whatever the code above does.

The hot paths read calls into plain :class:`QCall` rows and send new state in one
``executemany`` per table and set of columns (:class:`Writes`): measured in-process, the
ORM's loading, change tracking and flush were a third of a lease-and-outcome cycle.
Statements are built once, at import, per dialect where they differ: building one costs
more than running it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Select,
    String,
    Table,
    Text,
    any_,
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

from config.policy import Window
from core.bulk import (
    TextArray,
    insert_rows,
    one_of_param,
    one_of_value,
    read_conn,
    update_rows,
)
from core.db import UTCDateTime
from core.groupcommit import GroupCommit
from core.models import PARKED_SQL, QUEUE_ORDER_SQL, Attempt, Call, Campaign
from core.numbers import lock_numbers
from dialer.campaigns import campaign_window
from texts.store import any_reply_due

HISTORY = timedelta(days=8)  # enough attempts for rolling 7 x 24 h and calendar ISO weeks
SMALL_ELIGIBLE = 2000  # up to this many eligible calls, sort them (see the lease query)
UNPARK_LIMIT = 1000
MANY_FOR = 1.0
SWEEP_LIMIT = 500  # expired leases returned per poll or job pass

ATTEMPTS = cast(Table, Attempt.__table__)
CALLS = cast(Table, Call.__table__)


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
    sms_text: str | None  # an SMS call's rendered text (migration 0008)

    def apply(self, values: dict[str, Any]) -> None:
        """Mirror an update just queued for this call (later items of a batch see it)."""
        for k, v in values.items():
            if k != "b_id":
                setattr(self, k, v)


@dataclass(frozen=True, slots=True)
class CampaignView:
    """What the queue reads of a campaign. Campaigns never change once created (there is no
    update), so each process keeps the ones it has read (QueueState.campaigns)."""

    id: str
    purpose: str
    channel: str
    provider_name: str
    callback_number: str
    script_id: str | None
    max_attempts: int
    window: Window | None
    template_id: str | None = None


@dataclass
class QueueState:
    """The queue's per-process state for one runtime (``rt.state(QueueState)``)."""

    campaigns: dict[str, CampaignView] = field(default_factory=dict)
    # Whether ix_calls_queue_order exists (looked up once).
    queue_index: bool | None = None
    # SQLite: when the probe last found many eligible calls. For MANY_FOR seconds after,
    # polls take the queue-order walk without probing again: the probe reads up to
    # small_eligible index entries, and a queue that had that many a second ago has (give
    # or take a second's leases) as many now. Either plan returns the same calls; a wrong
    # guess costs time, never a different answer.
    many_since: float | None = None
    # Whether this process's last lease found work: then the next one goes straight to the
    # write transaction instead of probing first in a read transaction.
    last_found: bool = False
    small_eligible: int = SMALL_ELIGIBLE
    unpark_limit: int = UNPARK_LIMIT
    # SQLite: the lease and outcome requests waiting for the write lock together, served in
    # one transaction (core.groupcommit), made by dialer.queue.service on first use.
    group: GroupCommit[Any] | None = None
    # PostgreSQL: the share of the calls read and locked that a lease pass took (a moving
    # average; the rest were deferred, refused, or their numbers busy elsewhere), which
    # sizes the next read (dialer.queue.lease.read_size).
    go_share: float = 0.5


# candidate_zones as stored (text on SQLite; PostgreSQL's driver decodes it).
_QCALL_COLUMNS = tuple(
    type_coerce(CALLS.c[f], Text).label(f) if f == "candidate_zones" else CALLS.c[f]
    for f in QCall.__dataclass_fields__
)
_NQ = len(_QCALL_COLUMNS)
_NOW = bindparam("now", type_=UTCDateTime())
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
# PostgreSQL: the whole id list as one array parameter, ``id = ANY(:ids)``: one statement
# text whatever the list's length, so psycopg prepares it once (an expanding IN is a new
# statement for every length: parsed and planned each time), and SQLAlchemy renders and
# binds one parameter instead of one per id. An index scan on the primary key either way
# (these lists are a batch's calls: tens, never thousands; see core.bulk.one_of).
_IDS_PG: BindParameter[Any] = bindparam("ids", type_=TextArray())
_QUEUED = literal_column("'queued'", String())


def _pg(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _variants(q: Select[Any]) -> tuple[Select[Any], Select[Any]]:
    """A statement and its PostgreSQL variant locking what it reads FOR UPDATE SKIP LOCKED."""
    return q, q.with_for_update(skip_locked=True)


_QCALLS_BY_ID = (
    select(*_QCALL_COLUMNS).where(CALLS.c.id.in_(_IDS)),
    select(*_QCALL_COLUMNS).where(CALLS.c.id == any_(_IDS_PG)).with_for_update(skip_locked=True),
)
_QCALLS_EXPIRED = _variants(
    select(*_QCALL_COLUMNS).where(CALLS.c.lease_expires_at <= _NOW).limit(SWEEP_LIMIT)
)


def _qcalls(
    s: Session, q: tuple[Select[Any], Select[Any]], params: dict[str, Any], lock: bool
) -> list[QCall]:
    stmt = q[1] if lock and _pg(s) else q[0]
    return [QCall(*row) for row in read_conn(s).execute(stmt, params)]


def calls_by_id(s: Session, ids: Sequence[str], *, lock: bool = False) -> list[QCall]:
    """Calls by id; ``lock``: FOR UPDATE SKIP LOCKED on PostgreSQL (a call another
    transaction holds is left out: it is being decided there)."""
    return _qcalls(s, _QCALLS_BY_ID, {"ids": list(ids)}, lock)


def expired_leases(s: Session, now: datetime) -> list[QCall]:
    """Up to SWEEP_LIMIT leased calls whose lease has expired, locked (SKIP LOCKED).

    Only a leased call has a lease_expires_at (every way out of "leased" clears it), so the
    status is checked here rather than in SQL: given "status = 'leased'", SQLite's planner
    reads every live lease through ix_calls_status_next_eligible instead of the expired ones
    through ix_calls_lease_expires -- each poll then cost O(live leases)."""
    return [c for c in _qcalls(s, _QCALLS_EXPIRED, {"now": now}, True) if c.status == "leased"]


class Writes:
    """Updates queued during a unit of work, sent as one executemany per table and set of
    columns, in the order they were first queued (core.bulk.update_rows)."""

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
            update_rows(s, CALLS if table == "calls" else ATTEMPTS, rows)


def insert_attempts(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """New attempts in one executemany. Sent after the calls' new state (Writes.send): the
    live-lease index checks the attempts against it."""
    insert_rows(s, ATTEMPTS, rows)


_EXPIRE_ATTEMPTS = (
    update(Attempt).where(Attempt.id.in_(_IDS), Attempt.state == "live")
    .values(state="expired", recorded_at=_NOW)
)


def expire_attempts(s: Session, attempt_ids: Sequence[str], now: datetime) -> None:
    """The live attempts of expired leases end as ``expired`` (they still count: the dialer
    may have dialled). Safe: their calls are locked (expired_leases)."""
    if attempt_ids:
        s.execute(_EXPIRE_ATTEMPTS, {"ids": list(attempt_ids), "now": now})


_CAMPAIGNS = select(Campaign).where(Campaign.id.in_(_IDS))


def campaigns(s: Session, state: QueueState, ids: Iterable[str]) -> dict[str, CampaignView]:
    """The campaigns named, from this process's cache or read once (they never change)."""
    cache = state.campaigns
    out: dict[str, CampaignView] = {}
    missing: list[str] = []
    for i in set(ids):
        view = cache.get(i)
        if view is None:
            missing.append(i)
        else:
            out[i] = view
    if missing:
        if len(cache) > 10_000:
            cache.clear()
        for c in s.scalars(_CAMPAIGNS, {"ids": missing}):
            out[c.id] = cache[c.id] = CampaignView(
                c.id, c.purpose, c.channel, c.provider_name, c.callback_number, c.script_id,
                c.max_attempts, campaign_window(c), c.template_id,
            )
    return out


def campaign(s: Session, campaign_id: str) -> Campaign | None:
    return s.get(Campaign, campaign_id)


_ATTEMPT_TIMES: dict[str, Any] = {}


def attempt_times(
    s: Session, phone_list: Iterable[str], now: datetime
) -> dict[str, list[datetime]]:
    """Counted attempts of the last 8 days per number (set-based). Safe: on PostgreSQL the
    caller holds the numbers' locks, and every attempt of a number is inserted by a
    holder of its lock."""
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


def lock_numbers_of(s: Session, calls: Sequence[QCall]) -> set[str]:
    """PostgreSQL: the locks of these calls' numbers, those free now (a number
    being leased or revoked elsewhere is left for the next poll); SQLite: all of them."""
    return lock_numbers(s, [c.phone for c in calls], skip_locked=True)


_PHONES_OF = select(Call.phone).where(Call.id == any_(_IDS_PG))  # PostgreSQL only


def lock_numbers_of_calls(s: Session, call_ids: Sequence[str]) -> None:
    """PostgreSQL: an outcome that revokes its number takes the number's lock before
    it locks any call, as every revocation does (core.numbers), so that it and a concurrent
    revocation of the number never deadlock."""
    if not call_ids or not _pg(s):
        return
    phones = s.scalars(_PHONES_OF, {"ids": sorted(set(call_ids))})
    lock_numbers(s, sorted(set(phones)), skip_locked=False)


# --- the lease query ------------------------------------------------------------------------
#
# Queued calls eligible now, highest priority then oldest first. A deferred call is parked
# (calls.parked, migration 0003): out of ix_calls_queue_order until it is due, so that a
# walk of the queue order does not step over every deferred call ahead of the first
# eligible one. Each lease transaction first unparks the parked calls that are due, in the
# order they became due, up to QueueState.unpark_limit: beyond that (a calling window
# opening on a larger backlog) the rest join the queue order over the next polls; within
# one instant, higher priority first.
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
# SQLite: a probe counts the eligible calls up to QueueState.small_eligible in the range
# index without reading a row, and the statement names its index (INDEXED BY; SQLAlchemy
# cannot render it, hence text): without statistics SQLite's planner always takes the range
# scan. PostgreSQL: one statement; the planner chooses from its statistics.
# Neither locks here: PostgreSQL locks the chosen rows with SKIP LOCKED in lock_candidates;
# SQLite's write transaction already holds the database's lock.
# 'queued' is an SQL literal, not a bound parameter: only then may a planner use the partial
# index (SQLite always; PostgreSQL once it switches to a generic plan).

QUEUE_ORDER_INDEX = "ix_calls_queue_order"
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
# A lease for some channels only (API.md ``channels``): the same walks, keeping the calls of
# the campaigns on those channels (a row check per index entry; only such leases pay it).
_SQLITE_CHANNEL_QUERY = _SQLITE_LEASE_QUERY.replace(
    " ORDER BY", " AND campaign_id IN :campaigns ORDER BY")
_SQLITE_FEW_CH, _SQLITE_MANY_CH = (
    text(_SQLITE_CHANNEL_QUERY.format(index=index)).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("n", type_=Integer()),
        bindparam("campaigns", expanding=True),
    )
    for index in ("ix_calls_status_next_eligible", QUEUE_ORDER_INDEX)
)
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


def unpark_due(s: Session, state: QueueState, now: datetime) -> None:
    """Return the parked calls due by ``now`` to the queue order (up to unpark_limit; on
    PostgreSQL skipping those another transaction holds)."""
    s.execute(_PG_UNPARK if _pg(s) else _SQLITE_UNPARK, {"now": now, "n": state.unpark_limit})


def has_queue_order_index(s: Session, state: QueueState) -> bool:
    """Whether ``ix_calls_queue_order`` exists (looked up once per runtime)."""
    if state.queue_index is None:
        state.queue_index = any(
            ix["name"] == QUEUE_ORDER_INDEX for ix in inspect(s.connection()).get_indexes("calls")
        )
    return state.queue_index


# "Are there more than :small eligible calls?": the (small + 1)-th entry of the range.
_PROBE_MANY: Select[Any] = (
    select(literal_column("1")).select_from(Call)
    .where(Call.status == _QUEUED, Call.next_eligible_at <= _NOW)
    .offset(bindparam("small", type_=Integer())).limit(1)
)
_PG_LEASE_QUERY = (
    select(Call.id)
    .where(text(QUEUE_ORDER_SQL), Call.next_eligible_at <= _NOW)
    .order_by(Call.priority.desc(), Call.created_at, Call.id)
    .limit(bindparam("n", type_=Integer()))
)


_PG_CHANNEL_QUERY = _PG_LEASE_QUERY.where(
    Call.campaign_id.in_(bindparam("campaigns", expanding=True)))
_CAMPAIGNS_ON = select(Campaign.id).where(Campaign.channel.in_(
    bindparam("channels", expanding=True)))


def campaigns_on(s: Session, channels: Sequence[str]) -> list[str]:
    """The ids of the campaigns on ``channels`` (a lease for some channels only)."""
    return list(s.scalars(_CAMPAIGNS_ON, {"channels": sorted(set(channels))}))


def candidate_ids(s: Session, state: QueueState, now: datetime, n: int,
                  campaigns: Sequence[str] | None = None) -> list[str]:
    """Up to ``n`` ids of queued calls eligible now, in queue order (see above); only those
    of ``campaigns`` when given."""
    if campaigns is not None and not campaigns:
        return []
    if _pg(s):
        if campaigns is not None:
            return list(s.scalars(_PG_CHANNEL_QUERY,
                                  {"now": now, "n": n, "campaigns": list(campaigns)}))
        return list(s.scalars(_PG_LEASE_QUERY, {"now": now, "n": n}))
    query = _SQLITE_FEW
    if has_queue_order_index(s, state):
        clock = time.monotonic()
        if state.many_since is None or clock - state.many_since > MANY_FOR:
            many = s.execute(_PROBE_MANY, {"now": now, "small": state.small_eligible}).first()
            state.many_since = clock if many is not None else None
        if state.many_since is not None:
            query = _SQLITE_MANY
    if campaigns is not None:
        query = _SQLITE_MANY_CH if query is _SQLITE_MANY else _SQLITE_FEW_CH
        return list(s.scalars(query, {"now": now, "n": n, "campaigns": list(campaigns)}))
    return list(s.scalars(query, {"now": now, "n": n}))


_PG_NEXT_CALLS = (
    select(*_QCALL_COLUMNS)
    .where(text(QUEUE_ORDER_SQL), CALLS.c.next_eligible_at <= _NOW)
    .order_by(CALLS.c.priority.desc(), CALLS.c.created_at, CALLS.c.id)
    .limit(bindparam("n", type_=Integer()))
    .with_for_update(skip_locked=True)
)


def next_calls(s: Session, now: datetime, n: int) -> list[QCall]:
    """PostgreSQL: up to ``n`` queued calls eligible now, in queue order, read and locked in
    one statement (``FOR UPDATE SKIP LOCKED``: a call another poller holds is passed over,
    the next one in queue order taken instead). Was two: the ids, then the rows locked by id
    (candidate_ids + lock_candidates), a round trip more, and the second found most of the
    first's ids already taken by other pollers. The lock re-checks the WHERE clause on the
    latest committed version of each row; the status and time are checked here again all
    the same. A row this transaction already holds (an earlier round) is returned again:
    the caller leaves out those it has seen."""
    return [
        c for c in _qcalls(s, (_PG_NEXT_CALLS, _PG_NEXT_CALLS), {"now": now, "n": n}, True)
        if c.status == "queued" and c.next_eligible_at is not None and c.next_eligible_at <= now
    ]


def lock_candidates(s: Session, ids: Sequence[str], now: datetime) -> list[QCall]:
    """The candidates still queued and eligible, in the order given; locked SKIP LOCKED on
    PostgreSQL. By primary key only, re-checked here: given the status and time terms in
    SQL, SQLite's planner walks the whole eligible range of ix_calls_status_next_eligible
    instead. The re-check sees the row as locked (PostgreSQL returns the latest committed
    version)."""
    if not ids:
        return []
    by_id = {
        c.id: c for c in calls_by_id(s, ids, lock=True)
        if c.status == "queued" and c.next_eligible_at is not None and c.next_eligible_at <= now
    }
    return [by_id[i] for i in ids if i in by_id]


_ONE = literal_column("1", Integer())
# Only a leased call has a lease_expires_at (see expired_leases).
_LEASE_EXPIRED = select(_ONE).select_from(Call).where(Call.lease_expires_at <= _NOW).limit(1)
_ANY_ELIGIBLE = (
    select(_ONE).select_from(Call)
    .where(Call.status == _QUEUED, Call.next_eligible_at <= _NOW).limit(1)
)


def any_lease_expired(s: Session, now: datetime) -> bool:
    return s.execute(_LEASE_EXPIRED, {"now": now}).first() is not None


def nothing_to_do(s: Session, now: datetime) -> bool:
    """No lease has expired, no queued call is eligible and no reply to a text is due:
    index probes (a read transaction will do: a call that becomes eligible meanwhile goes
    to the next poll)."""
    return all(s.execute(q, {"now": now}).first() is None
               for q in (_LEASE_EXPIRED, _ANY_ELIGIBLE)) and not any_reply_due(s, now)


_PAST_DEADLINE = (
    select(Call.id).where(Call.status == _QUEUED, Call.next_eligible_at <= _NOW,
                          Call.not_after <= _NOW).limit(SWEEP_LIMIT)
)


def past_deadline(s: Session, now: datetime) -> list[str]:
    """Up to SWEEP_LIMIT queued calls past not_after, searched without a lock (a read
    transaction); whoever acts on them re-checks each under the lock (calls_by_id).

    Only the eligible range is searched: a queued call is never deferred to or past its
    not_after (the decision expires it instead), nor queued at intake with not_after before
    next_eligible_at, so not_after <= now implies next_eligible_at < now."""
    return list(s.scalars(_PAST_DEADLINE, {"now": now}))


# --- held leases ----------------------------------------------------------------------------


@dataclass(slots=True)
class Held:
    """A leased call with its live attempt's id and flags, as read (not yet checked)."""

    call: QCall
    attempt_id: str | None
    flags: list[str]


_HELD = select(*_QCALL_COLUMNS, ATTEMPTS.c.id, ATTEMPTS.c.flags).select_from(
    CALLS.outerjoin(ATTEMPTS, ATTEMPTS.c.id == CALLS.c.lease_id)
).where(CALLS.c.id.in_(_IDS)).order_by(CALLS.c.id)
_HELD_PG = select(*_QCALL_COLUMNS, ATTEMPTS.c.id, ATTEMPTS.c.flags).select_from(
    CALLS.outerjoin(ATTEMPTS, ATTEMPTS.c.id == CALLS.c.lease_id)
).where(CALLS.c.id == any_(_IDS_PG)).order_by(CALLS.c.id).with_for_update(of=CALLS)
_ATTEMPT_FLAGS = select(ATTEMPTS.c.flags).where(ATTEMPTS.c.id == bindparam("id"))
_LEASE_ATTEMPT = select(ATTEMPTS.c.state, ATTEMPTS.c.flags).where(
    ATTEMPTS.c.id == bindparam("id"), ATTEMPTS.c.call_id == bindparam("call_id"),
    ATTEMPTS.c.kind == "lease",
)


def held_rows(s: Session, call_ids: Iterable[str]) -> dict[str, Held]:
    """Calls with their live attempt, in one statement; locked in id order on PostgreSQL
    (so two batches never wait on each other in a cycle)."""
    q = _HELD_PG if _pg(s) else _HELD
    return {
        row[0]: Held(QCall(*row[:_NQ]), row[_NQ], list(row[_NQ + 1] or []))
        for row in s.execute(q, {"ids": sorted(set(call_ids))})
    }


def attempt_flags(s: Session, attempt_id: str) -> list[str]:
    """PostgreSQL: the lock of held_rows waited for a concurrent lease of the call, and the
    joined attempt is from before it: read the current one (the call is locked)."""
    return list(s.execute(_ATTEMPT_FLAGS, {"id": attempt_id}).scalar_one() or [])


_ATTEMPT_TERMS = select(ATTEMPTS.c.recording_allowed, ATTEMPTS.c.identity_required).where(
    ATTEMPTS.c.id == bindparam("id"))


def attempt_terms(s: Session, attempt_id: str) -> tuple[bool | None, int | None]:
    """What the task said on recording and identity (set at lease time; None for a lease of
    before migration 0004). Safe: the call is locked (held_rows)."""
    row = s.execute(_ATTEMPT_TERMS, {"id": attempt_id}).one()
    return row[0], row[1]


def lease_attempt(s: Session, lease_id: str, call_id: str) -> tuple[str, list[str]] | None:
    """The state and flags of the attempt a lease of the call made, if it did. Safe: the
    caller holds the call (held_rows), and every change of a lease's attempt is made by a
    holder of its call."""
    row = s.execute(_LEASE_ATTEMPT, {"id": lease_id, "call_id": call_id}).first()
    return None if row is None else (str(row[0]), list(row[1] or []))


def add_manual_attempt(s: Session, row: dict[str, Any]) -> None:
    """A preflight reservation: a counted attempt with no call. Safe: on PostgreSQL the
    caller holds the number's lock."""
    insert_rows(s, ATTEMPTS, [row])


# --- proofs for tests and benches ----------------------------------------------------------


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


# --- for the dialers' poll hint and the metrics ------------------------------------------------

# The earliest instant a queued call becomes eligible: the minimum of
# ix_calls_status_next_eligible's range for status 'queued' (one index read on both
# databases). For the Retry-After of an empty lease (API.md "Every response").
_NEXT_DUE = select(func.min(Call.next_eligible_at)).where(Call.status == _QUEUED)


def next_due_at(s: Session) -> datetime | None:
    return cast("datetime | None", read_conn(s).scalar(_NEXT_DUE))


# The queue's depth by state (GET /metrics): the queued calls due now, those waiting
# (a later not_before, a cap, a window), and the leased ones. A range of
# ix_calls_status_next_eligible: completed and refused calls, the bulk of the table, are not
# read.
_DEPTH = (
    select(Call.status, Call.next_eligible_at <= _NOW, func.count())
    .where(Call.status.in_(["queued", "leased"]))
    .group_by(Call.status, Call.next_eligible_at <= _NOW)
)


def depth_by_state(s: Session, now: datetime) -> dict[str, int]:
    out = {"queued_due": 0, "queued_waiting": 0, "leased": 0}
    for status, due, n in s.execute(_DEPTH, {"now": now}):
        if status == "leased":
            out["leased"] += int(n)
        else:
            out["queued_due" if due else "queued_waiting"] += int(n)
    return out
