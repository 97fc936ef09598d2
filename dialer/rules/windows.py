"""Calling windows in the called party's local time (47 CFR 64.1200(c)(1); PRODUCT.md rule 5).

Pure: plain data in, a decision with reasons out. No database, no I/O, no clock read --
``now`` is always a parameter.

The time zone comes from the phone number (area code) and from the patient's address; where
they disagree, or a number or state spans zones, the call must be inside the window in *every*
candidate zone, and no candidate zone may be on a quiet day.

A zone's window on a local date is the UTC interval ``[open, close)`` between two local wall
times. A wall time that does not exist (spring forward) or happens twice (fall back) is read
the stricter way: a window opens at the *later* and closes at the *earlier* of the two possible
instants. With the usual 08:00-21:00 windows no edge ever falls in a DST transition; the rule
only matters for odd custom windows, and then it never lets a call out of its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rruleset, rrulestr

from config.policy import DayWindows, Policy, Window, format_hhmm
from config.reasons import Code, Reason, reason
from dialer.rules.zones import CandidateZone
from dialer.rules.zones import tz as zone_info

__all__ = ["HORIZON", "WindowDecision", "check_window", "next_open"]

# How far ahead next_open looks before it gives up and answers None.
HORIZON: Final = timedelta(days=400)
# Quiet-day recurrence rules are anchored here (callee-local, naive).
RRULE_DTSTART: Final = datetime(2000, 1, 1)

_DAY = timedelta(days=1)
_MIDNIGHT = 24 * 60

# --------------------------------------------------------------------------------------------
# Effective windows and quiet days
# --------------------------------------------------------------------------------------------

_Span = tuple[int, int]  # minutes after local midnight, [start, end)
_Table = tuple[_Span | None, ...]  # per weekday (0 = Monday); None = closed all day


@lru_cache(maxsize=1024)
def _span(window: Window) -> _Span:
    return (window.start_min, window.end_min)


@lru_cache(maxsize=1024)
def _level_table(level: DayWindows) -> tuple[_Span | None, ...]:
    out: list[_Span | None] = []
    for wd in range(7):
        w = level.for_weekday(wd)
        out.append(None if w is None else _span(w))
    return tuple(out)


def _default_key(policy: Policy) -> DayWindows:
    """The policy-wide level as a hashable DayWindows (CallingHours holds a dict)."""
    ch = policy.calling_hours
    return _default_level(ch.start, ch.end, ch.mon, ch.tue, ch.wed, ch.thu, ch.fri, ch.sat, ch.sun)


@lru_cache(maxsize=64)
def _default_level(start: str | None, end: str | None, *days: Window | None) -> DayWindows:
    mon, tue, wed, thu, fri, sat, sun = days
    return DayWindows(
        start=start, end=end, mon=mon, tue=tue, wed=wed, thu=thu, fri=fri, sat=sat, sun=sun
    )


@lru_cache(maxsize=4096)
def _effective_table(
    default: DayWindows,
    state_levels: tuple[DayWindows, ...],
    campaign: Window | None,
    purpose: Window | None,
) -> _Table:
    """Intersection of every level, per weekday."""
    levels = [_level_table(default), *(_level_table(s) for s in state_levels)]
    fixed = [_span(w) for w in (campaign, purpose) if w is not None]
    out: list[_Span | None] = []
    for wd in range(7):
        start, end = 0, _MIDNIGHT
        for table in levels:
            s = table[wd]
            if s is not None:
                start, end = max(start, s[0]), min(end, s[1])
        for s in fixed:
            start, end = max(start, s[0]), min(end, s[1])
        out.append((start, end) if start < end else None)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Calendar:
    """A holidays calendar, hashed by its country so quiet-day answers can be cached."""

    country: str
    calendar: Any = field(compare=False, hash=False)


@lru_cache(maxsize=256)
def _rule(text: str) -> rrule | rruleset:
    # ignoretz: quiet days are callee-local calendar dates, compared naive.
    return rrulestr(text, dtstart=RRULE_DTSTART, cache=True, ignoretz=True)


@lru_cache(maxsize=65536)
def _is_quiet(calendar: _Calendar | None, rules: tuple[str, ...], day: date) -> bool:
    if calendar is not None and day in calendar.calendar:
        return True
    start = datetime.combine(day, time())
    for text in rules:
        hit = _rule(text).after(start, inc=True)
        if hit is not None and hit < start + _DAY:
            return True
    return False


def _local_instant(tz: ZoneInfo, day: date, minutes: int, *, later: bool) -> datetime:
    """UTC instant of local wall time ``minutes`` on ``day`` (1440 = next midnight).

    Nonexistent or repeated wall times have two readings (fold 0/1); take the later one
    for a window's opening and the earlier one for its closing.
    """
    if minutes >= _MIDNIGHT:
        day, minutes = day + _DAY, minutes - _MIDNIGHT
    naive = datetime.combine(day, time(minutes // 60, minutes % 60))
    a = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return max(a, b) if later else min(a, b)


@lru_cache(maxsize=65536)
def _interval(zone: str, day: date, span: _Span) -> tuple[datetime, datetime] | None:
    tz = zone_info(zone)
    opens = _local_instant(tz, day, span[0], later=True)
    closes = _local_instant(tz, day, span[1], later=False)
    return (opens, closes) if opens < closes else None


@dataclass(frozen=True, slots=True)
class _Rules:
    """Everything a decision needs, resolved once per call (all lookups cached)."""

    zones: tuple[str, ...]
    table: _Table
    calendar: _Calendar | None
    quiet_rules: tuple[str, ...]

    @classmethod
    def build(
        cls,
        zones: Sequence[CandidateZone],
        states: Sequence[str],
        policy: Policy,
        campaign_window: Window | None,
        purpose_window: Window | None,
    ) -> _Rules:
        if not zones:
            raise ValueError("at least one candidate zone is needed (see candidate_zones)")
        by_state = policy.calling_hours.states
        state_levels = tuple(
            by_state[s] for s in sorted({s.upper() for s in states}) if s.upper() in by_state
        )
        table = _effective_table(
            _default_key(policy), state_levels, campaign_window, purpose_window
        )
        country = policy.quiet_days.holidays
        calendar = _Calendar(country, policy.holiday_calendar) if country else None
        return cls(
            zones=tuple(dict.fromkeys(z.zone for z in zones)),
            table=table,
            calendar=calendar,
            quiet_rules=tuple(policy.quiet_days.rules),
        )

    def quiet(self, day: date) -> bool:
        if self.calendar is None and not self.quiet_rules:
            return False
        return _is_quiet(self.calendar, self.quiet_rules, day)

    def interval(self, zone: str, day: date) -> tuple[datetime, datetime] | None:
        span = self.table[day.weekday()]
        return None if span is None else _interval(zone, day, span)

    def open_interval(self, zone: str, day: date) -> tuple[datetime, datetime] | None:
        """The zone's calling interval on local ``day``; None when closed or quiet."""
        return None if self.quiet(day) else self.interval(zone, day)

    def inside(self, zone: str, t: datetime) -> tuple[datetime, datetime] | None:
        """The interval containing ``t`` in ``zone``, or None when the zone is closed at t."""
        iv = self.open_interval(zone, t.astimezone(zone_info(zone)).date())
        return iv if iv is not None and iv[0] <= t < iv[1] else None

    def zone_next_open(self, zone: str, t: datetime, limit: datetime) -> datetime | None:
        """Earliest instant >= t inside the zone's window (not quiet); None past ``limit``."""
        day = t.astimezone(zone_info(zone)).date()
        while True:
            iv = self.open_interval(zone, day)
            if iv is not None and iv[1] > t:
                opens = max(iv[0], t)
                return opens if opens <= limit else None
            if datetime.combine(day, time(), tzinfo=UTC) > limit + 2 * _DAY:
                return None
            day += _DAY

    def next_open(self, start: datetime) -> datetime | None:
        """Leapfrog: jump to the latest of the zones' next openings until all agree."""
        limit = start + HORIZON
        t = start
        while True:
            latest = t
            for zone in self.zones:
                opens = self.zone_next_open(zone, t, limit)
                if opens is None:
                    return None
                latest = max(latest, opens)
            if latest == t:
                return t
            t = latest

    def closes_at(self, t: datetime) -> datetime | None:
        """When the window (open now) next closes in any zone; None beyond the horizon."""
        limit = t + HORIZON
        while t <= limit:
            ends: list[datetime] = []
            for zone in self.zones:
                iv = self.inside(zone, t)
                if iv is None:
                    return t
                ends.append(iv[1])
            # Back-to-back windows (e.g. 00:00-24:00 every day) are one open stretch.
            t = min(ends)
        return None


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowDecision:
    allowed: bool
    reasons: list[Reason]
    # Earliest instant >= now inside the window in every zone, no zone on a quiet day
    # (None: none within HORIZON).
    next_open: datetime | None
    # When allowed: the earliest instant after now at which the window closes in any zone;
    # a lease must not outlive it.
    closes_at: datetime | None


