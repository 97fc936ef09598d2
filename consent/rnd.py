"""FCC Reassigned Numbers Database (RND) files: reading answers, writing queries. Pure but for
the streams it reads and writes; memory bounded whatever the file's size (one row, or one
chunk of rows, at a time).

Answers (``callgate rnd import``, ``POST /v1/numbers/reassigned``): a JSON array of objects
or a CSV with a header row, the fields ``phone``, ``date``, ``answer``, ``queried_at``
(API.md "Reassigned numbers"):

* ``phone``: the number, any format intake accepts (10 digits, E.164, ...);
* ``date``: the date asked about (the consent's date), ``YYYY-MM-DD`` or ``MM/DD/YYYY``
  (the RND's own files use either);
* ``answer``: ``yes`` (permanently disconnected on or after ``date``), ``no``, ``no_data``
  (any case; ``no data`` with a space is read as ``no_data``);
* ``queried_at``: when the RND was asked, ISO-8601 with an offset, or a date (midnight UTC).

Queries (``callgate rnd export``): the public RND documentation (reassigned.us FAQ) says a
caller uploads a file of telephone numbers with a date each, up to 250,000 numbers a file,
and lists ``YYYY-MM-DD`` among accepted date formats; it does not publish the column layout
of a caller's query file. Assumed here: CSV, a header row ``telephone_number,date``, the
10-digit US number (NPA-NXX-XXXX without +1 or punctuation) and the consent's date
(``YYYY-MM-DD``, the UTC date of ``obtained_at``), at most QUERY_FILE_ROWS rows a file.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, Any

ANSWERS = ("yes", "no", "no_data")
FIELDS = ("phone", "date", "answer", "queried_at")
QUERY_HEADER = ("telephone_number", "date")
QUERY_FILE_ROWS = 250_000  # the RND's limit per uploaded file (reassigned.us FAQ)
FUTURE_SKEW = timedelta(minutes=5)  # a queried_at this far ahead of our clock is accepted
MAX_FIELD = 64
MAX_LINE = 4096  # a CSV line longer than this is not an answer


class FileError(ValueError):
    """The file as a whole cannot be read (not a JSON array, no CSV header, ...)."""


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    field: str
    message: str  # names the field, never its value

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class Answer:
    row: int
    phone: str  # as given; normalised by the service
    date: date
    answer: str
    queried_at: datetime


# --- reading ---------------------------------------------------------------------------------


def sniff_kind(head: bytes) -> str:
    """``json`` when the first non-blank byte (after a BOM) opens an array, else ``csv``."""
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    return "json" if text[:1] == b"[" else "csv"


def check_json(stream: IO[bytes]) -> None:
    """One streaming pass: the stream is a well-formed JSON array (of anything). Raises
    FileError otherwise. Bounded memory: events, not values. Numbers are read as
    :func:`json_rows` reads them (floats), so a number out of a float's range fails here,
    before anything is stored, not half-way through the import."""
    import ijson

    try:
        events = ijson.basic_parse(stream, use_float=True)
        first = next(events, None)
        if first is None or first[0] != "start_array":
            raise FileError("the body is not a JSON array")
        for _ in events:
            pass
    except ijson.JSONError as exc:
        raise FileError("the body is not valid JSON") from exc


def json_rows(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """The array's items, numbered from 1, one at a time (run :func:`check_json` first: a
    syntax error found half-way would otherwise stop an import half done)."""
    import ijson

    yield from enumerate(ijson.items(stream, "item", use_float=True), start=1)


def csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """The CSV's rows as dicts of the known fields (header names trimmed, any case), numbered
    from 1 (the first line after the header); blank lines skipped. Raises FileError when the
    header lacks a field."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
    try:
        reader = csv.reader(_bounded_lines(text))
        header = next(reader, None)
        if header is None:
            raise FileError("the CSV has no header row")
        names = [h.strip().lower() for h in header]
        missing = [f for f in FIELDS if f not in names]
        if missing:
            raise FileError("the CSV header lacks: " + ", ".join(missing))
        at = {f: names.index(f) for f in FIELDS}
        for i, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            yield i, {f: (cells[j] if j < len(cells) else "") for f, j in at.items()}
    except UnicodeDecodeError as exc:
        raise FileError("the CSV is not UTF-8 text") from exc
    except csv.Error as exc:  # e.g. a quoted field spanning lines past csv's field limit
        raise FileError("the CSV cannot be read (a quoted field never closes?)") from exc
    finally:
        text.detach()


def _bounded_lines(text: IO[str]) -> Iterator[str]:
    while True:
        line = text.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith("\n"):
            raise FileError(f"a CSV line is longer than {MAX_LINE} characters")
        yield line


# --- validating ------------------------------------------------------------------------------


def _text(values: dict[str, Any], name: str, errors: list[tuple[str, str]]) -> str | None:
    v = values.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        errors.append((name, "is required"))
        return None
    if not isinstance(v, str):
        errors.append((name, "must be a string"))
        return None
    v = v.strip()
    if len(v) > MAX_FIELD:
        errors.append((name, "is too long"))
        return None
    return v


def parse_day(text: str) -> date | None:
    """``YYYY-MM-DD`` or ``MM/DD/YYYY`` (also ``M/D/YYYY``); None if neither."""
    try:
        if "/" in text:
            m, d, y = text.split("/")
            if len(y) != 4:
                return None
            return date(int(y), int(m), int(d))
        if len(text) != 10:
            return None
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_instant(text: str) -> datetime | None:
    """ISO-8601 with an offset (UTC), or a date alone (midnight UTC); None otherwise."""
    day = parse_day(text)
    if day is not None:
        return datetime.combine(day, time(0), UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


def validate(row: int, values: Any, now: datetime) -> Answer | list[RowError]:
    """One answer, or what is wrong with it (each field named, never its value)."""
    if not isinstance(values, dict):
        return [RowError(row, "row", "must be an object with phone, date, answer, queried_at")]
    errors: list[tuple[str, str]] = []
    phone = _text(values, "phone", errors)
    day_text = _text(values, "date", errors)
    answer_text = _text(values, "answer", errors)
    queried_text = _text(values, "queried_at", errors)
    day = queried = None
    answer = ""
    if day_text is not None:
        day = parse_day(day_text)
        if day is None:
            errors.append(("date", "is not a date (YYYY-MM-DD or MM/DD/YYYY)"))
    if answer_text is not None:
        answer = answer_text.lower().replace(" ", "_")
        if answer == "nodata":
            answer = "no_data"
        if answer not in ANSWERS:
            errors.append(("answer", "is not yes, no or no_data"))
    if queried_text is not None:
        queried = parse_instant(queried_text)
        if queried is None:
            errors.append(("queried_at", "is not an ISO-8601 date-time with an offset"))
        elif queried > now + FUTURE_SKEW:
            errors.append(("queried_at", "is in the future"))
    if day is not None and queried is not None and day > queried.date():
        errors.append(("date", "is after queried_at (the RND answers about past dates)"))
    if errors or phone is None or day is None or queried is None:
        return [RowError(row, f, m) for f, m in errors]
    return Answer(row, phone, day, answer, queried)


# --- writing queries -------------------------------------------------------------------------


def national_number(e164: str) -> str | None:
    """The 10-digit NANP number of a ``+1`` E.164 number, else None (the RND holds US
    numbers only)."""
    if e164.startswith("+1") and len(e164) == 12 and e164[2:].isdigit():
        return e164[2:]
    return None


def query_writer(out: IO[str]) -> Any:
    """A CSV writer for a query file, its header written."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(QUERY_HEADER)
    return w
