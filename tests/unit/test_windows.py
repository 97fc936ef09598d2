"""Calling windows in every candidate zone (47 CFR 64.1200(c)(1); PRODUCT.md rule 5)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.policy import Policy, Window, load_policy, parse_policy
from config.reasons import Code
from dialer.rules.windows import check_window, next_open
from dialer.rules.zones import (
    STATE_ZONES,
    CandidateZone,
    applicable_states,
    candidate_zones,
    region_zones,
    state_for_area_code,
)

POLICY = load_policy()
CHI = ZoneInfo("America/Chicago")
NYC = ZoneInfo("America/New_York")

CHICAGO_NUMBER = "+13125550100"  # 312: Chicago, IL -> America/Chicago only
NEW_YORK_NUMBER = "+12125550100"  # 212: New York, NY -> America/New_York only
MIAMI_NUMBER = "+13055550100"  # 305: Florida -> America/New_York
DALLAS_NUMBER = "+12145550100"  # 214: Texas -> America/Chicago
PHOENIX_NUMBER = "+16025550100"  # 602: Arizona -> America/Phoenix
ALASKA_NUMBER = "+19075550100"  # 907: Alaska -> America/Adak + America/Anchorage
NO_ZONE_NUMBER = "+15555550100"  # area code 555 is unassigned: phonenumbers has no zone


def local(
    tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    """A wall-clock time in ``tz`` (fold=0 for repeated times)."""
    return datetime(y, mo, d, h, mi, s, us, tzinfo=tz)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def zones(*names: str) -> list[CandidateZone]:
    return [CandidateZone(n, "area_code") for n in names]


def policy_with(extra: str) -> Policy:
    return parse_policy(f'version = "test"\n{extra}'.encode())


def codes(decision: object) -> list[Code]:
    return [r.code for r in decision.reasons]  # type: ignore[attr-defined]


# --- candidate zones and applicable states ---------------------------------------------------


def test_chicago_number_has_one_zone() -> None:
    assert candidate_zones(CHICAGO_NUMBER, None, None) == [
        CandidateZone("America/Chicago", "area_code")
    ]
    assert applicable_states(CHICAGO_NUMBER, None, None) == ["IL"]


def test_new_york_number_with_california_address_has_both_zones() -> None:
    got = candidate_zones(NEW_YORK_NUMBER, "CA", "90210")
    assert got == [
        CandidateZone("America/New_York", "area_code"),
        CandidateZone("America/Los_Angeles", "postal_code"),
    ]
    assert [z.as_dict() for z in got] == [
        {"zone": "America/New_York", "source": "area_code"},
        {"zone": "America/Los_Angeles", "source": "postal_code"},
    ]
    assert applicable_states(NEW_YORK_NUMBER, "CA", "90210") == ["CA", "NY"]


def test_postal_code_wins_over_state_and_zip_plus_four_is_accepted() -> None:
    # A ZIP given: its zone, not every zone of the state.
    assert candidate_zones(NO_ZONE_NUMBER, "IN", "46204-1234") == [
        CandidateZone("America/Indiana/Indianapolis", "postal_code")
    ]


def test_unknown_postal_code_falls_back_to_the_state() -> None:
    assert candidate_zones(NO_ZONE_NUMBER, "OR", "ABCDE") == [
        CandidateZone("America/Los_Angeles", "state"),
        CandidateZone("America/Boise", "state"),
    ]


def test_indiana_state_only_has_two_zones() -> None:
    assert candidate_zones(NO_ZONE_NUMBER, "IN", None) == [
        CandidateZone("America/Indiana/Indianapolis", "state"),
        CandidateZone("America/Chicago", "state"),
    ]
    # A full state name or lower case is understood too.
    assert candidate_zones(NO_ZONE_NUMBER, "Indiana", None) == candidate_zones(
        NO_ZONE_NUMBER, "in", None
    )


def test_alaska_number_spans_two_zones() -> None:
    # What phonenumbers returns for 907 (sorted by the library): Adak first.
    assert candidate_zones(ALASKA_NUMBER, None, None) == [
        CandidateZone("America/Adak", "area_code"),
        CandidateZone("America/Anchorage", "area_code"),
    ]
    assert applicable_states(ALASKA_NUMBER, None, None) == ["AK"]


def test_duplicate_zones_keep_the_first_source_equivalent_zones_are_kept() -> None:
    # Miami number (New_York) + Atlanta ZIP (New_York): one zone, from the area code.
    assert candidate_zones(MIAMI_NUMBER, "GA", "30303") == [
        CandidateZone("America/New_York", "area_code")
    ]
    # Michigan: Detroit is equivalent to New_York, but both are listed.
    assert [z.zone for z in candidate_zones(NEW_YORK_NUMBER, "MI", None)] == [
        "America/New_York",
        "America/Detroit",
        "America/Chicago",
    ]


def test_no_usable_zone_uses_every_zone_of_the_region() -> None:
    got = candidate_zones(NO_ZONE_NUMBER, None, None)
    assert {z.source for z in got} == {"region"}
    assert [z.zone for z in got] == list(region_zones("US"))
    assert {"America/New_York", "Pacific/Honolulu", "America/Adak"} <= {z.zone for z in got}
    assert "America/Puerto_Rico" not in {z.zone for z in got}  # PR is its own region
    # Unknown state, unparseable number: still the region.
    assert candidate_zones("not a number", "ZZ", None) == got


def test_candidate_zones_returns_a_fresh_list() -> None:
    first = candidate_zones(CHICAGO_NUMBER, None, None)
    first.clear()
    assert candidate_zones(CHICAGO_NUMBER, None, None) != []


def test_state_table_covers_every_state_dc_and_territories() -> None:
    assert len(STATE_ZONES) == 50 + 1 + 5
    for code, names in STATE_ZONES.items():
        for name in names:
            ZoneInfo(name)  # loads
        assert names, code


@pytest.mark.parametrize(
    ("number", "state"),
    [
        ("+13145550100", "MO"),  # geocoder: "Missouri"
        ("+13125550100", "IL"),  # geocoder: "Chicago, IL"
        ("+12065550100", "WA"),  # geocoder: "Washington State"
        ("+12025550100", "DC"),  # geocoder: "Washington D.C."
        ("+17875550100", "PR"),
        ("+16715550100", "GU"),
        ("+13405550100", "VI"),
        ("+16705550100", "MP"),
        ("+14165550100", None),  # Toronto: not a US state
        ("+442071234567", None),
        ("garbage", None),
    ],
)
def test_state_for_area_code(number: str, state: str | None) -> None:
    assert state_for_area_code(number) == state


def test_applicable_states_merges_patient_postal_and_area_code() -> None:
    # A Miami number for a patient who lives in Atlanta: Florida's rules still apply.
    assert applicable_states(MIAMI_NUMBER, "GA", "30303") == ["FL", "GA"]
    assert applicable_states(MIAMI_NUMBER, None, "63101") == ["FL", "MO"]
    assert applicable_states(NO_ZONE_NUMBER, None, None) == []


# --- the window in one zone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "allowed", "expected_next_open", "expected_closes_at"),
    [
        (7, 59, False, utc(2026, 6, 3, 13, 0), None),
        (8, 0, True, utc(2026, 6, 3, 13, 0), utc(2026, 6, 4, 2, 0)),
        (20, 59, True, utc(2026, 6, 4, 1, 59), utc(2026, 6, 4, 2, 0)),
        (21, 0, False, utc(2026, 6, 4, 13, 0), None),
    ],
)
def test_chicago_window_edges(
    hour: int,
    minute: int,
    allowed: bool,
    expected_next_open: datetime,
    expected_closes_at: datetime | None,
) -> None:
    now = local(CHI, 2026, 6, 3, hour, minute)  # a Wednesday, CDT (UTC-5)
    zs = candidate_zones(CHICAGO_NUMBER, None, None)
    states = applicable_states(CHICAGO_NUMBER, None, None)
    d = check_window(now, zs, states, POLICY)
    assert d.allowed is allowed
    assert d.next_open == expected_next_open
    assert d.closes_at == expected_closes_at
    assert next_open(now, zs, states, POLICY) == expected_next_open
    assert d.next_open is not None and d.next_open.tzinfo is UTC
    if allowed:
        assert d.reasons == []
    else:
        assert codes(d) == [Code.OUTSIDE_CALLING_WINDOW]
        details = d.reasons[0].details
        assert details is not None
        assert details["zones"] == [
            {
                "zone": "America/Chicago",
                "local_time": f"{hour:02d}:{minute:02d}",
                "window": "08:00-21:00",
            }
        ]
        assert details["next_open"] == expected_next_open.isoformat()


def test_seconds_count_window_end_is_exclusive() -> None:
    zs = zones("America/Chicago")
    assert check_window(utc(2026, 6, 4, 1, 59, 59, 999999), zs, [], POLICY).allowed
    assert not check_window(utc(2026, 6, 4, 2, 0), zs, [], POLICY).allowed
    assert not check_window(utc(2026, 6, 3, 12, 59, 59, 999999), zs, [], POLICY).allowed


def test_now_in_any_time_zone_gives_utc_results() -> None:
    tokyo = datetime(2026, 6, 3, 21, 59, tzinfo=ZoneInfo("Asia/Tokyo"))  # 12:59Z
    d = check_window(tokyo, zones("America/Chicago"), [], POLICY)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 3, 13, 0)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_window(datetime(2026, 6, 3, 12), zones("America/Chicago"), [], POLICY)


def test_no_zones_is_refused() -> None:
    with pytest.raises(ValueError, match="candidate zone"):
        check_window(utc(2026, 6, 3, 15), [], [], POLICY)


# --- several zones ---------------------------------------------------------------------------


def test_new_york_number_california_address_window_is_11_to_21_eastern() -> None:
    zs = candidate_zones(NEW_YORK_NUMBER, "CA", "90210")
    states = applicable_states(NEW_YORK_NUMBER, "CA", "90210")
    # 10:59 EDT = 07:59 PDT: closed in Los Angeles.
    d = check_window(local(NYC, 2026, 6, 3, 10, 59), zs, states, POLICY)
    assert not d.allowed
    assert d.next_open == local(NYC, 2026, 6, 3, 11, 0) == utc(2026, 6, 3, 15, 0)
    assert d.reasons[0].details is not None
    assert [z["zone"] for z in d.reasons[0].details["zones"]] == ["America/Los_Angeles"]
    # 11:00 EDT: open everywhere, until 21:00 EDT (18:00 PDT).
    d = check_window(local(NYC, 2026, 6, 3, 11, 0), zs, states, POLICY)
    assert d.allowed
    assert d.closes_at == utc(2026, 6, 4, 1, 0)
    # 21:00 EDT: closed in New York; next open is 11:00 EDT the next day.
    d = check_window(local(NYC, 2026, 6, 3, 21, 0), zs, states, POLICY)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 4, 15, 0)


def test_indiana_state_only_window_is_09_to_21_eastern() -> None:
    zs = candidate_zones(NO_ZONE_NUMBER, "IN", None)
    # 08:30 EDT = 07:30 CDT.
    d = check_window(utc(2026, 6, 3, 12, 30), zs, ["IN"], POLICY)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 3, 13, 0)  # 08:00 CDT = 09:00 EDT
    d = check_window(utc(2026, 6, 3, 13, 0), zs, ["IN"], POLICY)
    assert d.allowed
    assert d.closes_at == utc(2026, 6, 4, 1, 0)  # 21:00 EDT


@pytest.mark.parametrize("day", [date(2026, 7, 15), date(2026, 1, 14)])
def test_arizona_has_no_dst(day: date) -> None:
    zs = candidate_zones(PHOENIX_NUMBER, None, None)
    assert zs == [CandidateZone("America/Phoenix", "area_code")]
    start = datetime(day.year, day.month, day.day, 14, 59, tzinfo=UTC)
    d = check_window(start, zs, ["AZ"], POLICY)
    assert not d.allowed
    # 08:00 MST is 15:00 UTC in summer and in winter alike.
    assert d.next_open == datetime(day.year, day.month, day.day, 15, 0, tzinfo=UTC)
    d = check_window(d.next_open, zs, ["AZ"], POLICY)
    assert d.closes_at == datetime(day.year, day.month, day.day, 4, 0, tzinfo=UTC) + timedelta(
        days=1
    )


def test_alaska_window_is_the_intersection_of_adak_and_anchorage() -> None:
    zs = candidate_zones(ALASKA_NUMBER, None, None)
    # Summer: Anchorage AKDT (UTC-8) opens 16:00Z, Adak HDT (UTC-9) opens 17:00Z.
    d = check_window(utc(2026, 6, 3, 16, 30), zs, ["AK"], POLICY)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 3, 17, 0)
    d = check_window(utc(2026, 6, 3, 17, 0), zs, ["AK"], POLICY)
    assert d.allowed
    assert d.closes_at == utc(2026, 6, 4, 5, 0)  # 21:00 AKDT


def test_region_fallback_is_the_strictest_intersection() -> None:
    zs = candidate_zones(NO_ZONE_NUMBER, None, None)
    # Summer: last to open is Honolulu (08:00 HST = 18:00Z); first to close is
    # New York / Detroit (21:00 EDT = 01:00Z).
    d = check_window(utc(2026, 6, 3, 12, 0), zs, [], POLICY)
    assert d.next_open == utc(2026, 6, 3, 18, 0)
    d = check_window(utc(2026, 6, 3, 18, 0), zs, [], POLICY)
    assert d.allowed
    assert d.closes_at == utc(2026, 6, 4, 1, 0)


def test_disjoint_windows_never_open() -> None:
    # 08:00-09:00 in New York and in Los Angeles never overlap.
    zs = zones("America/New_York", "America/Los_Angeles")
    narrow = Window(start="08:00", end="09:00")
    d = check_window(utc(2026, 6, 3, 12, 0), zs, [], POLICY, campaign_window=narrow)
    assert not d.allowed
    assert d.next_open is None
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["next_open"] is None


# --- DST -------------------------------------------------------------------------------------


def test_spring_forward_day_opens_at_0800_cdt() -> None:
    zs = zones("America/Chicago")
    # 2026-03-08 00:00 CST; the clocks jump 02:00 CST -> 03:00 CDT.
    d = check_window(utc(2026, 3, 8, 6, 0), zs, [], POLICY)
    assert d.next_open == local(CHI, 2026, 3, 8, 8, 0) == utc(2026, 3, 8, 13, 0)
    # The day before, 08:00 CST was 14:00Z.
    assert next_open(utc(2026, 3, 7, 6, 0), zs, [], POLICY) == utc(2026, 3, 7, 14, 0)
    assert check_window(utc(2026, 3, 8, 13, 0), zs, [], POLICY).closes_at == utc(2026, 3, 9, 2, 0)
    assert not check_window(utc(2026, 3, 8, 12, 59), zs, [], POLICY).allowed


def test_fall_back_day_opens_at_0800_cst() -> None:
    zs = zones("America/Chicago")
    # 2026-11-01 00:00 CDT; the clocks fall back 02:00 CDT -> 01:00 CST.
    d = check_window(utc(2026, 11, 1, 5, 0), zs, [], POLICY)
    assert d.next_open == local(CHI, 2026, 11, 1, 8, 0) == utc(2026, 11, 1, 14, 0)
    assert next_open(utc(2026, 10, 31, 5, 0), zs, [], POLICY) == utc(2026, 10, 31, 13, 0)
    assert check_window(utc(2026, 11, 1, 14, 0), zs, [], POLICY).closes_at == utc(2026, 11, 2, 3, 0)
    assert not check_window(utc(2026, 11, 1, 13, 59), zs, [], POLICY).allowed


WIDE = policy_with('[calling_hours]\nstart = "00:00"\nend = "24:00"\n[quiet_days]\nholidays = ""')


def test_window_edge_on_a_nonexistent_wall_time_is_read_strictly() -> None:
    zs = zones("America/Chicago")
    # 02:30 does not exist on 2026-03-08: the window opens at the later reading (03:30 CDT).
    w = Window(start="02:30", end="23:00")
    assert next_open(utc(2026, 3, 8, 6, 0), zs, [], WIDE, w) == utc(2026, 3, 8, 8, 30)
    # ... and a window closing at 02:30 closes at the earlier reading (01:30 CST).
    w = Window(start="00:00", end="02:30")
    d = check_window(utc(2026, 3, 8, 6, 0), zs, [], WIDE, w)
    assert d.closes_at == utc(2026, 3, 8, 7, 30)


def test_window_edge_on_a_repeated_wall_time_is_read_strictly() -> None:
    zs = zones("America/Chicago")
    # 01:30 happens twice on 2026-11-01 (06:30Z CDT, 07:30Z CST).
    w = Window(start="01:30", end="23:00")
    assert next_open(utc(2026, 11, 1, 5, 0), zs, [], WIDE, w) == utc(2026, 11, 1, 7, 30)
    w = Window(start="00:00", end="01:30")
    d = check_window(utc(2026, 11, 1, 5, 0), zs, [], WIDE, w)
    assert d.closes_at == utc(2026, 11, 1, 6, 30)


# --- state rules -----------------------------------------------------------------------------


def test_texas_sunday_is_12_to_21() -> None:
    zs = candidate_zones(DALLAS_NUMBER, None, None)
    states = applicable_states(DALLAS_NUMBER, None, None)
    assert states == ["TX"]
    sunday_1159 = local(CHI, 2026, 6, 7, 11, 59)
    d = check_window(sunday_1159, zs, states, POLICY)
    assert not d.allowed
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zones"][0]["window"] == "12:00-21:00"
    assert d.next_open == utc(2026, 6, 7, 17, 0)
    # Monday: 09:00-21:00.
    d = check_window(local(CHI, 2026, 6, 8, 8, 30), zs, states, POLICY)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 8, 14, 0)


def test_florida_ends_at_2000() -> None:
    zs = candidate_zones(MIAMI_NUMBER, None, None)
    states = applicable_states(MIAMI_NUMBER, None, None)
    assert states == ["FL"]
    d = check_window(local(NYC, 2026, 6, 3, 19, 59), zs, states, POLICY)
    assert d.allowed
    assert d.closes_at == utc(2026, 6, 4, 0, 0)
    d = check_window(local(NYC, 2026, 6, 3, 20, 0), zs, states, POLICY)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 4, 12, 0)


def test_area_code_state_rule_applies_when_the_patient_lives_elsewhere() -> None:
    # Florida number, patient in Georgia: Florida's 20:00 end still applies.
    zs = candidate_zones(MIAMI_NUMBER, "GA", "30303")
    states = applicable_states(MIAMI_NUMBER, "GA", "30303")
    d = check_window(local(NYC, 2026, 6, 3, 20, 30), zs, states, POLICY)
    assert not d.allowed
    assert codes(d) == [Code.OUTSIDE_CALLING_WINDOW]
    # Without the area-code state, 20:30 would have been fine.
    assert check_window(local(NYC, 2026, 6, 3, 20, 30), zs, ["GA"], POLICY).allowed


def test_states_without_a_rule_and_lower_case_states() -> None:
    zs = zones("America/Chicago")
    now = local(CHI, 2026, 6, 7, 11, 0)  # Sunday 11:00
    assert check_window(now, zs, ["IL"], POLICY).allowed
    assert not check_window(now, zs, ["tx"], POLICY).allowed


# --- quiet days ------------------------------------------------------------------------------


def test_thanksgiving_is_quiet_and_next_open_skips_it() -> None:
    zs = zones("America/Chicago")
    d = check_window(local(CHI, 2026, 11, 26, 10, 0), zs, [], POLICY)
    assert not d.allowed
    assert codes(d) == [Code.QUIET_DAY]
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zones"] == [
        {"zone": "America/Chicago", "local_date": "2026-11-26"}
    ]
    assert d.next_open == utc(2026, 11, 27, 14, 0)  # Friday 08:00 CST
    # From the evening before: the holiday is skipped too.
    assert next_open(local(CHI, 2026, 11, 25, 21, 0), zs, [], POLICY) == utc(2026, 11, 27, 14, 0)


def test_quiet_day_and_outside_window_are_both_listed_quiet_first() -> None:
    d = check_window(local(CHI, 2026, 11, 26, 6, 0), zones("America/Chicago"), [], POLICY)
    assert codes(d) == [Code.QUIET_DAY, Code.OUTSIDE_CALLING_WINDOW]


def test_observed_holiday_is_quiet() -> None:
    # 2026-07-04 is a Saturday: Friday 07-03 is the observed holiday.
    d = check_window(local(CHI, 2026, 7, 3, 12, 0), zones("America/Chicago"), [], POLICY)
    assert codes(d) == [Code.QUIET_DAY]


def test_holiday_in_one_zone_only_blocks() -> None:
    # 2026-11-27 00:30 EST is 23:30 CST on 11-26: still Thanksgiving in Chicago;
    # with the wide policy the holiday is the only obstacle.
    wide_us = policy_with('[calling_hours]\nstart = "00:00"\nend = "24:00"')
    zs = zones("America/New_York", "America/Chicago")
    d = check_window(local(NYC, 2026, 11, 27, 0, 30), zs, [], wide_us)
    assert codes(d) == [Code.QUIET_DAY]
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zones"] == [
        {"zone": "America/Chicago", "local_date": "2026-11-26"}
    ]
    assert d.next_open == local(CHI, 2026, 11, 27, 0, 0) == utc(2026, 11, 27, 6, 0)


def test_custom_sunday_rule_is_skipped() -> None:
    quiet_sundays = policy_with('[quiet_days]\nrules = ["FREQ=WEEKLY;BYDAY=SU"]')
    zs = zones("America/Chicago")
    saturday_night = local(CHI, 2026, 6, 6, 21, 0)
    d = check_window(saturday_night, zs, [], quiet_sundays)
    assert codes(d) == [Code.OUTSIDE_CALLING_WINDOW]
    assert d.next_open == utc(2026, 6, 8, 13, 0)  # Monday 08:00 CDT
    d = check_window(local(CHI, 2026, 6, 7, 12, 0), zs, [], quiet_sundays)
    assert codes(d) == [Code.QUIET_DAY]
    assert d.next_open == utc(2026, 6, 8, 13, 0)
    # The default policy has no Sunday rule.
    assert check_window(local(CHI, 2026, 6, 7, 12, 0), zs, [], POLICY).allowed


def test_quiet_every_day_means_never() -> None:
    never = policy_with('[quiet_days]\nrules = ["FREQ=DAILY"]')
    d = check_window(utc(2026, 6, 3, 15, 0), zones("America/Chicago"), [], never)
    assert not d.allowed
    assert d.next_open is None


# --- campaign / purpose windows and closes_at -----------------------------------------------


def test_campaign_window_narrows() -> None:
    zs = zones("America/Chicago")
    campaign = Window(start="10:00", end="16:00")
    d = check_window(local(CHI, 2026, 6, 3, 9, 0), zs, [], POLICY, campaign_window=campaign)
    assert not d.allowed
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zones"][0]["window"] == "10:00-16:00"
    assert d.next_open == utc(2026, 6, 3, 15, 0)
    d = check_window(local(CHI, 2026, 6, 3, 15, 59), zs, [], POLICY, campaign_window=campaign)
    assert d.allowed
    assert d.closes_at == utc(2026, 6, 3, 21, 0)
    # A purpose window narrows further.
    purpose = Window(start="09:00", end="12:00")
    d = check_window(local(CHI, 2026, 6, 3, 12, 0), zs, [], POLICY, campaign, purpose)
    assert not d.allowed
    assert d.next_open == utc(2026, 6, 4, 15, 0)


def test_campaign_window_with_a_state_day_rule_can_close_the_day() -> None:
    # Texas Sunday 12:00-21:00 and a 09:00-12:00 campaign: nothing on Sunday.
    zs = zones("America/Chicago")
    campaign = Window(start="09:00", end="12:00")
    d = check_window(local(CHI, 2026, 6, 7, 10, 0), zs, ["TX"], POLICY, campaign)
    assert not d.allowed
    assert d.reasons[0].details is not None
    assert d.reasons[0].details["zones"][0]["window"] is None
    assert d.next_open == utc(2026, 6, 8, 14, 0)  # Monday 09:00 CDT


def test_round_the_clock_window_closes_only_at_a_quiet_day() -> None:
    round_the_clock = policy_with(
        '[calling_hours]\nstart = "00:00"\nend = "24:00"\n'
        '[quiet_days]\nholidays = ""\nrules = ["FREQ=WEEKLY;BYDAY=SU"]'
    )
    d = check_window(local(CHI, 2026, 6, 3, 12, 0), zones("America/Chicago"), [], round_the_clock)
    assert d.allowed
    assert d.closes_at == local(CHI, 2026, 6, 7, 0, 0)
    d = check_window(local(CHI, 2026, 6, 3, 12, 0), zones("America/Chicago"), [], WIDE)
    assert d.allowed
    assert d.closes_at is None  # never within the horizon


# --- property tests --------------------------------------------------------------------------

PROPERTY_ZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "America/Adak",
    "Pacific/Honolulu",
    "America/St_Johns",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Havana",
]
PROPERTY_POLICIES = [
    POLICY,
    policy_with('[quiet_days]\nrules = ["FREQ=WEEKLY;BYDAY=SU"]'),
    WIDE,
]


@st.composite
def windows(draw: st.DrawFn) -> Window | None:
    if draw(st.booleans()):
        return None
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(start + 1, 24 * 60))
    return Window(
        start=f"{start // 60:02d}:{start % 60:02d}", end=f"{end // 60:02d}:{end % 60:02d}"
    )


instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


def _wall_window(
    policy: Policy, states: list[str], campaign: Window | None, wd: int
) -> tuple[int, int]:
    start, end = 0, 24 * 60
    levels = [policy.calling_hours.for_weekday(wd)]
    levels += [policy.calling_hours.states[s].for_weekday(wd) for s in states]
    levels.append(campaign)
    for w in levels:
        if w is not None:
            start, end = max(start, w.start_min), min(end, w.end_min)
    return start, end


def _quiet(policy: Policy, day: date) -> bool:
    cal = policy.holiday_calendar
    if cal is not None and day in cal:
        return True
    return bool(policy.quiet_days.rules) and day.weekday() == 6


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    now=instants,
    zone_names=st.lists(st.sampled_from(PROPERTY_ZONES), min_size=1, max_size=4, unique=True),
    states=st.lists(st.sampled_from(["FL", "TX", "OK", "MD", "CA"]), max_size=2, unique=True),
    policy_index=st.integers(0, len(PROPERTY_POLICIES) - 1),
    campaign=windows(),
    data=st.data(),
)
def test_property_allowed_means_inside_everywhere_and_next_open_is_exact(
    now: datetime,
    zone_names: list[str],
    states: list[str],
    policy_index: int,
    campaign: Window | None,
    data: st.DataObject,
) -> None:
    policy = PROPERTY_POLICIES[policy_index]
    zs = zones(*zone_names)
    states = [s for s in states if s in policy.calling_hours.states]
    d = check_window(now, zs, states, policy, campaign)

    if d.allowed:
        assert d.next_open == now
        for name in zone_names:
            wall = now.astimezone(ZoneInfo(name))
            start, end = _wall_window(policy, states, campaign, wall.weekday())
            seconds = wall.hour * 3600 + wall.minute * 60 + wall.second + wall.microsecond / 1e6
            assert start * 60 <= seconds < end * 60, name
            assert not _quiet(policy, wall.date()), name
        assert d.closes_at is None or d.closes_at > now
        if d.closes_at is not None:
            assert check_window(
                d.closes_at - timedelta(microseconds=1), zs, states, policy, campaign
            ).allowed
            assert not check_window(d.closes_at, zs, states, policy, campaign).allowed
        return

    opens = d.next_open
    assert opens == next_open(now, zs, states, policy, campaign)
    if opens is None:
        return
    assert opens > now
    assert opens.tzinfo is UTC
    assert check_window(opens, zs, states, policy, campaign).allowed
    # Exact: the instant just before is still closed, as are minute-aligned samples between.
    assert not check_window(opens - timedelta(microseconds=1), zs, states, policy, campaign).allowed
    first_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    span_minutes = int((opens - first_minute).total_seconds() // 60)
    if span_minutes > 0:
        samples = {0, span_minutes - 1}
        samples |= set(data.draw(st.lists(st.integers(0, span_minutes - 1), max_size=5)))
        for m in sorted(samples):
            t = first_minute + timedelta(minutes=m)
            if t < opens:
                assert not check_window(t, zs, states, policy, campaign).allowed, t


def _state_via_geocoder(phone_e164: str) -> str | None:
    """The former dialer.windows.state_for_area_code: the geocoder, live."""
    import phonenumbers
    from phonenumbers import geocoder

    from dialer.rules.zones import _TERRITORIES, state_from_description

    try:
        number = phonenumbers.parse(phone_e164, "US")
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != 1:
        return None
    region = phonenumbers.region_code_for_number(number)
    if region in _TERRITORIES:
        return str(region)
    return state_from_description(str(geocoder.description_for_valid_number(number, "en")))


def test_area_table_answers_exactly_like_the_geocoder() -> None:
    """Every +1 prefix the geocoder describes (padded two ways into a full number), and
    random numbers: the table gives the state the geocoder's description names."""
    import random

    from phonenumbers.geodata import GEOCODE_DATA

    from dialer.rules import zones

    zones.use_area_table(zones.area_table())
    rng = random.Random(11)
    prefixes = [p for p in GEOCODE_DATA if p.startswith("1")]
    numbers = []
    for p in prefixes:
        numbers.append("+" + (p + "0" * 11)[:11])
        numbers.append("+" + p + "".join(rng.choice("0123456789") for _ in range(11 - len(p))))
    numbers += [f"+1{rng.randint(2000000000, 9999999999)}" for _ in range(5000)]
    # Every +1 region's example number (the territories' among them: their answer is the
    # region, not the table's), and the same area codes with an invalid exchange.
    import phonenumbers

    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
        ex = phonenumbers.example_number(region)
        if ex is not None:
            e164 = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
            numbers += [e164, e164[:5] + "0" + e164[6:], e164[:5] + "1" + e164[6:]]
    mismatches = [n for n in numbers
                  if zones.state_for_area_code(n) != _state_via_geocoder(n)]
    assert mismatches == []
    states = {zones.state_for_area_code(n) for n in numbers}
    assert {"MO", "NJ", "NY", "CA", "TX", "PR", "GU", "VI", "AS", "MP", None} <= states
    assert zones.state_for_area_code("+12015550123") == "NJ"
