"""Frequency caps per phone number: 47 CFR 64.1200(a)(9)(iv)(F), PRODUCT.md rule 4.

At most ``per_day`` attempts a day and ``per_week`` a week to a number, voice and text
combined, across all campaigns. Pure: the caller passes the counted attempts (a lease counts;
a lease released undialled does not) and ``now``.

``period = "rolling"``: a day is the 24 h before ``now``, a week the 7 x 24 h before ``now``.
``period = "calendar"``: the callee-local date and ISO week (Monday start); with several
candidate zones an attempt counts for each zone's own local day/week, and the number is
blocked when it is blocked in any zone.

Attempts stamped after ``now`` (clock skew between instances) count as if made now: the
stricter reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo

from config.policy import Caps
from config.reasons import Code, Reason, reason
from dialer.rules.zones import CandidateZone

__all__ = ["CapDecision", "check_caps"]

ROLLING_DAY: Final = timedelta(hours=24)
ROLLING_WEEK: Final = timedelta(days=7)
# Each step of the next_free_at search passes an attempt or a local day boundary.
_MAX_STEPS: Final = 1000


@dataclass(frozen=True, slots=True)
class CapDecision:
    allowed: bool
    reasons: list[Reason]
    # When blocked: the earliest instant at which every blocking cap has freed up
    # (None when a cap is 0: never).
    next_free_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Block:
    code: Code
    count: int
    limit: int
    frees_at: datetime | None  # None: a zero cap, never frees
    zone: str | None = None


@lru_cache(maxsize=512)
def _tz(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware datetimes")
    return value.astimezone(UTC)


def _local_midnight(tz: ZoneInfo, day: date) -> datetime:
    """The first instant of local ``day`` (fold=0: the first reading of a repeated 00:00,
    and the transition instant when a DST gap starts at 00:00)."""
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def _rolling_block(
    code: Code, attempts: Sequence[datetime], t: datetime, span: timedelta, limit: int
) -> _Block | None:
    inside = [a for a in attempts if a > t - span]  # sorted ascending
    if len(inside) < limit:
        return None
    if limit == 0:
        return _Block(code, len(inside), limit, None)
    # Blocked until the oldest len - limit + 1 attempts have aged out.
    return _Block(code, len(inside), limit, inside[len(inside) - limit] + span)


def _calendar_blocks(
    attempts: Sequence[datetime], t: datetime, caps: Caps, zones: Sequence[str]
) -> list[_Block]:
    daily: _Block | None = None
    weekly: _Block | None = None
    for zone in zones:
        tz = _tz(zone)
        today = t.astimezone(tz).date()
        week = today.isocalendar()[:2]
        days = [min(a, t).astimezone(tz).date() for a in attempts]
        n_day = sum(1 for d in days if d == today)
        n_week = sum(1 for d in days if d.isocalendar()[:2] == week)
        if n_day >= caps.per_day:
            frees = None if caps.per_day == 0 else _local_midnight(tz, today + timedelta(days=1))
            daily = _worse(daily, _Block(Code.DAILY_CAP, n_day, caps.per_day, frees, zone))
        if n_week >= caps.per_week:
            monday = today + timedelta(days=7 - today.weekday())
            frees = None if caps.per_week == 0 else _local_midnight(tz, monday)
            weekly = _worse(weekly, _Block(Code.WEEKLY_CAP, n_week, caps.per_week, frees, zone))
    return [b for b in (daily, weekly) if b is not None]


def _worse(a: _Block | None, b: _Block) -> _Block:
    """Of two zones' blocks for the same cap, the one that frees last."""
    if a is None or a.frees_at is None:
        return a or b
    if b.frees_at is None or b.frees_at > a.frees_at:
        return b
    return a


def _blocks(
    attempts: Sequence[datetime], t: datetime, caps: Caps, zones: Sequence[str]
) -> list[_Block]:
    if caps.period == "calendar":
        return _calendar_blocks(attempts, t, caps, zones)
    out = [
        _rolling_block(Code.DAILY_CAP, attempts, t, ROLLING_DAY, caps.per_day),
        _rolling_block(Code.WEEKLY_CAP, attempts, t, ROLLING_WEEK, caps.per_week),
    ]
    return [b for b in out if b is not None]


def _next_free(
    blocks: list[_Block], attempts: Sequence[datetime], caps: Caps, zones: Sequence[str]
) -> datetime | None:
    # Counts only fall as time passes, so the latest freeing instant of the blocking caps is
    # a lower bound; re-check there (attempts dated ahead of now may still block) and repeat.
    for _ in range(_MAX_STEPS):
        if any(b.frees_at is None for b in blocks):
            return None
        t = max(b.frees_at for b in blocks if b.frees_at is not None)
        blocks = _blocks(attempts, t, caps, zones)
        if not blocks:
            return t
    return None  # pragma: no cover - unreachable with finite attempts


def check_caps(
    attempt_times: Sequence[datetime],
    now: datetime,
    caps: Caps,
    zones: Sequence[CandidateZone],
) -> CapDecision:
    """May one more attempt be made to this number at ``now``? All instants returned are UTC."""
    t = _utc(now, "now")
    attempts = sorted(_utc(a, "attempt_times") for a in attempt_times)
    zone_names = tuple(dict.fromkeys(z.zone for z in zones))
    if caps.period == "calendar" and not zone_names:
        raise ValueError("calendar caps need at least one candidate zone")
    blocks = _blocks(attempts, t, caps, zone_names)
    if not blocks:
        return CapDecision(True, [], None)
    free_at = _next_free(blocks, attempts, caps, zone_names)
    reasons: list[Reason] = []
    for b in blocks:
        details: dict[str, Any] = {
            "period": caps.period,
            "count": b.count,
            "limit": b.limit,
            "frees_at": b.frees_at.isoformat() if b.frees_at is not None else None,
        }
        if b.zone is not None:
            details["zone"] = b.zone
        reasons.append(reason(b.code, details=details))
    return CapDecision(False, reasons, free_at)
