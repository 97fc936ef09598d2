"""The consent decision: pure, side-effect free, time as a parameter.

Rules (PRODUCT.md 1-2; 47 CFR 64.1200(a)(1)-(2), (a)(9)(iv)(H); FCC 15-72 paras 141-147):

* Only consent obtained at or before the instant counts.
* A revocation received at or after a consent was obtained revokes it; a number stays
  revoked until a *newer* consent is obtained.
* Oral consent is stored but never satisfies an auto-dialer check (callgate requires
  written or e-signed consent for every channel it dials).
* A consent past ``expires_at`` no longer counts.
* The consent must cover the channel and the purpose (``*`` covers every purpose).
* A consent does not pass to the next subscriber of a number: a Reassigned Numbers Database
  answer ``yes`` (permanently disconnected on or after the date asked) for a date on or
  after the consent's date invalidates it (NUMBER_REASSIGNED, 47 CFR 64.1200(m)); a ``yes``
  for an earlier date decides nothing (the disconnection may predate the consent).

A call may be recorded only when a consent that covers it also says ``recording``; the
decision also says when the number was last found not reassigned since a covering consent
(``reassigned_checked_at``: the latest ``queried_at`` of a ``no`` for a date on or before
the consent's date), for the policy's ``[reassigned] require_answer_within_days``.

When no consent satisfies all of these, the reason is the one of the consent that came
closest (checks in the order above); with no consent obtained by the instant, NO_CONSENT.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NamedTuple

from config.reasons import Code, Reason, reason

WRITTEN_METHODS = frozenset({"written", "electronic_signature"})
METHODS = ("written", "electronic_signature", "oral")
CHANNELS = ("autodialed_voice", "prerecorded_voice", "sms")
REVOCATION_SOURCES = (
    "ivr_keypress",
    "agent",
    "sms_stop",
    "web",
    "letter",
    "in_person",
    "voicemail",
    "email",
    "wrong_number",
)


class ConsentFact(NamedTuple):
    """A consent as the decision needs it. (A named tuple: intake builds one per consent of
    every number on a list, and a frozen dataclass costs three times as much to make.)"""

    id: str
    method: str
    channels: frozenset[str]
    purposes: frozenset[str]
    obtained_at: datetime
    expires_at: datetime | None = None
    # The patient's consent to having calls recorded.
    recording: bool = False
    # From the number's Reassigned Numbers Database answers (reassigned_terms).
    reassigned: bool = False
    reassigned_checked_at: datetime | None = None


class RevocationFact(NamedTuple):
    received_at: datetime


class AnswerFact(NamedTuple):
    """A Reassigned Numbers Database answer: was the number permanently disconnected on or
    after ``date``? ``yes`` or ``no`` (``no_data`` decides nothing and is not read)."""

    date: date
    answer: str
    queried_at: datetime


def consent_day(obtained_at: datetime) -> date:
    """The date a consent is asked about in the Reassigned Numbers Database: the UTC date of
    its ``obtained_at`` (what ``callgate rnd export`` writes)."""
    return obtained_at.astimezone(UTC).date()


def reassigned_terms(
    obtained_at: datetime, answers: Iterable[AnswerFact]
) -> tuple[bool, datetime | None]:
    """What a number's answers say about a consent obtained at ``obtained_at``:
    (reassigned since, latest ``queried_at`` of a ``no`` that covers it).

    ``yes`` for a date D means the number was permanently disconnected on or after D (FCC
    DA 21-1649): with D on or after the consent's date, after the consent was given. ``no``
    for D means not disconnected since D: it covers the consent only for D on or before the
    consent's date (a later D leaves the days between unasked). Dates are whole days, so the
    consent's own date counts both ways, conservatively for ``yes``."""
    day = consent_day(obtained_at)
    reassigned = False
    checked: datetime | None = None
    for a in answers:
        if a.answer == "yes":
            if a.date >= day:
                reassigned = True
        elif a.answer == "no" and a.date <= day and (checked is None or a.queried_at > checked):
            checked = a.queried_at
    return reassigned, checked


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    allowed: bool
    reasons: list[Reason] = field(default_factory=list)
    consent_id: str | None = None
    # Whether a consent covering the call also consents to recording it.
    recording: bool = False
    # The latest RND "no" covering a consent that covers the call (see reassigned_terms).
    reassigned_checked_at: datetime | None = None


# The stage at which a consent fails, in check order; higher got further.
_STAGES: tuple[Code, ...] = (
    Code.CONSENT_REVOKED,
    Code.NUMBER_REASSIGNED,
    Code.CONSENT_NOT_WRITTEN,
    Code.CONSENT_EXPIRED,
    Code.CONSENT_CHANNEL_MISMATCH,
    Code.CONSENT_PURPOSE_MISMATCH,
)


def _failed_stage(
    c: ConsentFact, revoked_at: Sequence[datetime], channel: str, purpose: str, at: datetime
) -> int | None:
    """Index in ``_STAGES`` where ``c`` fails for this call at ``at``; None if it covers it."""
    if any(c.obtained_at <= r for r in revoked_at):
        return 0
    if c.reassigned:
        return 1
    if c.method not in WRITTEN_METHODS:
        return 2
    if c.expires_at is not None and c.expires_at <= at:
        return 3
    if channel not in c.channels:
        return 4
    if "*" not in c.purposes and purpose not in c.purposes:
        return 5
    return None


def decide(
    consents: Iterable[ConsentFact],
    revocations: Iterable[RevocationFact],
    channel: str,
    purpose: str,
    at: datetime,
) -> ConsentDecision:
    """May a call on ``channel`` for ``purpose`` be placed at ``at`` under this history?"""
    revoked_at = [r.received_at for r in revocations if r.received_at <= at]
    best: int = -1
    seen = False
    covering: ConsentFact | None = None
    recording = False
    checked: datetime | None = None
    for c in consents:
        if c.obtained_at > at:
            continue
        seen = True
        stage = _failed_stage(c, revoked_at, channel, purpose, at)
        if stage is None:
            # The first covering consent decides; every covering one may add recording and
            # a reassigned-number check.
            covering = covering or c
            recording = recording or c.recording
            if c.reassigned_checked_at is not None and (
                checked is None or c.reassigned_checked_at > checked
            ):
                checked = c.reassigned_checked_at
            continue
        best = max(best, stage)
    if covering is not None:
        return ConsentDecision(True, [], covering.id, recording, checked)
    if not seen:
        return ConsentDecision(False, [reason(Code.NO_CONSENT)])
    code = _STAGES[best]
    details = {"channel": channel} if code is Code.CONSENT_CHANNEL_MISMATCH else None
    if code is Code.CONSENT_PURPOSE_MISMATCH:
        details = {"purpose": purpose}
    return ConsentDecision(False, [reason(code, details=details)])
