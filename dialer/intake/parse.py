"""Call-list parsing: pure, per row, no database. Runs in this process or in the intake
helper process (dialer.intake.pool), which gets the same answers.

A row's problems go to ``Row.invalid``, field by field (never a phone number or patient
reference in a message: the field is named, not its value). A valid row leaves with its
number in E.164, its candidate zones and the id its call will have if it is stored.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from config.errors import Invalid
from config.ids import new_id
from config.policy import Policy
from config.reasons import Code, Reason, reason
from consent import phones
from dialer.rules.zones import STATE_ZONES, CandidateZone, candidate_zone_tuple

COLUMNS = (
    "external_id",
    "patient_ref",
    "phone",
    "not_before",
    "not_after",
    "postal_code",
    "state",
    "priority",
)
REQUIRED = ("external_id", "phone")
CHUNK_ROWS = 5000
MAX_FIELD = 256


@dataclass(slots=True)
class Row:
    row: int
    external_id: str | None = None
    patient_ref: str | None = None
    phone: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    postal_code: str | None = None
    state: str | None = None
    priority: int = 5
    invalid: list[Reason] = field(default_factory=list)
    # The callee's candidate zones, worked out at parse time for a valid row.
    zones: tuple[CandidateZone, ...] = ()
    # The id the row's call gets if it is stored, made at parse time for a valid row (in the
    # helper process: a tenth of the deciding process's work per row, measured).
    call_id: str | None = None




def _bad(field_: str, what: str) -> Reason:
    return reason(Code.INVALID_FIELD, f"{field_}: {what}", details={"field": field_})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    s = str(value).strip()
    return s or None


def _when(row: Row, field_: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        row.invalid.append(_bad(field_, "is not an ISO-8601 date-time"))
        return None
    if dt.tzinfo is None:
        row.invalid.append(_bad(field_, "needs a UTC offset (e.g. 2026-11-26T00:00:00Z)"))
        return None
    try:
        # Stored in UTC: an instant that has no UTC date (year 1 at +01:00, year 9999 at
        # -01:00) would otherwise fail the whole submission at insert.
        return dt.astimezone(UTC)
    except OverflowError:
        row.invalid.append(_bad(field_, "is out of range"))
        return None



def parse_row(n: int, data: dict[str, Any], policy: Policy) -> Row:
    """One record to a Row; what is wrong with it goes to ``row.invalid``, field by field."""
    return _parse(n, data, policy.default_region, tuple(policy.allowed_regions))


def parse_chunk(
    first: int, records: list[Any] | CsvSlice, default_region: str, regions: tuple[str, ...],
    columns: Sequence[str] | None = None,
) -> list[Row]:
    """Rows ``first, first + 1, ...`` parsed, each valid one with its candidate zones: all the
    per-row work that needs no database (run here, or in the helper process of
    ``dialer.intake.pool``). ``records`` are dicts, value lists named by ``columns``, or a
    :class:`CsvSlice` of whole lines, read here."""
    if isinstance(records, CsvSlice):
        records = slice_records(records.text)
    out: list[Row] = []
    for i, rec in enumerate(records):
        if columns is not None and isinstance(rec, list):  # a CSV record's values
            rec = dict(zip(columns, rec, strict=False))
        if rec.get("__malformed__"):
            out.append(Row(first + i, invalid=[_bad("row", str(rec["__malformed__"]))]))
            continue
        row = _parse(first + i, rec, default_region, regions)
        if not row.invalid and row.phone is not None:
            row.zones = candidate_zone_tuple(row.phone, row.state, row.postal_code, default_region)
            row.call_id = new_id()
        out.append(row)
    return out


# What the helper process sends back per chunk: plain tuples, which pickle in a fraction of the
# time the dataclass rows do (measured per row: dump 7.4 → 0.7 µs, load 8.6 → 4.0 µs with
# the unpacking), dates as ISO text, and each distinct zone list once per chunk.
Packed = tuple[list[tuple[Any, ...]], list[tuple[CandidateZone, ...]]]


def parse_chunk_packed(
    first: int, records: list[Any] | CsvSlice, default_region: str, regions: tuple[str, ...],
    columns: Sequence[str] | None = None,
) -> Packed:
    """:func:`parse_chunk`, packed for the trip back from the helper process."""
    zones: list[tuple[CandidateZone, ...]] = []
    index: dict[tuple[CandidateZone, ...], int] = {}
    rows: list[tuple[Any, ...]] = []
    for r in parse_chunk(first, records, default_region, regions, columns):
        z = index.get(r.zones)
        if z is None:
            z = index[r.zones] = len(zones)
            zones.append(r.zones)
        rows.append((
            r.row, r.external_id, r.patient_ref, r.phone, r.state, r.postal_code, r.priority,
            None if r.not_before is None else r.not_before.isoformat(),
            None if r.not_after is None else r.not_after.isoformat(),
            r.invalid or None, z, r.call_id,
        ))
    return rows, zones


def unpack(packed: Packed, offset: int = 0) -> list[Row]:
    """The rows of :func:`parse_chunk_packed`, their numbers moved on by ``offset``."""
    rows, zones = packed
    fromiso = datetime.fromisoformat
    return [
        Row(row=n + offset, external_id=ext, patient_ref=ref, phone=phone, state=state,
            postal_code=postal, priority=prio,
            not_before=None if nb is None else fromiso(nb),
            not_after=None if na is None else fromiso(na),
            invalid=invalid or [], zones=zones[z], call_id=call_id)
        for n, ext, ref, phone, state, postal, prio, nb, na, invalid, z, call_id in rows
    ]


def _parse(n: int, data: dict[str, Any], default_region: str, regions: tuple[str, ...]) -> Row:
    row = Row(n)
    for name in REQUIRED:
        if _text(data.get(name)) is None:
            row.invalid.append(_bad(name, "is required"))
    for name in COLUMNS:
        v = data.get(name)
        if isinstance(v, str) and (len(v) > MAX_FIELD or "\x00" in v):
            row.invalid.append(_bad(name, "is too long or contains NUL"))
            data[name] = None
        elif isinstance(v, (dict, list)):
            row.invalid.append(_bad(name, "must be a scalar value"))
            data[name] = None
    row.external_id = _text(data.get("external_id"))
    if row.external_id is not None and len(row.external_id) > 128:
        row.invalid.append(_bad("external_id", "is longer than 128 characters"))
        row.external_id = row.external_id[:128]
    row.patient_ref = _text(data.get("patient_ref"))
    if row.patient_ref is not None and len(row.patient_ref) > 128:
        row.invalid.append(_bad("patient_ref", "is longer than 128 characters"))
        row.patient_ref = None
    raw_phone = _text(data.get("phone"))
    if raw_phone is not None:
        e164, bad = phones.check(raw_phone, default_region, regions)
        if bad is not None:
            row.invalid.append(bad)
        row.phone = e164
    row.not_before = _when(row, "not_before", _text(data.get("not_before")))
    row.not_after = _when(row, "not_after", _text(data.get("not_after")))
    if row.not_before and row.not_after and row.not_after <= row.not_before:
        row.invalid.append(_bad("not_after", "must be later than not_before"))
    state = _text(data.get("state"))
    if state is not None:
        state = state.upper()
        if state not in STATE_ZONES:
            row.invalid.append(_bad("state", "is not a US state or territory code"))
            state = None
    row.state = state
    postal = _text(data.get("postal_code"))
    if postal is not None:
        digits = postal.replace("-", "")
        # ASCII only: str.isdigit() admits other scripts' digits, which zipcodes cannot read.
        if not (digits.isascii() and digits.isdigit() and len(digits) in (5, 9)):
            row.invalid.append(_bad("postal_code", "is not a US ZIP code (12345 or 12345-6789)"))
            postal = None
        else:
            postal = digits[:5]
    row.postal_code = postal
    prio = data.get("priority")
    if _text(prio) is not None:
        try:
            p = int(str(prio).strip())
            if not 1 <= p <= 10:
                raise ValueError
            row.priority = p
        except ValueError:
            row.invalid.append(_bad("priority", "must be a whole number from 1 to 10"))
    return row


def decode_text(body: bytes) -> str:
    """UTF-8 (with or without BOM); otherwise Windows-1252/Latin-1, as spreadsheets export."""
    try:
        return codecs.decode(body, "utf-8-sig")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


# A line and its terminator (\r\n, \r or \n, kept), or a last line without one: exactly the
# lines io.StringIO(text, newline="") yields.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def csv_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` for csv.reader, NULs removed, without copying the whole text:
    io.StringIO keeps a 4-bytes-per-character copy (44 MB for a 200,000-row list)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return (m.group() for m in _LINE.finditer(text))


def csv_records(text: str, as_lists: bool = False) -> tuple[list[str], Iterator[Any]]:
    """Header names (lower-cased) and a lazy iterator of row dicts (``as_lists``: of the
    records' value lists, zipped with the names where they are parsed; a malformed record
    is still a dict)."""
    reader = csv.reader(csv_lines(text))
    try:
        header = next(reader)
    except StopIteration:
        raise Invalid("VALIDATION_ERROR", "the CSV body is empty (a header row is required)",
                      [{"field": "body", "message": "empty"}]) from None
    except csv.Error:
        raise Invalid("VALIDATION_ERROR", "the CSV header row cannot be parsed",
                      [{"field": "body", "message": "bad CSV"}]) from None
    names = [h.strip().lower() for h in header]
    return names, _walk(reader, names, as_lists)


def _walk(reader: Iterator[list[str]], names: list[str], as_lists: bool) -> Iterator[Any]:
    """The records after the header: blank ones skipped, a malformed one a dict saying so."""
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield {"__malformed__": "is not valid CSV"}
            continue
        if not any(v.strip() for v in values):
            continue
        yield values if as_lists else dict(zip(names, values, strict=False))


@dataclass(frozen=True, slots=True)
class CsvSlice:
    """Whole lines of a CSV body without a quote character, after its header: one record
    per line, so a body can be cut at any line break and each piece read on its own, in
    the helper process, with the records :func:`csv_records` would give for them."""

    text: str


def slice_records(text: str) -> list[Any]:
    """The value lists (or malformed-record dicts) of a :class:`CsvSlice`'s text."""
    return list(_walk(csv.reader(csv_lines(text)), [], True))


