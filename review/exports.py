"""CSV exports of the refusal log and the call log: generators reading one keyset page per
transaction, so an export of any size holds neither a long transaction nor the whole log in
memory. Cells that a spreadsheet would read as a formula (starting ``= + - @``, tab or CR)
get a leading ``'``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from core.keys import Identity
from core.runtime import Runtime
from review.logs import (
    CallLogFilter,
    Cursor,
    RefusalFilter,
    attempt_item,
    attempt_page,
    audit_unmask,
    check_range,
    refusal_item,
    refusal_page,
    unit,
)
from review.schemas import CallLogItem, RefusalItem

EXPORT_PAGE = 1000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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
    "recording",
    "identity_identifiers",
    "recorded",
    "phi_disclosed",
    "identity_verified_with",
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
        a.recording,
        a.identity_identifiers,
        a.recorded,
        a.phi_disclosed,
        ";".join(a.identity_verified_with),
    ]


def export_refusals_csv(
    rt: Runtime, who: Identity, f: RefusalFilter, *, unmask: bool = False,
    page_size: int | None = None,
) -> Iterator[str]:
    """The refusal log as CSV text chunks (header first), one keyset page per transaction.

    The filters are checked now, before the first chunk, so a bad request is an error
    response rather than a broken stream. With ``unmask`` each page's read is audited in
    its own transaction, naming exactly the rows that page exported."""
    check_range(f.since, f.until)
    size = page_size or EXPORT_PAGE

    def chunks() -> Iterator[str]:
        yield _csv_lines([REFUSAL_CSV_COLUMNS])
        after: Cursor | None = None
        while True:
            with unit(rt, who, unmask) as uow:
                s = uow.session
                rows = refusal_page(s, f, after, size)
                if unmask and (rows or after is None):
                    audit_unmask(uow, "refusals", [r.id for r in rows], "csv")
            if rows:
                yield _csv_lines([_refusal_csv_row(refusal_item(r, unmask)) for r in rows])
            if len(rows) < size:
                return
            after = Cursor(rows[-1].at, rows[-1].id)

    return chunks()


def export_call_log_csv(
    rt: Runtime, who: Identity, f: CallLogFilter, *, unmask: bool = False,
    page_size: int | None = None,
) -> Iterator[str]:
    """The call log as CSV text chunks; see :func:`export_refusals_csv`."""
    check_range(f.since, f.until)
    size = page_size or EXPORT_PAGE

    def chunks() -> Iterator[str]:
        yield _csv_lines([CALL_LOG_CSV_COLUMNS])
        after: Cursor | None = None
        while True:
            with unit(rt, who, unmask) as uow:
                s = uow.session
                rows = attempt_page(s, f, after, size)
                if unmask and (rows or after is None):
                    audit_unmask(uow, "attempts", [r.id for r in rows], "csv")
            if rows:
                yield _csv_lines([_call_log_csv_row(attempt_item(r, unmask)) for r in rows])
            if len(rows) < size:
                return
            after = Cursor(rows[-1].at, rows[-1].id)

    return chunks()
