"""CSV exports of the refusal log and the call log: generators reading one keyset page per
transaction, so an export of any size holds neither a long transaction nor the whole log in
memory. Cells that a spreadsheet would read as a formula (starting ``= + - @``, tab or CR)
get a leading ``'``.

Audited as the pages are (review.logs): a masked export is one ``patient_data.list`` entry
naming the filters and the rows sent, written when the export ends (or is cut off); an
unmasked one is a ``patient_data.unmask`` entry per page read, naming that page's rows and
numbers (by pseudonym), written before the page is sent."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from core.keys import Identity
from core.runtime import Runtime
from review.logs import (
    LIST_KIND,
    CallLogFilter,
    Cursor,
    RefusalFilter,
    attempt_item,
    attempt_page,
    audit_read,
    check_range,
    filter_payload,
    refusal_item,
    refusal_page,
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


def csv_chunks(columns: Sequence[str], rows: Iterable[Sequence[Any]], per: int = 500
               ) -> Iterator[str]:
    """CSV text chunks of ``rows`` (header first), ``per`` rows a chunk."""
    yield _csv_lines([columns])
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= per:
            yield _csv_lines(batch)
            batch = []
    if batch:
        yield _csv_lines(batch)


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


def _pages(
    rt: Runtime, who: Identity, subject: str, f: RefusalFilter | CallLogFilter,
    read: Any, unmask: bool, via: str, size: int,
) -> Iterator[list[Any]]:
    """The log's rows page by page (one read transaction each), every read audited: an
    unmasked page before it is yielded; a masked export once, when it ends however it
    ends (the client may stop reading)."""
    after: Cursor | None = None
    sent = 0
    try:
        while True:
            with rt.read(who) as uow:
                rows = read(uow.session, f, after, size)
            if unmask and (rows or after is None):
                audit_read(rt, who, subject, f, rows, True, via)
            if rows:
                yield rows
                sent += len(rows)
            if len(rows) < size:
                return
            after = Cursor(rows[-1].at, rows[-1].id)
    finally:
        if not unmask:
            with rt.write(who) as uow:
                uow.audit(LIST_KIND, subject, {"via": via, "filter": filter_payload(f),
                                               "rows": sent})


def export_refusals_csv(
    rt: Runtime, who: Identity, f: RefusalFilter, *, unmask: bool = False,
    page_size: int | None = None, via: str = "GET /v1/refusals.csv",
) -> Iterator[str]:
    """The refusal log as CSV text chunks (header first), one keyset page per transaction.

    The filters are checked now, before the first chunk, so a bad request is an error
    response rather than a broken stream."""
    check_range(f.since, f.until)
    size = page_size or EXPORT_PAGE

    def chunks() -> Iterator[str]:
        yield _csv_lines([REFUSAL_CSV_COLUMNS])
        for rows in _pages(rt, who, "refusals", f, refusal_page, unmask, via, size):
            yield _csv_lines([_refusal_csv_row(refusal_item(r, unmask)) for r in rows])

    return chunks()


def export_call_log_csv(
    rt: Runtime, who: Identity, f: CallLogFilter, *, unmask: bool = False,
    page_size: int | None = None, via: str = "GET /v1/call-log.csv",
) -> Iterator[str]:
    """The call log as CSV text chunks; see :func:`export_refusals_csv`."""
    check_range(f.since, f.until)
    size = page_size or EXPORT_PAGE

    def chunks() -> Iterator[str]:
        yield _csv_lines([CALL_LOG_CSV_COLUMNS])
        for rows in _pages(rt, who, "attempts", f, attempt_page, unmask, via, size):
            yield _csv_lines([_call_log_csv_row(attempt_item(r, unmask)) for r in rows])

    return chunks()
