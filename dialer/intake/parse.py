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

from config.errors import Invalid, TooLarge
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
    "appointment_at",  # SMS campaigns: {appointment_date} / {appointment_time} (migration 0008)
)
REQUIRED = ("external_id", "phone")
CHUNK_ROWS = 5000
MAX_FIELD = 256
MAX_ID = 128  # external_id, patient_ref


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record that is no row at all (a JSON item that is not an object, a CSV line with an
    unclosed quote): an object of this type, which no input can make -- a dict key such as
    ``__malformed__`` is just an unknown column (issue 16)."""

    what: str


NOT_AN_OBJECT = Malformed("is not a JSON object")
NOT_CSV = Malformed("is not valid CSV (a field over the size limit, or a stray quote)")


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
    appointment_at: datetime | None = None
    # An SMS campaign's text, rendered at intake (dialer.intake.service).
    sms_text: str | None = None




def _bad(field_: str, what: str) -> Reason:
    return reason(Code.INVALID_FIELD, f"{field_}: {what}", details={"field": field_})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    s = str(value).strip()
    return s or None


def _unsafe(v: str) -> str | None:
    """What is wrong with a field's text for storage and logs, or None: a lone UTF-16
    surrogate (no UTF-8 form: the insert failed, issue 16), a NUL, a line break or any other
    control character (no column is free text: each is a bounded, single-line value)."""
    if len(v) > MAX_FIELD:
        return "is too long"
    if v.isprintable():
        return None
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    if any(c in v for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
        return "contains a line break"
    if any(not c.isprintable() and c not in " \t" for c in v):
        return "contains a control character"
    return None


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
        if isinstance(rec, Malformed):
            out.append(Row(first + i, invalid=[_bad("row", rec.what)]))
            continue
        if columns is not None and isinstance(rec, list):  # a CSV record's values
            rec = dict(zip(columns, rec, strict=False))
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
            None if r.appointment_at is None else r.appointment_at.isoformat(),
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
            invalid=invalid or [], zones=zones[z], call_id=call_id,
            appointment_at=None if appt is None else fromiso(appt))
        for n, ext, ref, phone, state, postal, prio, nb, na, invalid, z, call_id, appt in rows
    ]


def _parse(n: int, data: dict[str, Any], default_region: str, regions: tuple[str, ...]) -> Row:
    row = Row(n)
    for name in REQUIRED:
        if _text(data.get(name)) is None:
            row.invalid.append(_bad(name, "is required"))
    data = dict(data)  # the caller's record is not changed
    for name in COLUMNS:
        v = data.get(name)
        if isinstance(v, str):
            wrong = _unsafe(v)
            if wrong is not None:
                row.invalid.append(_bad(name, wrong))
                data[name] = None
        elif isinstance(v, (dict, list)):
            row.invalid.append(_bad(name, "must be a scalar value"))
            data[name] = None
    # Only a valid external_id is kept on an invalid row (its result and the refusal log):
    # a bounded, single-line identifier, never a field that swallowed other rows' text.
    row.external_id = _text(data.get("external_id"))
    if row.external_id is not None and len(row.external_id) > MAX_ID:
        row.invalid.append(_bad("external_id", f"is longer than {MAX_ID} characters"))
        row.external_id = None
    row.patient_ref = _text(data.get("patient_ref"))
    if row.patient_ref is not None and len(row.patient_ref) > MAX_ID:
        row.invalid.append(_bad("patient_ref", f"is longer than {MAX_ID} characters"))
        row.patient_ref = None
    raw_phone = _text(data.get("phone"))
    if raw_phone is not None:
        e164, bad = phones.check(raw_phone, default_region, regions)
        if bad is not None:
            row.invalid.append(bad)
        row.phone = e164
    row.not_before = _when(row, "not_before", _text(data.get("not_before")))
    row.not_after = _when(row, "not_after", _text(data.get("not_after")))
    row.appointment_at = _when(row, "appointment_at", _text(data.get("appointment_at")))
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


def _records(lines: Iterator[str]) -> Iterator[list[str] | Malformed]:
    """The CSV records of ``lines``, the header first. A record whose quoted field runs
    over a line break is a :class:`Malformed` record and its values are dropped: no column
    holds a line break, so such a field is a stray quote that swallowed the lines after it
    (other patients' rows, issue 16). csv's field size limit (128 KiB) bounds what one
    field can swallow; the reader starts afresh after it."""
    reader = csv.reader(lines)
    last = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            last = reader.line_num
            yield NOT_CSV
            continue
        span, last = reader.line_num - last, reader.line_num
        if span > 1:
            yield Malformed(f"has a quoted field over {span} lines (a stray quote?); the "
                            "lines it spans were not read as rows")
            continue
        yield values


def _blank(values: list[str] | Malformed) -> bool:
    return not isinstance(values, Malformed) and not any(v.strip() for v in values)


def csv_records(text: str, as_lists: bool = False) -> tuple[list[str], Iterator[Any]]:
    """Header names (lower-cased) and a lazy iterator of row dicts (``as_lists``: of the
    records' value lists, zipped with the names where they are parsed; a malformed record
    is a :class:`Malformed`)."""
    records = _records(csv_lines(text))
    header = next(records, None)
    if header is None:
        raise Invalid("VALIDATION_ERROR", "the CSV body is empty (a header row is required)",
                      [{"field": "body", "message": "empty"}])
    if isinstance(header, Malformed):
        raise Invalid("VALIDATION_ERROR", "the CSV header row cannot be parsed",
                      [{"field": "body", "message": "bad CSV"}])
    names = [h.strip().lower() for h in header]
    return names, _walk(records, names, as_lists)


def _walk(records: Iterator[list[str] | Malformed], names: list[str],
          as_lists: bool) -> Iterator[Any]:
    """The records after the header: blank ones skipped."""
    for values in records:
        if isinstance(values, Malformed):
            yield values
        elif any(v.strip() for v in values):
            yield values if as_lists else dict(zip(names, values, strict=False))


@dataclass(frozen=True, slots=True)
class CsvSlice:
    """Whole lines of a CSV body without a quote character, after its header: one record
    per line, so a body can be cut at any line break and each piece read on its own, in
    the helper process, with the records :func:`csv_records` would give for them."""

    text: str


def slice_records(text: str) -> list[Any]:
    """The value lists (or :class:`Malformed` records) of a :class:`CsvSlice`'s text."""
    return list(_walk(_records(csv_lines(text)), [], True))


def csv_slices(text: str, total: int) -> Iterator[CsvSlice] | None:
    """The body after its header in :class:`CsvSlice` pieces of about the sizes
    :func:`record_chunks` makes (counted in lines), or None if the body has a quote
    character (a quoted field may run over a line break: only a CSV reader can find where
    such a record ends)."""
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
                end = _line_end(text, end)
                if end >= len(text):
                    break
            yield CsvSlice(text[pos:end])
            pos = end

    return pieces()


def _line_end(text: str, pos: int) -> int:
    m = _LINE.match(text, pos)
    return len(text) if m is None or m.end() == pos else m.end()


def most_csv_rows(text: str) -> int:
    """The number of lines after the header: an upper bound on :func:`count_csv_rows` (a
    record takes at least one line), found in a few milliseconds where walking the CSV
    takes a quarter of a second per 100,000 rows."""
    lines = text.count("\n") + text.count("\r") - text.count("\r\n")
    if text and not text.endswith(("\n", "\r")):
        lines += 1
    return max(lines - 1, 0)


def count_csv_rows(text: str, limit: int | None = None) -> int:
    """The records after the header (blank lines are none). With ``limit``: stops as soon
    as the count passes it (returning ``limit + 1``), or as soon as the blank lines passed
    (:data:`BLANK_LINES_PER_ROW` times ``limit``) say the body is padding, not a list."""
    n = -1
    blank = 0
    blank_budget = None if limit is None else max(limit, 1) * BLANK_LINES_PER_ROW
    for values in _records(csv_lines(text)):
        if n < 0 or not _blank(values):
            n += 1
            if limit is not None and n > limit:
                return n
        else:
            blank += 1
            if blank_budget is not None and blank > blank_budget:
                raise TooLarge(
                    "LIST_TOO_LARGE",
                    f"the CSV body has more than {blank_budget} blank lines",
                    {"blank_lines_limit": blank_budget},
                )
    return max(n, 0)


BLANK_LINES_PER_ROW = 1


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


def json_records(body: bytes, limit: int | None = None) -> list[Any]:
    """The array's items, each a dict with lower-cased keys or :data:`NOT_AN_OBJECT`.

    Read item by item (``raw_decode``), so a list with more than ``limit`` items is refused
    once its ``limit + 1``-th item is read, before the rest is built: a 15 MiB array of
    zeros took 1.8 GB as a list of 7.8 million rows (issue 16)."""
    bad = Invalid("VALIDATION_ERROR", "the body is not valid JSON",
                  [{"field": "body", "message": "invalid JSON"}])
    try:
        text = body.decode(json.detect_encoding(body))
    except (UnicodeDecodeError, LookupError):
        raise bad from None
    if text.startswith("\ufeff"):
        text = text[1:]
    def ws(t: str, at: int) -> int:
        m = _JSON_WS.match(t, at)
        return at if m is None else m.end()

    pos = ws(text, 0)
    if not text.startswith("[", pos):
        if pos == len(text) or text[pos] not in '{"-0123456789tfn':
            raise bad
        raise Invalid("VALIDATION_ERROR", "the body must be a JSON array of rows",
                      [{"field": "body", "message": "expected an array"}])
    decode = _DECODER.raw_decode
    out: list[Any] = []
    pos = ws(text, pos + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                item, pos = decode(text, pos)
            except (ValueError, RecursionError):  # deep nesting: RecursionError
                raise bad from None
            out.append(
                {str(k).lower(): v for k, v in item.items()} if isinstance(item, dict)
                else NOT_AN_OBJECT
            )
            if limit is not None and len(out) > limit:
                raise TooLarge(
                    "LIST_TOO_LARGE",
                    f"the list has more than {limit} rows; the limit is {limit} rows per "
                    "submission: split it",
                    {"rows": len(out), "limit": limit},
                )
            pos = ws(text, pos)
            if text.startswith(",", pos):
                pos = ws(text, pos + 1)
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            raise bad
    if ws(text, pos) != len(text):
        raise bad
    return out


_JSON_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
