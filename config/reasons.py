"""Stable reason codes: the one table that API, docs and tests read from.

A message never contains a phone number or a patient reference; it names fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    INVALID_PHONE = "INVALID_PHONE"
    NO_CONSENT = "NO_CONSENT"
    CONSENT_NOT_WRITTEN = "CONSENT_NOT_WRITTEN"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    CONSENT_CHANNEL_MISMATCH = "CONSENT_CHANNEL_MISMATCH"
    CONSENT_PURPOSE_MISMATCH = "CONSENT_PURPOSE_MISMATCH"
    PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED"
    PURPOSE_UNKNOWN = "PURPOSE_UNKNOWN"
    DO_NOT_CALL = "DO_NOT_CALL"
    DAILY_CAP = "DAILY_CAP"
    WEEKLY_CAP = "WEEKLY_CAP"
    OUTSIDE_CALLING_WINDOW = "OUTSIDE_CALLING_WINDOW"
    QUIET_DAY = "QUIET_DAY"
    DUPLICATE_REQUEST = "DUPLICATE_REQUEST"
    DEADLINE_PASSED = "DEADLINE_PASSED"
    INVALID_FIELD = "INVALID_FIELD"
    MAX_ATTEMPTS = "MAX_ATTEMPTS"
    CHANNEL_NOT_ALLOWED = "CHANNEL_NOT_ALLOWED"
    WINDOW_WIDER_THAN_POLICY = "WINDOW_WIDER_THAN_POLICY"


TCPA_CONSENT = "47 CFR 64.1200(a)(1)-(2); FCC 15-72 paras 141-147 (prior express written consent)"
TCPA_REVOCATION = "47 CFR 64.1200(a)(9)(iv)(H); FCC 15-72 para 147 (opt-out honoured immediately)"
TCPA_PURPOSE = "FCC 15-72 paras 146-148; 47 CFR 64.1200(a)(9)(iv)"
TCPA_FREQUENCY = "47 CFR 64.1200(a)(9)(iv)(F) (one call per day, three per week)"
TCPA_HOURS = "47 CFR 64.1200(c)(1) (08:00-21:00 called party's local time)"
INTERNAL_DNC = "47 CFR 64.1200(d) (internal do-not-call list)"
CALLGATE_POLICY = "callgate policy"


@dataclass(frozen=True, slots=True)
class ReasonSpec:
    message: str
    rule: str


REASONS: dict[Code, ReasonSpec] = {
    Code.INVALID_PHONE: ReasonSpec(
        "the phone field is not a valid, dialable number in an allowed region", CALLGATE_POLICY
    ),
    Code.NO_CONSENT: ReasonSpec(
        "no written auto-dialer consent is on file for this number", TCPA_CONSENT
    ),
    Code.CONSENT_NOT_WRITTEN: ReasonSpec(
        "the consent on file is not written or e-signed; oral consent does not cover "
        "auto-dialed or prerecorded calls",
        TCPA_CONSENT,
    ),
    Code.CONSENT_REVOKED: ReasonSpec("consent for this number was revoked", TCPA_REVOCATION),
    Code.CONSENT_EXPIRED: ReasonSpec("the consent on file has expired", TCPA_CONSENT),
    Code.CONSENT_CHANNEL_MISMATCH: ReasonSpec(
        "the consent on file does not cover this channel", TCPA_CONSENT
    ),
    Code.CONSENT_PURPOSE_MISMATCH: ReasonSpec(
        "the consent on file does not cover this purpose", TCPA_CONSENT
    ),
    Code.PURPOSE_NOT_ALLOWED: ReasonSpec(
        "the purpose is not an exempt healthcare purpose", TCPA_PURPOSE
    ),
    Code.PURPOSE_UNKNOWN: ReasonSpec("the purpose is not in the catalogue", TCPA_PURPOSE),
    Code.DO_NOT_CALL: ReasonSpec(
        "the number is on the internal do-not-call list", INTERNAL_DNC
    ),
    Code.DAILY_CAP: ReasonSpec(
        "the per-day attempt cap for this number is reached", TCPA_FREQUENCY
    ),
    Code.WEEKLY_CAP: ReasonSpec(
        "the per-week attempt cap for this number is reached", TCPA_FREQUENCY
    ),
    Code.OUTSIDE_CALLING_WINDOW: ReasonSpec(
        "the time is not inside the calling window in every candidate time zone", TCPA_HOURS
    ),
    Code.QUIET_DAY: ReasonSpec(
        "it is a quiet day (holiday or rest day) in a candidate time zone", CALLGATE_POLICY
    ),
    Code.DUPLICATE_REQUEST: ReasonSpec(
        "the same external_id (or the same number for this campaign) is already pending",
        CALLGATE_POLICY,
    ),
    Code.DEADLINE_PASSED: ReasonSpec(
        "the call could not be dispatched before not_after", CALLGATE_POLICY
    ),
    Code.INVALID_FIELD: ReasonSpec("a field of the row is malformed", CALLGATE_POLICY),
    Code.MAX_ATTEMPTS: ReasonSpec(
        "the campaign's max_attempts were used without a completed call", CALLGATE_POLICY
    ),
    Code.CHANNEL_NOT_ALLOWED: ReasonSpec(
        "the channel is not allowed for this purpose", TCPA_PURPOSE
    ),
    Code.WINDOW_WIDER_THAN_POLICY: ReasonSpec(
        "a campaign's calling window may only narrow the policy's", TCPA_HOURS
    ),
}


@dataclass(frozen=True, slots=True)
class Reason:
    """One refusal reason: stable code, a message naming fields (never values), a rule."""

    code: Code
    message: str
    rule: str
    details: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code.value, "message": self.message, "rule": self.rule}
        if self.details:
            out["details"] = self.details
        return out


def reason(
    code: Code,
    message: str | None = None,
    rule: str | None = None,
    details: dict[str, Any] | None = None,
) -> Reason:
    spec = REASONS[code]
    return Reason(code, message or spec.message, rule or spec.rule, details)
