"""The pure rules of "on the call itself": what RND answers say about a consent, the consent
decision's recording and reassigned terms, the outcome's flags, the stale recheck, and the
reading of answer files (consent.rnd)."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.policy import parse_policy
from config.reasons import Code
from consent import rnd
from consent.rules import (
    AnswerFact,
    ConsentDecision,
    ConsentFact,
    RevocationFact,
    consent_day,
    decide,
    reassigned_terms,
)
from dialer.rules.dispatch import MIN_LEASE, STALE_RECHECK, reassigned_stale, stale_recheck_at
from dialer.rules.oncall import call_flags

NOW = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
OBTAINED = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)
DAY = OBTAINED.date()
P = "3145550123"
ALL = frozenset({"autodialed_voice", "prerecorded_voice", "sms"})


def consent(cid: str = "c1", **kw: object) -> ConsentFact:
    base: dict[str, object] = {"id": cid, "method": "written", "channels": ALL,
                               "purposes": frozenset({"*"}), "obtained_at": OBTAINED}
    base.update(kw)
    return ConsentFact(**base)  # type: ignore[arg-type]


def a(day: date, ans: str, q: datetime = NOW - timedelta(days=1)) -> AnswerFact:
    return AnswerFact(day, ans, q)


# --- reassigned_terms ---------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "reassigned"), [(-1, False), (0, True), (5, True)])
def test_a_yes_counts_on_or_after_the_consent_date(offset: int, reassigned: bool) -> None:
    assert reassigned_terms(OBTAINED, [a(DAY + timedelta(days=offset), "yes")]) == (
        reassigned, None)


@pytest.mark.parametrize(("offset", "covers"), [(-30, True), (0, True), (1, False)])
def test_a_no_covers_a_consent_asked_on_or_before_its_date(offset: int, covers: bool) -> None:
    q = NOW - timedelta(days=3)
    assert reassigned_terms(OBTAINED, [a(DAY + timedelta(days=offset), "no", q)]) == (
        False, q if covers else None)


def test_the_latest_no_and_any_yes_decide() -> None:
    q1, q2 = NOW - timedelta(days=40), NOW - timedelta(days=2)
    got = reassigned_terms(OBTAINED, [a(DAY, "no", q2), a(DAY, "no", q1), a(DAY, "no_data")])
    assert got == (False, q2)
    got = reassigned_terms(OBTAINED, [a(DAY, "no", q2), a(DAY + timedelta(days=9), "yes", q1)])
    assert got == (True, q2)


def test_the_consent_date_is_the_utc_date() -> None:
    late = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)  # 4 March in Chicago
    assert consent_day(late) == date(2026, 3, 5)


# --- the consent decision -----------------------------------------------------------------------


def test_a_reassigned_consent_fails_after_revoked_before_the_rest() -> None:
    d = decide([consent(reassigned=True)], [], "autodialed_voice", "x", NOW)
    assert (d.allowed, d.reasons[0].code) == (False, Code.NUMBER_REASSIGNED)
    d = decide([consent(reassigned=True, method="oral")], [], "autodialed_voice", "x", NOW)
    assert d.reasons[0].code is Code.NUMBER_REASSIGNED
    d = decide([consent(reassigned=True)], [RevocationFact(NOW - timedelta(days=1))],
               "autodialed_voice", "x", NOW)
    assert d.reasons[0].code is Code.CONSENT_REVOKED
    # Another consent that still counts decides.
    d = decide([consent(reassigned=True), consent("c2", obtained_at=NOW - timedelta(days=1))],
               [], "autodialed_voice", "x", NOW)
    assert (d.allowed, d.consent_id) == (True, "c2")


def test_recording_and_check_come_from_any_covering_consent() -> None:
    q1, q2 = NOW - timedelta(days=5), NOW - timedelta(days=1)
    cs = [
        consent("c1", reassigned_checked_at=q1),
        consent("c2", recording=True, purposes=frozenset({"other"}), reassigned_checked_at=NOW),
        consent("c3", recording=True, method="oral"),
        consent("c4", recording=True, reassigned_checked_at=q2),
    ]
    d = decide(cs, [], "autodialed_voice", "test_results", NOW)
    assert (d.allowed, d.consent_id, d.recording, d.reassigned_checked_at) == (
        True, "c1", True, q2)
    d = decide(cs[:3], [], "autodialed_voice", "test_results", NOW)
    assert (d.recording, d.reassigned_checked_at) == (False, q1)


_consents = st.lists(st.builds(
    lambda i, m, r, rec, days_: consent(f"c{i}", method=m, reassigned=r, recording=rec,
                                        obtained_at=NOW - timedelta(days=days_)),
    st.integers(0, 99), st.sampled_from(["written", "electronic_signature", "oral"]),
    st.booleans(), st.booleans(), st.integers(-2, 400)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(_consents)
def test_a_reassigned_consent_counts_as_absent(cs: list[ConsentFact]) -> None:
    d = decide(cs, [], "autodialed_voice", "x", NOW)
    rest = decide([c for c in cs if not c.reassigned], [], "autodialed_voice", "x", NOW)
    assert d.allowed == rest.allowed
    assert d.recording == rest.recording
    if not d.allowed and any(c.reassigned and c.obtained_at <= NOW for c in cs):
        assert d.reasons[0].code in (Code.NUMBER_REASSIGNED, Code.CONSENT_NOT_WRITTEN)


# --- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "flags"), [
    ({"recorded": True, "recording_allowed": False}, ["RECORDING_WITHOUT_CONSENT"]),
    ({"recorded": True, "recording_allowed": True}, []),
    ({"recorded": False, "recording_allowed": False}, []),
    ({"phi_disclosed": True, "identity_required": 2, "identity_verified_with": ["address"]},
     ["IDENTITY_NOT_VERIFIED"]),
    ({"phi_disclosed": True, "identity_required": 2,
      "identity_verified_with": ["address", "address"]}, ["IDENTITY_NOT_VERIFIED"]),
    ({"phi_disclosed": True, "identity_required": 2,
      "identity_verified_with": ["address", "member_id"]}, []),
    ({"phi_disclosed": True, "identity_required": 0}, []),
    ({"phi_disclosed": False, "identity_required": 5}, []),
])
def test_call_flags(kw: dict[str, object], flags: list[str]) -> None:
    args: dict[str, object] = {"recording_allowed": False, "identity_required": 0,
                               "recorded": False, "phi_disclosed": False,
                               "identity_verified_with": []}
    args.update(kw)
    assert call_flags(**args) == flags  # type: ignore[arg-type]


# --- staleness ------------------------------------------------------------------------------


def test_reassigned_stale_follows_the_policy() -> None:
    from config.policy import _default_policy_bytes

    off = parse_policy(_default_policy_bytes())
    on = parse_policy(_default_policy_bytes().replace(
        b"# require_answer_within_days = 31", b"require_answer_within_days = 30"))
    fresh = ConsentDecision(True, [], "c1", False, NOW - timedelta(days=30))
    old = ConsentDecision(True, [], "c1", False, NOW - timedelta(days=30, seconds=1))
    none = ConsentDecision(True, [], "c1")
    assert not any(reassigned_stale(d, off, NOW) for d in (fresh, old, none))
    assert [reassigned_stale(d, on, NOW) for d in (fresh, old, none)] == [False, True, True]
    assert not reassigned_stale(ConsentDecision(False), on, NOW)  # refused anyway


def test_stale_recheck_at() -> None:
    assert stale_recheck_at(NOW, NOW, None) == NOW + STALE_RECHECK
    later = NOW + timedelta(hours=5)
    assert stale_recheck_at(later, NOW, None) == later  # the window opens later still
    assert stale_recheck_at(NOW, NOW, NOW + timedelta(minutes=10)) == (
        NOW + timedelta(minutes=10) - MIN_LEASE)
    assert stale_recheck_at(NOW, NOW, NOW + MIN_LEASE) is None


# --- answer files -----------------------------------------------------------------------------


def test_validate_reads_the_documented_forms() -> None:
    got = rnd.validate(1, {"phone": " 3145550100 ", "date": "3/5/2026", "answer": "No Data",
                           "queried_at": "2026-11-20T10:00:00-05:00"}, NOW)
    assert got == rnd.Answer(1, "3145550100", date(2026, 3, 5), "no_data",
                             datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    got = rnd.validate(2, {"phone": "x", "date": "2026-03-05", "answer": "YES",
                           "queried_at": "2026-11-20"}, NOW)
    assert isinstance(got, rnd.Answer) and got.queried_at == datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(("values", "fields"), [
    ({}, ["phone", "date", "answer", "queried_at"]),
    ({"phone": 3145550100, "date": "2026-03-05", "answer": "no",
      "queried_at": "2026-11-20"}, ["phone"]),
    ({"phone": P, "date": "05.03.2026", "answer": "no", "queried_at": "2026-11-20"},
     ["date"]),
    ({"phone": P, "date": "2026-03-05", "answer": "perhaps", "queried_at": "2026-11-20"},
     ["answer"]),
    ({"phone": P, "date": "2026-03-05", "answer": "no", "queried_at": "2026-11-20T10:00"},
     ["queried_at"]),
    ({"phone": P, "date": "2026-03-05", "answer": "no", "queried_at": "2026-11-25"},
     ["queried_at"]),
    ({"phone": P, "date": "2026-11-21", "answer": "no", "queried_at": "2026-11-20"},
     ["date"]),
    ({"phone": "1" * 65, "date": "2026-03-05", "answer": "no", "queried_at": "2026-11-20"},
     ["phone"]),
])
def test_validate_names_each_bad_field(values: dict[str, object], fields: list[str]) -> None:
    got = rnd.validate(3, values, NOW)
    assert isinstance(got, list) and [e.field for e in got] == fields
    assert all(e.row == 3 for e in got)
    assert not any(str(values.get("phone")) in e.message for e in got if values.get("phone"))


def test_validate_refuses_a_row_that_is_not_an_object() -> None:
    assert [e.field for e in rnd.validate(1, ["a", "b"], NOW)] == ["row"]  # type: ignore[union-attr]


def test_csv_rows_header_any_case_blank_lines_and_missing_cells() -> None:
    data = ("\ufeffPHONE ,date,Answer,queried_at\r\n1,2,3,4\r\n\r\n,,,\r\n5,6\r\n").encode()
    assert list(rnd.csv_rows(io.BytesIO(data))) == [
        (1, {"phone": "1", "date": "2", "answer": "3", "queried_at": "4"}),
        (4, {"phone": "5", "date": "6", "answer": "", "queried_at": ""}),
    ]
    with pytest.raises(rnd.FileError, match="queried_at"):
        list(rnd.csv_rows(io.BytesIO(b"phone,date,answer\n")))
    with pytest.raises(rnd.FileError, match="longer"):
        list(rnd.csv_rows(io.BytesIO(b"phone,date,answer,queried_at\n" + b"x" * 5000)))
    with pytest.raises(rnd.FileError, match="never closes"):
        list(rnd.csv_rows(io.BytesIO(b'phone,date,answer,queried_at\n"' + b"x\n" * 70_000)))
    with pytest.raises(rnd.FileError, match="UTF-8"):
        list(rnd.csv_rows(io.BytesIO(b"phone,date,answer,queried_at\n\xff\xfe,1,2,3\n")))


def test_json_rows_and_check() -> None:
    items = [{"phone": "1"}, {"phone": "2", "n": 1.5}]
    body = json.dumps(items).encode()
    rnd.check_json(io.BytesIO(body))
    assert list(rnd.json_rows(io.BytesIO(body))) == [(1, items[0]), (2, items[1])]
    # A number beyond a float's range fails the check, as it would fail json_rows half-way.
    for bad in (b'{"phone": "1"}', b"[1, 2", b"", b"[1] [2]", b"nul", b'[{"a": 1e999}]'):
        with pytest.raises(rnd.FileError):
            rnd.check_json(io.BytesIO(bad))
    assert rnd.sniff_kind(b"\xef\xbb\xbf \n[{") == "json"
    assert rnd.sniff_kind(b"phone,date") == "csv"


def test_national_number() -> None:
    assert rnd.national_number("+13145550100") == "3145550100"
    assert rnd.national_number("+442079460958") is None