def check_window(
    now: datetime,
    zones: Sequence[CandidateZone],
    states: Sequence[str],
    policy: Policy,
    campaign_window: Window | None = None,
    purpose_window: Window | None = None,
) -> WindowDecision:
    """May a call be placed at ``now``? 47 CFR 64.1200(c)(1), narrowed by state law, the
    purpose and the campaign; quiet days from the policy. All instants returned are UTC."""
    rules = _Rules.build(zones, states, policy, campaign_window, purpose_window)
    t = _utc(now)
    quiet: list[dict[str, str]] = []
    closed: list[dict[str, str | None]] = []
    for zone in rules.zones:
        local = t.astimezone(zone_info(zone))
        day = local.date()
        if rules.quiet(day):
            quiet.append({"zone": zone, "local_date": day.isoformat()})
        iv = rules.interval(zone, day)
        if iv is None or not iv[0] <= t < iv[1]:
            span = rules.table[day.weekday()]
            closed.append(
                {
                    "zone": zone,
                    "local_time": local.strftime("%H:%M"),
                    "window": None
                    if span is None
                    else f"{format_hhmm(span[0])}-{format_hhmm(span[1])}",
                }
            )
    if not quiet and not closed:
        return WindowDecision(True, [], t, rules.closes_at(t))
    opens = rules.next_open(t)
    when = opens.isoformat() if opens is not None else None
    reasons: list[Reason] = []
    if quiet:
        reasons.append(reason(Code.QUIET_DAY, details={"zones": quiet, "next_open": when}))
    if closed:
        reasons.append(
            reason(Code.OUTSIDE_CALLING_WINDOW, details={"zones": closed, "next_open": when})
        )
    return WindowDecision(False, reasons, opens, None)


def next_open(
    now: datetime,
    zones: Sequence[CandidateZone],
    states: Sequence[str],
    policy: Policy,
    campaign_window: Window | None = None,
    purpose_window: Window | None = None,
) -> datetime | None:
    """The earliest instant >= ``now`` (UTC) at which ``check_window`` allows the call."""
    rules = _Rules.build(zones, states, policy, campaign_window, purpose_window)
    return rules.next_open(_utc(now))
