"""Property tests for call-list parsing: whatever bytes arrive, decoding, CSV reading and
row parsing either succeed or raise config.errors.Invalid, and the row count used for the
row limit is exactly the number of records the reader yields."""

from __future__ import annotations

import codecs
import csv
import io
import json
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config.errors import Invalid
from config.policy import load_policy
from config.reasons import Code, reason
from dialer.intake import parse as intake_parse
from dialer.intake import results as intake_results

RT: Any = SimpleNamespace(policy=load_policy())
FORMULAS = [
    "=1+1",
    "+1 314 555 0100",
    "-2+3",
    "@SUM(A1)",
    "\t=x",
    "\r=x",
    '=HYPERLINK("http://x","y")',
    "=cmd|' /C calc'!A0",
]
HEADER = list(intake_parse.COLUMNS)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

structural = st.sampled_from(
    [
        ",",
        '"',
        "\n",
        "\r",
        "\r\n",
        "\x00",
        "\ufeff",
        " ",
        "=",
        "+",
        "é",
        "\u0661",
        "a",
        "1",
        "external_id",
        "phone",
    ]
)
csv_like_text = st.lists(structural | st.text(max_size=8), max_size=60).map("".join)

field_value = st.one_of(
    st.sampled_from(FORMULAS),
    st.sampled_from(
        [
            "",
            " ",
            "3145550100",
            "+1 (314) 555-0100",
            "555",
            "2026-11-26T00:00:00Z",
            "2026-11-26T00:00:00",
            "0001-01-01T00:00:00+01:00",
            "not a date",
            "MO",
            "Missouri",
            "ZZ",
            "63110",
            "63110-1234",
            "\u0661\u0662\u0663\u0664\u0665",
            "5",
            "0",
            "11",
            "1_0",
            "x\x00y",
            "é",
        ]
    ),
    st.text(max_size=40),
    st.integers(min_value=200, max_value=140_000).map(lambda n: "9" * n),  # huge fields
)


def _walk(text: str) -> int:
    """Parse like intake does; return how many records the reader yielded."""
    _names, records = intake_parse.csv_records(text)
    n = 0
    for rec in records:
        n += 1
        if isinstance(rec, intake_parse.Malformed):
            continue
        row = intake_parse.parse_row(n, dict(rec), RT.policy)
        assert row.row == n
        for r in row.invalid:
            assert r.code in (Code.INVALID_FIELD, Code.INVALID_PHONE)
            assert "3145550100" not in r.message and "555" not in r.message
    return n


def _check(text: str) -> None:
    counted = intake_parse.count_csv_rows(text)
    try:
        yielded = _walk(text)
    except Invalid:
        return
    assert counted == yielded


@SETTINGS
@given(st.binary(max_size=2000))
@example(codecs.BOM_UTF8 + b"external_id,phone\r\nx,1\r\n")
@example(b"\xff\xfe\x00e\x00x")
@example(b"external_id,phone\nM\xfcller,\x00\x001\n")
def test_random_bytes_decode_and_parse(body: bytes) -> None:
    text = intake_parse.decode_text(body)
    assert isinstance(text, str)
    _check(text)


@SETTINGS
@given(csv_like_text)
@example('external_id,phone\n"unterminated')
@example('external_id,phone\na,"x"y\n\n\n , \nb,2')
@example('external_id,phone\n"' + "x" * 200_000 + '",1\nb,2\n')
def test_csv_like_text_never_raises_and_counts_match(text: str) -> None:
    _check(text)


@SETTINGS
@given(
    st.lists(st.lists(field_value, min_size=0, max_size=len(HEADER) + 2), max_size=12),
    st.booleans(),
    st.booleans(),
)
def test_well_formed_lists_with_hostile_fields(
    rows: list[list[str]], bom: bool, latin1: bool
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    w.writerows(rows)
    text = buf.getvalue()
    body = text.encode("latin-1", "replace") if latin1 else text.encode("utf-8")
    if bom and not latin1:
        body = codecs.BOM_UTF8 + body
    decoded = intake_parse.decode_text(body)
    names, _ = intake_parse.csv_records(decoded)
    assert names == HEADER and intake_parse.check_header(names) == []
    _check(decoded)


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF).filter(
            lambda c: not 0x7F <= ord(c) <= 0x9F
        ),
        max_size=50,
    )
)
def test_latin1_and_bom_round_trip(s: str) -> None:
    assert intake_parse.decode_text(s.encode("latin-1")) == s or _is_valid_utf8(s.encode("latin-1"))
    assert intake_parse.decode_text(codecs.BOM_UTF8 + s.encode("utf-8")) == s


