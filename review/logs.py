"""Compliance review: the refusal log and the call log, read page by page.

Both logs are read newest first with keyset pagination on ``(at DESC, id DESC)``: a page
ends where the next one starts, whatever is inserted meanwhile (new rows are newer, or,
for the refusal log, have a higher id at an equal ``at``, so they sort before the cursor and
never shift a walk). The cursor is opaque to clients: URL-safe base64 of a small JSON
object naming the log and the last row's ``(at, id)``.

Phone numbers are masked (:func:`consent.phones.mask`) unless the reader asks for them;
an unmasked read is patient data and is audited (``patient_data.unmask``, naming the rows
shown, never the numbers) in the same transaction as the read.

The ``code`` filter matches a refusal when *any* of its reasons has that code, not only the
first (deciding) one: ``' ' || codes || ' ' LIKE '% CODE %'``. That predicate cannot use
``ix_refusals_code_at_id`` (which holds only the first code), so a filtered page walks
``ix_refusals_at_id`` (or ``ix_refusals_campaign_at_id`` with ``campaign_id``) in keyset
order, testing each row, and stops after ``limit + 1`` matches: cheap for common codes, a
longer scan for a rare code over a wide range (narrow it with ``since``/``until``).

CSV exports are generators reading one keyset page per transaction, so an export of any
size holds neither a long transaction nor the whole log in memory. Cells that a spreadsheet
would read as a formula (starting ``= + - @``, tab or CR) get a leading ``'``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, and_, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from config.errors import Invalid
from config.reasons import Code
from consent.phones import mask
from core import audit
from core.keys import Identity
from core.models import Attempt, Refusal
from core.runtime import Runtime
from dialer.schemas import ReasonOut

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_PAGE = 1000
UNMASK_KIND = "patient_data.unmask"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Stage = Literal["intake", "dispatch"]

# --- output models -----------------------------------------------------------------------


class RefusalItem(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 4182,
                    "at": "2026-11-24T17:00:00Z",
                    "call_id": "0c4b1a9e-5d0e-4a53-9f3e-2d1c7b8e6a10",
                    "external_id": "enc-778",
                    "campaign_id": "7d2f6c1b-8a4e-4f0d-b5c9-1e3a2d4c6b8f",
                    "phone": "+1314555****",
                    "stage": "intake",
                    "status": "refused",
                    "code": "NO_CONSENT",
                    "reasons": [
                        {
                            "code": "NO_CONSENT",
                            "message": "no written auto-dialer consent is on file for this "
                            "number",
                            "rule": "47 CFR 64.1200(a)(1)-(2); FCC 15-72 paras 141-147 "
                            "(prior express written consent)",
                        }
                    ],
                    "policy_version": "2026-11-01+3f9a1c2b4d5e",
                    "row": 12,
                }
            ]
        }
    )

    id: int
    at: datetime
    call_id: str | None
    external_id: str | None
    campaign_id: str | None
    phone: str | None = Field(description="Masked (+1314555****) unless unmask=true")
    stage: str = Field(description="intake | dispatch")
    status: str = Field(description="refused | invalid | expired | withdrawn")
    code: str = Field(description="The first (deciding) reason's code")
    reasons: list[ReasonOut]
    policy_version: str
    row: int | None = Field(description="1-based row of the submitted list (intake only)")


class RefusalPage(BaseModel):
    items: list[RefusalItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )


class CodeCount(BaseModel):
    code: str
    count: int


class CampaignCount(BaseModel):
    campaign_id: str | None
    count: int


class StageCount(BaseModel):
    stage: str
    count: int


class DayCount(BaseModel):
    day: str = Field(description="UTC date, YYYY-MM-DD")
    count: int


class RefusalSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "since": "2026-11-01T00:00:00Z",
                    "until": None,
                    "total": 3,
                    "by_code": [
                        {"code": "NO_CONSENT", "count": 2},
                        {"code": "DO_NOT_CALL", "count": 1},
                        {"code": "DEADLINE_PASSED", "count": 1},
                    ],
                    "by_campaign": [
                        {"campaign_id": "7d2f6c1b-8a4e-4f0d-b5c9-1e3a2d4c6b8f", "count": 3}
                    ],
                    "by_stage": [{"stage": "intake", "count": 3}],
                    "by_day": [{"day": "2026-11-24", "count": 3}],
                }
            ]
        }
    )

    since: datetime | None
    until: datetime | None
    total: int = Field(description="Refusal log rows in the range")
    by_code: list[CodeCount] = Field(
        description="Every reason counted: a row with two reasons counts toward both codes"
    )
    by_campaign: list[CampaignCount]
    by_stage: list[StageCount]
    by_day: list[DayCount]


class CallLogItem(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "b1e0d7c4-3f2a-4c6e-9a8b-7d5e4f3a2b1c",
                    "call_id": "0c4b1a9e-5d0e-4a53-9f3e-2d1c7b8e6a10",
                    "campaign_id": "7d2f6c1b-8a4e-4f0d-b5c9-1e3a2d4c6b8f",
                    "phone": "+1314555****",
                    "kind": "lease",
                    "state": "reported",
                    "counted": True,
                    "dialer_id": "acme-1",
                    "agent_id": "A-17",
                    "agent_name": "Dana",
                    "disclosed_callback_number": "+13145550199",
                    "started_at": "2026-11-24T17:01:00Z",
                    "ended_at": "2026-11-24T17:03:10Z",
                    "result": "connected",
                    "flags": [],
                    "at": "2026-11-24T17:00:30Z",
                    "recorded_at": "2026-11-24T17:03:12Z",
                }
            ]
        }
    )

    id: str
    call_id: str | None
    campaign_id: str | None
    phone: str = Field(description="Masked (+1314555****) unless unmask=true")
    kind: str = Field(description="lease | manual")
    state: str = Field(description="live | reported | released | expired | withdrawn | manual")
    counted: bool
    dialer_id: str | None
    agent_id: str | None
    agent_name: str | None
    disclosed_callback_number: str | None
    started_at: datetime | None
    ended_at: datetime | None
    result: str | None
    flags: list[str] = Field(description="e.g. AGENT_ID_MISSING, CALLBACK_MISMATCH")
    at: datetime = Field(description="When the attempt was leased or reserved")
    recorded_at: datetime | None = Field(description="When its outcome was reported")


class CallLogPage(BaseModel):
    items: list[CallLogItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )


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
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        raise bad from None
    if at.tzinfo is None:
        raise bad
    assert isinstance(id_, (int, str))
    return Cursor(at.astimezone(UTC), id_)


def _check_range(since: datetime | None, until: datetime | None) -> None:
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


def _refusal_page(
    s: Session, f: RefusalFilter, after: Cursor | None, limit: int
) -> list[Any]:
    q = select(*_REFUSAL_COLUMNS).where(*_refusal_where(f))
    if after is not None:
        q = q.where(_older_than(Refusal.at, Refusal.id, after))
    q = q.order_by(Refusal.at.desc(), Refusal.id.desc()).limit(limit)
    return list(s.execute(q))


def _refusal_item(r: Any, unmask: bool) -> RefusalItem:
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


def _audit_unmask(
    rt: Runtime, who: Identity, s: Session, subject: str, ids: Sequence[int | str], view: str
) -> None:
    audit.record(
        s,
        at=rt.clock.now(),
        actor=who.actor,
        kind=UNMASK_KIND,
        subject=subject,
        policy_version=rt.policy_version,
        payload={subject: list(ids), "view": view},
    )


def list_refusals(
    rt: Runtime,
    who: Identity,
    f: RefusalFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    unmask: bool = False,
) -> RefusalPage:
    """One page of the refusal log, newest first."""
    _check_range(f.since, f.until)
    _check_limit(limit)
    after = decode_cursor("refusals", cursor, int) if cursor else None
    unit = rt.db.write() if unmask else rt.db.read()
    with unit as s:
        rows = _refusal_page(s, f, after, limit + 1)
        shown = rows[:limit]
        if unmask:
            _audit_unmask(rt, who, s, "refusals", [r.id for r in shown], "list")
    items = [_refusal_item(r, unmask) for r in shown]
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
    _check_range(since, until)
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
)


def _attempt_page(
    s: Session, f: CallLogFilter, after: Cursor | None, limit: int
) -> list[Any]:
    q = select(*_ATTEMPT_COLUMNS).where(*_call_log_where(f))
    if after is not None:
        q = q.where(_older_than(Attempt.at, Attempt.id, after))
    q = q.order_by(Attempt.at.desc(), Attempt.id.desc()).limit(limit)
    return list(s.execute(q))


def _attempt_item(r: Any, unmask: bool) -> CallLogItem:
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
    )


def list_call_log(
    rt: Runtime,
    who: Identity,
    f: CallLogFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    unmask: bool = False,
) -> CallLogPage:
    """One page of the call log (every attempt, leased or manual), newest first."""
    _check_range(f.since, f.until)
    _check_limit(limit)
    after = decode_cursor("call_log", cursor, str) if cursor else None
    unit = rt.db.write() if unmask else rt.db.read()
    with unit as s:
        rows = _attempt_page(s, f, after, limit + 1)
        shown = rows[:limit]
        if unmask:
            _audit_unmask(rt, who, s, "attempts", [r.id for r in shown], "list")
    items = [_attempt_item(r, unmask) for r in shown]
    more = len(rows) > limit
    nxt = encode_cursor("call_log", shown[-1].at, shown[-1].id) if more and shown else None
    return CallLogPage(items=items, next_cursor=nxt)


# --- CSV exports -------------------------------------------------------------------------

REFUSAL_CSV_COLUMNS = (
    "id",
    "at",
    "call_id",
    "external_id",
    "campaign_id",
    "phone",
    "stage",
    "status",
    "codes",
    "message",
    "rule",
    "policy_version",
    "row",
)
CALL_LOG_CSV_COLUMNS = (
    "id",
    "at",
    "call_id",
    "campaign_id",
    "phone",
    "kind",
    "state",
    "counted",
    "dialer_id",
    "agent_id",
    "agent_name",
    "disclosed_callback_number",
    "started_at",
    "ended_at",
    "result",
    "flags",
    "recorded_at",
)


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: formula-like starts get a leading quote (OWASP
    "CSV injection"). Masked phones start with '+', so they are quoted too, and stay legible."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat()
    else:
        text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def _csv_lines(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def _refusal_csv_row(r: RefusalItem) -> list[Any]:
    first = r.reasons[0] if r.reasons else None
    return [
        r.id,
        r.at,
        r.call_id,
        r.external_id,
        r.campaign_id,
        r.phone,
        r.stage,
        r.status,
        ";".join(x.code for x in r.reasons),
        first.message if first else None,
        first.rule if first else None,
        r.policy_version,
        r.row,
    ]


def _call_log_csv_row(a: CallLogItem) -> list[Any]:
    return [
        a.id,
        a.at,
        a.call_id,
        a.campaign_id,
        a.phone,
        a.kind,
        a.state,
        a.counted,
        a.dialer_id,
        a.agent_id,
        a.agent_name,
        a.disclosed_callback_number,
        a.started_at,
        a.ended_at,
        a.result,
        ";".join(a.flags),
        a.recorded_at,
    ]


def export_refusals_csv(
    rt: Runtime, who: Identity, f: RefusalFilter, *, unmask: bool = False,
    page_size: int | None = None,
) -> Iterator[str]:
    """The refusal log as CSV text chunks (header first), one keyset page per transaction.

    The filters are checked now, before the first chunk, so a bad request is an error
    response rather than a broken stream. With ``unmask`` each page's read is audited in
    its own transaction, naming exactly the rows that page exported."""
    _check_range(f.since, f.until)
    size = page_size or EXPORT_PAGE

    def chunks() -> Iterator[str]:
        yield _csv_lines([REFUSAL_CSV_COLUMNS])
        after: Cursor | None = None
        while True:
            unit = rt.db.write() if unmask else rt.db.read()
            with unit as s:
                rows = _refusal_page(s, f, after, size)
                if unmask and (rows or after is None):
                    _audit_unmask(rt, who, s, "refusals", [r.id for r in rows], "csv")
            if rows:
                yield _csv_lines([_refusal_csv_row(_refusal_item(r, unmask)) for r in rows])
            if len(rows) < size:
                return
            after = Cursor(rows[-1].at, rows[-1].id)

    return chunks()


def export_call_log_csv(
    rt: Runtime, who: Identity, f: CallLogFilter, *, unmask: bool = False,
    page_size: int | None = None,
) -> Iterator[str]:
    """The call log as CSV text chunks; see :func:`export_refusals_csv`."""
    _check_range(f.since, f.until)
    size = page_size or EXPORT_PAGE

    def chunks() -> Iterator[str]:
        yield _csv_lines([CALL_LOG_CSV_COLUMNS])
        after: Cursor | None = None
        while True:
            unit = rt.db.write() if unmask else rt.db.read()
            with unit as s:
                rows = _attempt_page(s, f, after, size)
                if unmask and (rows or after is None):
                    _audit_unmask(rt, who, s, "attempts", [r.id for r in rows], "csv")
            if rows:
                yield _csv_lines([_call_log_csv_row(_attempt_item(r, unmask)) for r in rows])
            if len(rows) < size:
                return
            after = Cursor(rows[-1].at, rows[-1].id)

    return chunks()
