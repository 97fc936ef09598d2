"""Compliance review: the refusal log and the call log, read page by page.

Both logs are read newest first with keyset pagination on ``(at DESC, id DESC)``: a page
ends where the next one starts, whatever is inserted meanwhile (new rows are newer, or,
for the refusal log, have a higher id at an equal ``at``, so they sort before the cursor and
never shift a walk). The cursor is opaque to clients: URL-safe base64 of a small JSON
object naming the log and the last row's ``(at, id)``.

Phone numbers are masked (:func:`consent.phones.mask`) unless the reader asks for them.
Every read is audited, once per request, before its answer leaves: a masked one as
``patient_data.list`` naming the filters and the row count; an unmasked one as
``patient_data.unmask`` naming the rows shown and every number it revealed, by pseudonym
(never in clear), so that the access report finds it.

The ``code`` filter matches a refusal when *any* of its reasons has that code, not only the
first (deciding) one: ``' ' || codes || ' ' LIKE '% CODE %'``. That predicate cannot use
``ix_refusals_code_at_id`` (which holds only the first code), so a filtered page walks
``ix_refusals_at_id`` (or ``ix_refusals_campaign_at_id`` with ``campaign_id``) in keyset
order, testing each row, and stops after ``limit + 1`` matches: cheap for common codes, a
longer scan for a rare code over a wide range (narrow it with ``since``/``until``).

The answers' models are in review.schemas, the CSV exports in review.exports.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from config.errors import Invalid
from config.reasons import Code
from consent.phones import mask
from core.keys import Identity
from core.models import Attempt, Refusal
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.schemas import ReasonOut
from review.schemas import (
    CallLogItem,
    CallLogPage,
    CampaignCount,
    CodeCount,
    DayCount,
    RefusalItem,
    RefusalPage,
    RefusalSummary,
    Stage,
    StageCount,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
UNMASK_KIND = "patient_data.unmask"
LIST_KIND = "patient_data.list"

# --- filters and cursors -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefusalFilter:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    campaign_id: str | None = None
    code: Code | None = None
    stage: Stage | None = None


@dataclass(frozen=True, slots=True)
class CallLogFilter:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    campaign_id: str | None = None
    agent_id: str | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    at: datetime
    id: int | str


def _query_error(field: str, message: str) -> Invalid:
    return Invalid(
        "VALIDATION_ERROR", f"{field}: {message}", [{"field": f"query.{field}", "message": message}]
    )


def encode_cursor(log: str, at: datetime, id_: int | str) -> str:
    raw = json.dumps(
        {"log": log, "at": at.astimezone(UTC).isoformat(timespec="microseconds"), "id": id_},
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(log: str, token: str, id_type: type[int] | type[str]) -> Cursor:
    """The position a cursor names; a cursor of another log or a damaged one is a 422."""
    bad = _query_error("cursor", "is not a cursor returned by this endpoint")
    if len(token) > 512:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(data, dict) or data.get("log") != log:
        raise bad
    at_text, id_ = data.get("at"), data.get("id")
    # bool is an int subclass: refuse it explicitly.
    if not isinstance(at_text, str) or type(id_) is not id_type:
        raise bad
    # Ids within the columns' range (a 64-bit integer; a 36-character text): an id of 10**30
    # overflowed the driver (a 500, issue 16).
    if isinstance(id_, int) and not 0 <= id_ < 2**63:
        raise bad
    if isinstance(id_, str) and len(id_) > 36:
        raise bad
    try:
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise bad
        # Year 9999 at a negative offset has no UTC date.
        return Cursor(at.astimezone(UTC), id_)
    except (ValueError, OverflowError):
        raise bad from None


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise _query_error("until", "must be later than since")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise _query_error("limit", f"must be from 1 to {MAX_LIMIT}")


def _older_than(
    at_col: InstrumentedAttribute[datetime], id_col: InstrumentedAttribute[Any], c: Cursor
) -> ColumnElement[bool]:
    # ``at <= :at`` is the index range; the OR only sorts out ties at the boundary. (A bare
    # ``at < :at OR (at = :at AND id < :id)`` is not a range, and PostgreSQL would walk the
    # index from the newest row to reach the cursor.)
    return and_(at_col <= c.at, or_(at_col < c.at, id_col < c.id))


def _has_code(code: Code) -> ColumnElement[bool]:
    # Codes are upper-case letters and underscores; "_" is a LIKE wildcard, so escape it.
    pattern = "% " + code.value.replace("_", "\\_") + " %"
    return (literal(" ") + Refusal.codes + literal(" ")).like(pattern, escape="\\")


def _refusal_where(f: RefusalFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if f.since is not None:
        where.append(Refusal.at >= f.since)
    if f.until is not None:
        where.append(Refusal.at < f.until)
    if f.campaign_id is not None:
        where.append(Refusal.campaign_id == f.campaign_id)
    if f.stage is not None:
        where.append(Refusal.stage == f.stage)
    if f.code is not None:
        where.append(_has_code(f.code))
    return where


def _call_log_where(f: CallLogFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if f.since is not None:
        where.append(Attempt.at >= f.since)
    if f.until is not None:
        where.append(Attempt.at < f.until)
    if f.campaign_id is not None:
        where.append(Attempt.campaign_id == f.campaign_id)
    if f.agent_id is not None:
        where.append(Attempt.agent_id == f.agent_id)
    if f.result is not None:
        where.append(Attempt.result == f.result)
    return where


# --- the refusal log ---------------------------------------------------------------------

_REFUSAL_COLUMNS = (
    Refusal.id,
    Refusal.at,
    Refusal.call_id,
    Refusal.external_id,
    Refusal.campaign_id,
    Refusal.phone,
    Refusal.stage,
    Refusal.status,
    Refusal.code,
    Refusal.reasons,
    Refusal.policy_version,
    Refusal.row,
)


def refusal_page(
    s: Session, f: RefusalFilter, after: Cursor | None, limit: int
) -> list[Any]:
    q = select(*_REFUSAL_COLUMNS).where(*_refusal_where(f))
    if after is not None:
        q = q.where(_older_than(Refusal.at, Refusal.id, after))
    q = q.order_by(Refusal.at.desc(), Refusal.id.desc()).limit(limit)
    return list(s.execute(q))


def refusal_item(r: Any, unmask: bool) -> RefusalItem:
    phone = r.phone if unmask or r.phone is None else mask(r.phone)
    return RefusalItem(
        id=r.id,
        at=r.at,
        call_id=r.call_id,
        external_id=r.external_id,
        campaign_id=r.campaign_id,
        phone=phone,
        stage=r.stage,
        status=r.status,
        code=r.code,
        reasons=[ReasonOut.model_validate(x) for x in r.reasons or []],
        policy_version=r.policy_version,
        row=r.row,
    )


def filter_payload(f: RefusalFilter | CallLogFilter) -> dict[str, Any]:
    """A filter for an audit payload: ids, codes and times only."""
    out: dict[str, Any] = {}
    for name in f.__slots__:
        value = getattr(f, name)
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


def audit_read(
    rt: Runtime, who: Identity, subject: str, f: RefusalFilter | CallLogFilter,
    rows: Sequence[Any], unmask: bool, via: str,
) -> None:
    """One audit entry for one read of a log (a page, or a page of an export): masked, the
    filters and the row count; unmasked, also the rows' ids and, by pseudonym, every number
    shown."""
    with rt.write(who) as uow:
        audit_rows(uow, subject, f, rows, unmask, via)


def audit_rows(
    uow: UnitOfWork, subject: str, f: RefusalFilter | CallLogFilter, rows: Sequence[Any],
    unmask: bool, via: str,
) -> None:
    payload: dict[str, Any] = {"via": via, "filter": filter_payload(f), "rows": len(rows)}
    if not unmask:
        uow.audit(LIST_KIND, subject, payload)
        return
    payload[subject] = [r.id for r in rows]
    uow.audit(UNMASK_KIND, subject, payload, phones=sorted({r.phone for r in rows if r.phone}))


def list_refusals(
    rt: Runtime,
    who: Identity,
    f: RefusalFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    unmask: bool = False,
    via: str = "GET /v1/refusals",
) -> RefusalPage:
    """One page of the refusal log, newest first (the read audited)."""
    check_range(f.since, f.until)
    _check_limit(limit)
    after = decode_cursor("refusals", cursor, int) if cursor else None
    with rt.read(who) as uow:
        rows = refusal_page(uow.session, f, after, limit + 1)
    shown = rows[:limit]
    audit_read(rt, who, "refusals", f, shown, unmask, via)
    items = [refusal_item(r, unmask) for r in shown]
    more = len(rows) > limit
    nxt = encode_cursor("refusals", shown[-1].at, shown[-1].id) if more and shown else None
    return RefusalPage(items=items, next_cursor=nxt)


def _utc_day(dialect: str) -> ColumnElement[str]:
    if dialect == "sqlite":
        # Stored as naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff".
        return func.substr(Refusal.at, 1, 10)
    return func.to_char(func.timezone("UTC", Refusal.at), "YYYY-MM-DD")


def refusal_summary(
    rt: Runtime, since: datetime | None = None, until: datetime | None = None
) -> RefusalSummary:
    """Counts by code (every reason), campaign, stage and UTC day; grouped in SQL."""
    check_range(since, until)
    where = _refusal_where(RefusalFilter(since=since, until=until))
    day = _utc_day(rt.db.dialect).label("day")
    with rt.db.read() as s:
        by_codes = list(
            s.execute(select(Refusal.codes, func.count()).where(*where).group_by(Refusal.codes))
        )
        by_campaign = list(
            s.execute(
                select(Refusal.campaign_id, func.count())
                .where(*where)
                .group_by(Refusal.campaign_id)
            )
        )
        by_stage = list(
            s.execute(select(Refusal.stage, func.count()).where(*where).group_by(Refusal.stage))
        )
        by_day = list(s.execute(select(day, func.count()).where(*where).group_by(day)))
    codes: Counter[str] = Counter()
    total = 0
    for combo, n in by_codes:
        total += n
        for c in str(combo).split():
            codes[c] += n

    def ranked(pairs: Sequence[Any]) -> list[tuple[Any, int]]:
        return sorted(((k, int(n)) for k, n in pairs), key=lambda kv: (-kv[1], kv[0] or ""))

    return RefusalSummary(
        since=since,
        until=until,
        total=total,
        by_code=[CodeCount(code=k, count=n) for k, n in ranked(list(codes.items()))],
        by_campaign=[CampaignCount(campaign_id=k, count=n) for k, n in ranked(by_campaign)],
        by_stage=[StageCount(stage=k, count=n) for k, n in ranked(by_stage)],
        by_day=sorted(
            (DayCount(day=str(k), count=int(n)) for k, n in by_day), key=lambda d: d.day
        ),
    )


# --- the call log ------------------------------------------------------------------------

_ATTEMPT_COLUMNS = (
    Attempt.id,
    Attempt.call_id,
    Attempt.campaign_id,
    Attempt.phone,
    Attempt.kind,
    Attempt.state,
    Attempt.counted,
    Attempt.dialer_id,
    Attempt.agent_id,
    Attempt.agent_name,
    Attempt.disclosed_callback_number,
    Attempt.started_at,
    Attempt.ended_at,
    Attempt.result,
    Attempt.flags,
    Attempt.at,
    Attempt.recorded_at,
    Attempt.recording_allowed,
    Attempt.identity_required,
    Attempt.recorded,
    Attempt.phi_disclosed,
    Attempt.identity_verified_with,
)


def attempt_page(
    s: Session, f: CallLogFilter, after: Cursor | None, limit: int
) -> list[Any]:
    q = select(*_ATTEMPT_COLUMNS).where(*_call_log_where(f))
    if after is not None:
        q = q.where(_older_than(Attempt.at, Attempt.id, after))
    q = q.order_by(Attempt.at.desc(), Attempt.id.desc()).limit(limit)
    return list(s.execute(q))


def attempt_item(r: Any, unmask: bool) -> CallLogItem:
    return CallLogItem(
        id=r.id,
        call_id=r.call_id,
        campaign_id=r.campaign_id,
        phone=r.phone if unmask else mask(r.phone),
        kind=r.kind,
        state=r.state,
        counted=bool(r.counted),
        dialer_id=r.dialer_id,
        agent_id=r.agent_id,
        agent_name=r.agent_name,
        disclosed_callback_number=r.disclosed_callback_number,
        started_at=r.started_at,
        ended_at=r.ended_at,
        result=r.result,
        flags=list(r.flags or []),
        at=r.at,
        recorded_at=r.recorded_at,
        recording=None if r.recording_allowed is None
        else "allowed" if r.recording_allowed else "forbidden",
        identity_identifiers=r.identity_required,
        recorded=r.recorded,
        phi_disclosed=r.phi_disclosed,
        identity_verified_with=list(r.identity_verified_with or []),
    )


def list_call_log(
    rt: Runtime,
    who: Identity,
    f: CallLogFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    unmask: bool = False,
    via: str = "GET /v1/call-log",
) -> CallLogPage:
    """One page of the call log (every attempt, leased or manual), newest first (the read
    audited)."""
    check_range(f.since, f.until)
    _check_limit(limit)
    after = decode_cursor("call_log", cursor, str) if cursor else None
    with rt.read(who) as uow:
        rows = attempt_page(uow.session, f, after, limit + 1)
    shown = rows[:limit]
    audit_read(rt, who, "attempts", f, shown, unmask, via)
    items = [attempt_item(r, unmask) for r in shown]
    more = len(rows) > limit
    nxt = encode_cursor("call_log", shown[-1].at, shown[-1].id) if more and shown else None
    return CallLogPage(items=items, next_cursor=nxt)