def _is_valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@given(
    st.dictionaries(
        st.sampled_from([*HEADER, "extra", "__malformed__"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | field_value
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
@settings(max_examples=300, deadline=None)
def test_parse_row_with_json_values_never_raises(data: dict[str, Any]) -> None:
    row = intake_parse.parse_row(1, dict(data), RT.policy)
    if not row.invalid:
        assert row.external_id and row.phone and row.phone.startswith("+")
        assert 1 <= row.priority <= 10


def test_formula_cells_are_data_not_errors() -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(
        [["external_id", "phone", "patient_ref"], *([f, f, f] for f in FORMULAS)]
    )
    text = buf.getvalue()
    _names, records = intake_parse.csv_records(text)
    rows = intake_parse.parse_chunk(1, list(records), "US", ("US",))
    assert len(rows) == len(FORMULAS) == intake_parse.count_csv_rows(text)
    # "\r=x" is written quoted across two lines: a field with a line break is no value of
    # any column, and its line is a malformed row (issue 16); the rest are data.
    assert [r.external_id for r in rows] == [
        None if "\r" in f else f.strip() for f in FORMULAS]
    assert [r.invalid[0].details for r in rows if r.external_id is None] == [{"field": "row"}]
    assert rows[1].phone == "+13145550100" and rows[1].invalid == []
    assert all(r.phone is None for i, r in enumerate(rows) if i != 1)


def test_empty_and_unreadable_headers_are_invalid() -> None:
    for text in ("", "\x00\x00"):
        try:
            intake_parse.csv_records(text)
        except Invalid as exc:
            assert exc.code == "VALIDATION_ERROR"
        else:
            raise AssertionError("an empty body must be refused")


# --- the answer's encoding ---------------------------------------------------------------

reasons_st = st.lists(
    st.sampled_from(list(Code)).flatmap(
        lambda c: st.builds(
            reason, st.just(c), st.none() | st.text(max_size=20),
            st.none() | st.text(max_size=10),
            st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        )
    ),
    max_size=3,
)
row_results = st.builds(
    intake_results.RowResult,
    st.integers(min_value=1, max_value=10**6),
    st.none() | st.text(max_size=20),
    st.sampled_from(["queued", "refused", "invalid", "duplicate"]),
    st.none() | st.uuids().map(str),
    reasons_st,
)


@given(st.lists(row_results, max_size=8), st.booleans(),
       st.lists(st.text(max_size=8), max_size=3))
def test_to_json_is_json_dumps_of_as_dict(
    results: list[intake_results.RowResult], dry_run: bool, ignored: list[str]
) -> None:
    res = intake_results.IntakeResult(results, dry_run, ignored)
    expected = json.dumps(res.as_dict(), separators=(",", ":")).encode()
    assert res.to_json() == expected


# --- csv_lines is io.StringIO(text, newline="") without the copy -------------------------


@SETTINGS
@given(csv_like_text | st.text(alphabet=st.sampled_from("ab,\"\r\n\x00 \x0b\x85\u2028"),
                               max_size=80))
@example("a\r\nb\rc\nd")
@example("\r\r\n\n")
@example("last line without end")
def test_csv_lines_match_stringio(text: str) -> None:
    clean = text.replace("\x00", "")
    assert list(intake_parse.csv_lines(text)) == list(io.StringIO(clean, newline=""))

    def records(lines: Any) -> list[Any]:
        out: list[Any] = []
        reader = csv.reader(lines)
        while True:
            try:
                out.append(next(reader))
            except StopIteration:
                return out
            except csv.Error as exc:
                out.append(("error", str(exc)))

    assert records(intake_parse.csv_lines(text)) == records(io.StringIO(clean, newline=""))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=4), max_size=8),
       st.sampled_from(["\n", "\r\n", "\r"]))
def test_most_csv_rows_is_never_below_the_exact_count(rows: list[list[str]], eol: str) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=eol).writerows([["external_id", "phone"], *rows])
    text = buf.getvalue()
    assert intake_parse.most_csv_rows(text) >= intake_parse.count_csv_rows(text)
