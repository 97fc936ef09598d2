"""Frequency caps per number (47 CFR 64.1200(a)(9)(iv)(F); PRODUCT.md rule 4)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.policy import Caps, load_policy, parse_policy
from config.reasons import Code
from dialer.rules.caps import CapDecision, check_caps
from dialer.rules.zones import CandidateZone

CHI = ZoneInfo("America/Chicago")
NYC = ZoneInfo("America/New_York")
LAX = ZoneInfo("America/Los_Angeles")
ROLLING = load_policy().caps
CHICAGO = [CandidateZone("America/Chicago", "area_code")]
NY_AND_LA = [
    CandidateZone("America/New_York", "area_code"),
    CandidateZone("America/Los_Angeles", "postal_code"),
]
TICK = timedelta(microseconds=1)  # the smallest step a datetime takes


def caps(per_day: int = 1, per_week: int = 3, period: str = "rolling") -> Caps:
    toml = f'version = "t"\n[caps]\nper_day = {per_day}\nper_week = {per_week}\n'
    toml += f'period = "{period}"\n'
    return parse_policy(toml.encode()).caps


CALENDAR = caps(period="calendar")


def local(
    tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    """A wall-clock time in ``tz`` (fold=0 for repeated times)."""
    return datetime(y, mo, d, h, mi, s, us, tzinfo=tz)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def codes(d: CapDecision) -> list[Code]:
    return [r.code for r in d.reasons]


def test_default_policy_is_one_a_day_three_a_week_rolling() -> None:
    assert (ROLLING.per_day, ROLLING.per_week, ROLLING.period) == (1, 3, "rolling")


def test_no_attempts_is_allowed() -> None:
    d = check_caps([], utc(2026, 6, 3, 15), ROLLING, CHICAGO)
    assert d == CapDecision(True, [], None)
    assert check_caps([], utc(2026, 6, 3, 15), CALENDAR, CHICAGO).allowed


# --- rolling ---------------------------------------------------------------------------------


def test_rolling_daily_cap_frees_24h_after_the_attempt() -> None:
    attempt = utc(2026, 6, 3, 15, 0)
    d = check_caps([attempt], utc(2026, 6, 4, 14, 59), ROLLING, CHICAGO)
    assert not d.allowed
    assert codes(d) == [Code.DAILY_CAP]
    assert d.next_free_at == utc(2026, 6, 4, 15, 0)
    assert d.reasons[0].details == {
        "period": "rolling",
        "count": 1,
        "limit": 1,
        "frees_at": "2026-06-04T15:00:00+00:00",
    }
    # The window is (now - 24 h, now]: exactly 24 h later the attempt no longer counts.
    assert check_caps([attempt], utc(2026, 6, 4, 15, 0), ROLLING, CHICAGO).allowed
    assert not check_caps([attempt], utc(2026, 6, 4, 15, 0) - TICK, ROLLING, CHICAGO).allowed


def test_rolling_weekly_cap_frees_when_the_oldest_attempt_is_seven_days_old() -> None:
    attempts = [utc(2026, 6, 5, 15), utc(2026, 6, 1, 15), utc(2026, 6, 3, 15)]  # any order
    d = check_caps(attempts, utc(2026, 6, 7, 16), ROLLING, CHICAGO)
    assert codes(d) == [Code.WEEKLY_CAP]
    assert d.next_free_at == utc(2026, 6, 8, 15)
    assert check_caps(attempts, utc(2026, 6, 8, 15), ROLLING, CHICAGO).allowed
    assert not check_caps(attempts, utc(2026, 6, 8, 15) - TICK, ROLLING, CHICAGO).allowed


def test_rolling_daily_and_weekly_together_free_at_the_later() -> None:
    attempts = [utc(2026, 6, 1, 15), utc(2026, 6, 3, 15), utc(2026, 6, 7, 10)]
    d = check_caps(attempts, utc(2026, 6, 7, 12), ROLLING, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP, Code.WEEKLY_CAP]
    assert d.reasons[0].details is not None and d.reasons[1].details is not None
    assert d.reasons[0].details["frees_at"] == "2026-06-08T10:00:00+00:00"
    assert d.reasons[1].details["frees_at"] == "2026-06-08T15:00:00+00:00"
    assert d.next_free_at == utc(2026, 6, 8, 15)


def test_rolling_cap_above_one_frees_when_enough_attempts_age_out() -> None:
    two_a_day = caps(per_day=2, per_week=10)
    now = utc(2026, 6, 3, 12)
    attempts = [now - timedelta(hours=20), now - timedelta(hours=10), now - timedelta(hours=1)]
    d = check_caps(attempts, now, two_a_day, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP]
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["count"] == 3
    # Two of the three must drop off; the second goes at (now - 10 h) + 24 h.
    assert d.next_free_at == now + timedelta(hours=14)
    assert check_caps(attempts, now + timedelta(hours=14), two_a_day, CHICAGO).allowed
    assert not check_caps(attempts, now + timedelta(hours=14) - TICK, two_a_day, CHICAGO).allowed


def test_rolling_ignores_old_attempts_and_zones() -> None:
    now = utc(2026, 6, 10, 12)
    old = [now - timedelta(days=7), now - timedelta(days=8), now - timedelta(days=7, hours=1)]
    assert check_caps(old, now, ROLLING, []).allowed


def test_attempt_stamped_after_now_counts() -> None:
    # Clock skew between instances: an attempt a moment "in the future" still counts.
    now = utc(2026, 6, 3, 12)
    d = check_caps([now + timedelta(seconds=1)], now, ROLLING, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP]
    assert d.next_free_at == now + timedelta(days=1, seconds=1)


def test_attempts_in_any_time_zone() -> None:
    attempt = local(CHI, 2026, 6, 3, 10, 0)  # 15:00Z
    d = check_caps([attempt], local(NYC, 2026, 6, 4, 10, 0), ROLLING, CHICAGO)
    assert d.next_free_at == utc(2026, 6, 4, 15, 0)
    assert d.next_free_at is not None and d.next_free_at.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="now"):
        check_caps([], datetime(2026, 6, 3, 12), ROLLING, CHICAGO)
    with pytest.raises(ValueError, match="attempt_times"):
        check_caps([datetime(2026, 6, 3, 12)], utc(2026, 6, 3, 12), ROLLING, CHICAGO)


# --- calendar --------------------------------------------------------------------------------


def test_calendar_week_resets_on_monday_but_rolling_does_not() -> None:
    attempts = [
        local(CHI, 2026, 6, 5, 10, 0),  # Friday
        local(CHI, 2026, 6, 6, 10, 0),  # Saturday
        local(CHI, 2026, 6, 7, 10, 0),  # Sunday
    ]
    sunday_evening = local(CHI, 2026, 6, 7, 20, 0)
    d = check_caps(attempts, sunday_evening, CALENDAR, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP, Code.WEEKLY_CAP]
    assert d.next_free_at == local(CHI, 2026, 6, 8, 0, 0) == utc(2026, 6, 8, 5, 0)
    assert d.reasons[1].details == {
        "period": "calendar",
        "count": 3,
        "limit": 3,
        "frees_at": "2026-06-08T05:00:00+00:00",
        "zone": "America/Chicago",
    }
    monday_morning = local(CHI, 2026, 6, 8, 9, 0)
    assert check_caps(attempts, monday_morning, CALENDAR, CHICAGO).allowed
    # Rolling: Sunday's attempt is 23 h old at 09:00; three in the last 7 x 24 h until
    # Friday 10:00 CDT.
    d = check_caps(attempts, monday_morning, ROLLING, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP, Code.WEEKLY_CAP]
    assert d.next_free_at == utc(2026, 6, 12, 15, 0)
    d = check_caps(attempts, local(CHI, 2026, 6, 8, 10, 0), ROLLING, CHICAGO)
    assert codes(d) == [Code.WEEKLY_CAP]
    assert d.next_free_at == utc(2026, 6, 12, 15, 0)


def test_calendar_daily_cap_frees_at_local_midnight() -> None:
    attempt = local(CHI, 2026, 6, 3, 8, 30)
    d = check_caps([attempt], local(CHI, 2026, 6, 3, 20, 0), CALENDAR, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP]
    assert d.next_free_at == utc(2026, 6, 4, 5, 0)
    # Rolling would wait until 08:30 the next day.
    d = check_caps([attempt], local(CHI, 2026, 6, 3, 20, 0), ROLLING, CHICAGO)
    assert d.next_free_at == utc(2026, 6, 4, 13, 30)


def test_calendar_midnight_across_fall_back() -> None:
    # 2026-11-01 is 25 hours long in Chicago; the next midnight is 00:00 CST = 06:00Z.
    d = check_caps([utc(2026, 11, 1, 15)], utc(2026, 11, 1, 20), CALENDAR, CHICAGO)
    assert d.next_free_at == utc(2026, 11, 2, 6, 0)
    d = check_caps([utc(2026, 10, 31, 15)], utc(2026, 10, 31, 20), CALENDAR, CHICAGO)
    assert d.next_free_at == utc(2026, 11, 1, 5, 0)  # 00:00 CDT


def test_calendar_attempt_counts_in_each_zones_own_day() -> None:
    # Sunday 23:30 PDT is Monday 02:30 EDT: Monday is used up in New York only.
    attempt = local(LAX, 2026, 6, 7, 23, 30)
    d = check_caps([attempt], local(NYC, 2026, 6, 8, 10, 0), CALENDAR, NY_AND_LA)
    assert codes(d) == [Code.DAILY_CAP]
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zone"] == "America/New_York"
    assert d.next_free_at == local(NYC, 2026, 6, 9, 0, 0) == utc(2026, 6, 9, 4, 0)
    # Chicago alone would see Monday 01:30 CDT -- also Monday, also used up.
    assert not check_caps([attempt], local(NYC, 2026, 6, 8, 10, 0), CALENDAR, CHICAGO).allowed
    # Los Angeles alone: the attempt was on Sunday.
    la = [CandidateZone("America/Los_Angeles", "area_code")]
    assert check_caps([attempt], local(NYC, 2026, 6, 8, 10, 0), CALENDAR, la).allowed


def test_calendar_several_blocking_zones_free_at_the_latest_midnight() -> None:
    attempt = local(NYC, 2026, 6, 8, 12, 0)  # Monday in both zones
    now = local(NYC, 2026, 6, 8, 20, 0)
    d = check_caps([attempt], now, CALENDAR, NY_AND_LA)
    assert codes(d) == [Code.DAILY_CAP]
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zone"] == "America/Los_Angeles"
    assert d.next_free_at == local(LAX, 2026, 6, 9, 0, 0) == utc(2026, 6, 9, 7, 0)
    # After New York's midnight, Los Angeles is still on Monday.
    d = check_caps([attempt], utc(2026, 6, 9, 5, 0), CALENDAR, NY_AND_LA)
    assert not d.allowed
    assert d.next_free_at == utc(2026, 6, 9, 7, 0)
    assert check_caps([attempt], utc(2026, 6, 9, 7, 0), CALENDAR, NY_AND_LA).allowed


def test_calendar_week_boundary_differs_by_zone() -> None:
    attempts = [utc(2026, 6, 5, 18), utc(2026, 6, 6, 18), utc(2026, 6, 7, 18)]  # Fri-Sun midday
    now = utc(2026, 6, 8, 4, 30)  # Monday 00:30 EDT, Sunday 21:30 PDT
    d = check_caps(attempts, now, CALENDAR, NY_AND_LA)
    assert codes(d) == [Code.DAILY_CAP, Code.WEEKLY_CAP]
    assert d.next_free_at == local(LAX, 2026, 6, 8, 0, 0) == utc(2026, 6, 8, 7, 0)
    ny = [CandidateZone("America/New_York", "area_code")]
    assert check_caps(attempts, now, CALENDAR, ny).allowed


def test_calendar_attempt_dated_tomorrow_keeps_tomorrow_blocked() -> None:
    # An attempt stamped (skew) just after local midnight uses up tomorrow too.
    attempts = [local(CHI, 2026, 6, 3, 10, 0), local(CHI, 2026, 6, 4, 0, 0, 30)]
    d = check_caps(attempts, local(CHI, 2026, 6, 3, 23, 59, 59), CALENDAR, CHICAGO)
    assert codes(d) == [Code.DAILY_CAP]
    assert d.next_free_at == local(CHI, 2026, 6, 5, 0, 0)


def test_calendar_needs_a_zone() -> None:
    with pytest.raises(ValueError, match="zone"):
        check_caps([], utc(2026, 6, 3, 12), CALENDAR, [])


# --- zero caps -------------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["rolling", "calendar"])
def test_zero_daily_cap_never_allows(period: str) -> None:
    d = check_caps([], utc(2026, 6, 3, 12), caps(per_day=0, period=period), CHICAGO)
    assert not d.allowed
    assert codes(d) == [Code.DAILY_CAP]
    assert d.next_free_at is None


@pytest.mark.parametrize("period", ["rolling", "calendar"])
def test_zero_weekly_cap_never_allows(period: str) -> None:
    d = check_caps([], utc(2026, 6, 3, 12), caps(per_week=0, period=period), CHICAGO)
    assert codes(d) == [Code.WEEKLY_CAP]
    assert d.next_free_at is None


def test_zero_cap_with_another_blocking_cap_is_still_never() -> None:
    now = utc(2026, 6, 3, 12)
    d = check_caps([now - timedelta(hours=1)], now, caps(per_day=1, per_week=0), CHICAGO)
    assert codes(d) == [Code.DAILY_CAP, Code.WEEKLY_CAP]
    assert d.next_free_at is None


# --- property --------------------------------------------------------------------------------

PROPERTY_ZONES = [
    [CandidateZone("America/Chicago", "area_code")],
    NY_AND_LA,
    [CandidateZone("America/Adak", "area_code"), CandidateZone("Pacific/Guam", "state")],
]
CAP_VARIANTS = [
    ROLLING,
    CALENDAR,
    caps(per_day=2, per_week=4),
    caps(per_day=2, per_week=4, period="calendar"),
]


@settings(max_examples=200, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    ),
    offsets=st.lists(st.integers(0, 8 * 24 * 3600), max_size=6),
    zone_index=st.integers(0, len(PROPERTY_ZONES) - 1),
    cap_index=st.integers(0, len(CAP_VARIANTS) - 1),
    seed=st.integers(0, 2**16),
)
def test_property_next_free_at_is_exact(
    now: datetime, offsets: list[int], zone_index: int, cap_index: int, seed: int
) -> None:
    attempts = [now - timedelta(seconds=s) for s in offsets]
    random.Random(seed).shuffle(attempts)
    zs, limits = PROPERTY_ZONES[zone_index], CAP_VARIANTS[cap_index]
    d = check_caps(attempts, now, limits, zs)
    assert d.allowed == (not d.reasons)
    if d.allowed:
        assert d.next_free_at is None
        return
    assert d.next_free_at is not None and d.next_free_at > now
    assert check_caps(attempts, d.next_free_at, limits, zs).allowed
    assert not check_caps(attempts, d.next_free_at - TICK, limits, zs).allowed
