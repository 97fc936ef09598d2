"""The consent decision: pure, side-effect free, time as a parameter.

Rules (PRODUCT.md 1-2; 47 CFR 64.1200(a)(1)-(2), (a)(9)(iv)(H); FCC 15-72 paras 141-147):

* Only consent obtained at or before the instant counts.
* A revocation received at or after a consent was obtained revokes it; a number stays
  revoked until a *newer* consent is obtained.
* Oral consent is stored but never satisfies an auto-dialer check (callgate requires
  written or e-signed consent for every channel it dials).
* A consent past ``expires_at`` no longer counts.
* The consent must cover the channel and the purpose (``*`` covers every purpose).

When no consent satisfies all of these, the reason is the one of the consent that came
closest (checks in the order above); with no consent obtained by the instant, NO_CONSENT.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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


class RevocationFact(NamedTuple):
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    allowed: bool
    reasons: list[Reason] = field(default_factory=list)
    consent_id: str | None = None


# The stage at which a consent fails, in check order; higher got further.
_STAGES: tuple[Code, ...] = (
    Code.CONSENT_REVOKED,
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
    if c.method not in WRITTEN_METHODS:
        return 1
    if c.expires_at is not None and c.expires_at <= at:
        return 2
    if channel not in c.channels:
        return 3
    if "*" not in c.purposes and purpose not in c.purposes:
        return 4
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
    for c in consents:
        if c.obtained_at > at:
            continue
        seen = True
        stage = _failed_stage(c, revoked_at, channel, purpose, at)
        if stage is None:
            return ConsentDecision(True, [], c.id)
        best = max(best, stage)
    if not seen:
        return ConsentDecision(False, [reason(Code.NO_CONSENT)])
    code = _STAGES[best]
    details = {"channel": channel} if code is Code.CONSENT_CHANNEL_MISMATCH else None
    if code is Code.CONSENT_PURPOSE_MISMATCH:
        details = {"purpose": purpose}
    return ConsentDecision(False, [reason(code, details=details)])