def csv_slices(text: str, total: int) -> Iterator[CsvSlice] | None:
    """The body after its header in :class:`CsvSlice` pieces of about the sizes
    :func:`record_chunks` makes (counted in lines), or None if the body has a quote
    character (a quoted field may hold a line break: only a CSV reader can find where such
    a record ends)."""
    if '"' in text:
        return None
    m = _LINE.match(text)
    start = 0 if m is None else m.end()  # the header, one line without quotes

    def pieces() -> Iterator[CsvSlice]:
        pos = start
        sizes = _chunk_sizes(True, total)
        while pos < len(text):
            end = pos
            for _ in range(next(sizes)):
                end = text.find("\n", end) + 1
                if end == 0:
                    end = len(text)
                    break
            yield CsvSlice(text[pos:end])
            pos = end

    return pieces()


def most_csv_rows(text: str) -> int:
    """An upper bound on :func:`count_csv_rows`, from the line breaks alone (a record takes at
    least one line; the header is one): a few milliseconds where walking the CSV takes a
    quarter of a second per 100,000 rows, before any row can be decided."""
    lines = text.count("\n") + text.count("\r") - text.count("\r\n") + 1
    return max(lines - 1, 0)


def count_csv_rows(text: str) -> int:
    reader = csv.reader(csv_lines(text))
    n = -1
    while True:
        # The same walk as csv_records: a malformed record counts as one row, and reading
        # goes on after it.
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error:
            n += 1
            continue
        if n < 0 or any(v.strip() for v in values):
            n += 1
    return max(n, 0)


def check_header(names: Sequence[str]) -> list[str]:
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise Invalid(
            "VALIDATION_ERROR",
            "the header row lacks required columns: " + ", ".join(missing),
            [{"field": f"header.{c}", "message": "required column"} for c in missing],
        )
    return sorted({n for n in names if n and n not in COLUMNS})


def record_chunks(
    records: Iterable[Any], ramp: bool = False, total: int | None = None
) -> Iterator[tuple[int, list[Any]]]:
    """Chunks of CHUNK_ROWS records. With ``ramp`` the first ones are smaller (a fifth, two
    fifths, ...): the deciding of a list parsed in the helper starts as soon as a small first
    chunk is parsed, not after a whole one; and, given the list's ``total`` (or a bound on
    it), so are the last ones: what is left to decide after the last parse is small."""
    chunk: list[Any] = []
    first = 1
    sizes = _chunk_sizes(ramp, total)
    size = next(sizes)
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield first, chunk
            first += len(chunk)
            chunk = []
            size = next(sizes)
    if chunk:
        yield first, chunk


def _chunk_sizes(ramp: bool, total: int | None) -> Iterator[int]:
    """The sizes of :func:`record_chunks`' chunks, one after the other (without end)."""
    done = 0
    size = max(1, CHUNK_ROWS // 5) if ramp else CHUNK_ROWS
    while True:
        yield size
        done += size
        size = min(CHUNK_ROWS, size * 2)
        if ramp and total is not None and total - done < 2 * CHUNK_ROWS:
            size = max(CHUNK_ROWS // 10, min(size, (total - done) // 3), 1)


def json_records(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise Invalid("VALIDATION_ERROR", "the body is not valid JSON",
                      [{"field": "body", "message": "invalid JSON"}]) from None
    if not isinstance(data, list):
        raise Invalid("VALIDATION_ERROR", "the body must be a JSON array of rows",
                      [{"field": "body", "message": "expected an array"}])
    return [
        {str(k).lower(): v for k, v in item.items()} if isinstance(item, dict)
        else {"__malformed__": "is not a JSON object"}
        for item in data
    ]
