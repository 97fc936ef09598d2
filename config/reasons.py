"""Stable reason codes: the one table that API, docs and tests read from.

``REASONS`` holds refusal codes (a call, a row, a template or a campaign refused); ``FLAGS``
holds flags: marks on an accepted attempt that a compliance reviewer must see (call log, its
CSV, the dashboard). A message never contains a phone number or a patient reference; it names
fields.
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
    # Templates and texts (API.md "Templates and texts"): TEMPLATE_INVALID is the envelope
    # code of a refused template, its details listing the codes below.
    TEMPLATE_INVALID = "TEMPLATE_INVALID"
    TEMPLATE_TOO_LONG = "TEMPLATE_TOO_LONG"
    TEMPLATE_IDENTIFIER = "TEMPLATE_IDENTIFIER"
    TEMPLATE_NO_PROVIDER = "TEMPLATE_NO_PROVIDER"
    TEMPLATE_NO_CALLBACK = "TEMPLATE_NO_CALLBACK"
    TEMPLATE_NO_OPT_OUT = "TEMPLATE_NO_OPT_OUT"
    TEMPLATE_PROHIBITED_CONTENT = "TEMPLATE_PROHIBITED_CONTENT"
    TEMPLATE_SYNTAX = "TEMPLATE_SYNTAX"
    TEMPLATE_REQUIRED = "TEMPLATE_REQUIRED"
    TEMPLATE_MISMATCH = "TEMPLATE_MISMATCH"
    # Reassigned numbers (API.md "Reassigned numbers").
    NUMBER_REASSIGNED = "NUMBER_REASSIGNED"
    REASSIGNED_CHECK_STALE = "REASSIGNED_CHECK_STALE"


TCPA_CONSENT = "47 CFR 64.1200(a)(1)-(2); FCC 15-72 paras 141-147 (prior express written consent)"
TCPA_REVOCATION = "47 CFR 64.1200(a)(9)(iv)(H); FCC 15-72 para 147 (opt-out honoured immediately)"
TCPA_PURPOSE = "FCC 15-72 paras 146-148; 47 CFR 64.1200(a)(9)(iv)"
TCPA_FREQUENCY = "47 CFR 64.1200(a)(9)(iv)(F) (one call per day, three per week)"
TCPA_HOURS = "47 CFR 64.1200(c)(1) (08:00-21:00 called party's local time)"
INTERNAL_DNC = "47 CFR 64.1200(d) (internal do-not-call list)"
CALLGATE_POLICY = "callgate policy"
# The healthcare-message exemption, 47 CFR 64.1200(a)(9)(iv): (B) name and contact information
# of the provider; (C) exempt purposes only; (D) no telemarketing, billing or other financial
# content, HIPAA privacy rules; (E) concise: 160 characters or less for a text, one minute or
# less for a voice call; (F) one per day, three per week; (G) an easy opt-out in every message,
# "replying STOP" for texts; (H) opt-outs honoured immediately.
TCPA_HEALTH_TEXT = (
    "47 CFR 64.1200(a)(9)(iv)(B)-(E), (G); FCC 15-72 paras 146-148 (healthcare messages: "
    "provider named, callback given, no financial content, 160 characters, opt-out by STOP)"
)
TCPA_IDENTIFY = (
    "47 CFR 64.1200(a)(9)(iv)(B); FCC 15-72 para 147 (state the healthcare provider's name "
    "and contact information)"
)
TCPA_NO_FINANCIAL = (
    "47 CFR 64.1200(a)(9)(iv)(D); FCC 15-72 paras 147-148 (no telemarketing, solicitation, "
    "advertising, billing, debt-collection or other financial content)"
)
TCPA_TEXT_LENGTH = (
    "47 CFR 64.1200(a)(9)(iv)(E); FCC 15-72 para 147 (a text of 160 characters or less)"
)
TCPA_TEXT_OPT_OUT = (
    "47 CFR 64.1200(a)(9)(iv)(G); FCC 15-72 para 147 (a text tells the recipient that "
    "replying STOP opts out)"
)
HIPAA_MINIMUM_NECESSARY = (
    "45 CFR 164.502(b) (minimum necessary); 47 CFR 64.1200(a)(9)(iv)(D) (HIPAA privacy rules)"
)
HIPAA_VERIFICATION = (
    "45 CFR 164.514(h) (verify the identity of a person before disclosing protected health "
    "information)"
)
TCPA_REASSIGNED = (
    "47 CFR 64.1200(m) (Reassigned Numbers Database: consent does not pass to the next "
    "subscriber of a disconnected number)"
)
TCPA_PRERECORDED_LENGTH = (
    "47 CFR 64.1200(a)(9)(iv)(E); FCC 15-72 para 147 (a voice call of one minute or less)"
)
TCPA_CALLER_ID = (
    "47 CFR 64.1200(a)(9)(iv)(B), (b)(2) (the provider's name and a callback number are stated "
    "on every call)"
)
TCPA_CONFIRMATION = (
    "47 CFR 64.1200(a)(12) (one confirmation text, within the consumer's consent when sent "
    "within five minutes of the opt-out)"
)
RECORDING_CONSENT = (
    "callgate policy: record only with the patient's consent on file (18 U.S.C. 2511(2)(d); "
    "all-party-consent state laws such as Cal. Penal Code 632)"
)


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
    Code.TEMPLATE_INVALID: ReasonSpec(
        "the template's text does not meet the rules for healthcare messages; "
        "details.reasons lists each problem",
        TCPA_HEALTH_TEXT,
    ),
    Code.TEMPLATE_TOO_LONG: ReasonSpec(
        "the SMS text is longer than one segment (160 GSM-7 characters, 70 in UCS-2) with "
        "each placeholder at its longest rendering",
        TCPA_TEXT_LENGTH,
    ),
    Code.TEMPLATE_IDENTIFIER: ReasonSpec(
        "the text has a placeholder other than {provider_name}, {callback_number}, "
        "{appointment_date} and {appointment_time}; no patient identifier may appear in a "
        "message",
        HIPAA_MINIMUM_NECESSARY,
    ),
    Code.TEMPLATE_NO_PROVIDER: ReasonSpec(
        "the text has no {provider_name} placeholder; the message must name the provider",
        TCPA_IDENTIFY,
    ),
    Code.TEMPLATE_NO_CALLBACK: ReasonSpec(
        "the text has no {callback_number} placeholder; the message must give the provider's "
        "callback number",
        TCPA_IDENTIFY,
    ),
    Code.TEMPLATE_NO_OPT_OUT: ReasonSpec(
        'the SMS text does not say "Reply STOP" (any case); a text must say how to opt out',
        TCPA_TEXT_OPT_OUT,
    ),
    Code.TEMPLATE_PROHIBITED_CONTENT: ReasonSpec(
        "the text has billing, payment or marketing wording (the policy's "
        "texts.prohibited_words)",
        TCPA_NO_FINANCIAL,
    ),
    Code.TEMPLATE_SYNTAX: ReasonSpec(
        "the text has a brace that opens or closes no placeholder; write {{ or }} for a "
        "literal brace",
        CALLGATE_POLICY,
    ),
    Code.TEMPLATE_REQUIRED: ReasonSpec(
        "a campaign on the sms channel needs a template_id", TCPA_HEALTH_TEXT
    ),
    Code.TEMPLATE_MISMATCH: ReasonSpec(
        "the template named by template_id is not for the campaign's channel and purpose",
        TCPA_HEALTH_TEXT,
    ),
    Code.NUMBER_REASSIGNED: ReasonSpec(
        "the Reassigned Numbers Database answered that the number was permanently "
        "disconnected on or after the consent's obtained_at",
        TCPA_REASSIGNED,
    ),
    Code.REASSIGNED_CHECK_STALE: ReasonSpec(
        "no Reassigned Numbers Database answer for the number is as recent as the policy's "
        "reassigned.require_answer_within_days",
        TCPA_REASSIGNED + "; callgate policy",
    ),
}


class Flag(StrEnum):
    """Marks on an accepted attempt (API.md: the call log's ``flags``)."""

    AGENT_ID_MISSING = "AGENT_ID_MISSING"
    CALLBACK_MISMATCH = "CALLBACK_MISMATCH"
    OVER_DURATION = "OVER_DURATION"
    DURATION_UNKNOWN = "DURATION_UNKNOWN"
    RECORDING_WITHOUT_CONSENT = "RECORDING_WITHOUT_CONSENT"
    IDENTITY_NOT_VERIFIED = "IDENTITY_NOT_VERIFIED"
    LATE_OUTCOME = "LATE_OUTCOME"
    AFTER_REVOCATION = "AFTER_REVOCATION"
    SMS_CONFIRMATION_EXPIRED = "SMS_CONFIRMATION_EXPIRED"


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """A flag's short label (dashboard), message (names fields, never values) and rule."""

    label: str
    message: str
    rule: str


# Keyed by Flag members, which are str: FLAGS["OVER_DURATION"] works as well.
FLAGS: dict[str, FlagSpec] = {
    Flag.AGENT_ID_MISSING: FlagSpec(
        "Agent identification missing",
        "the outcome lacked agent_id, agent_name or disclosed_callback_number",
        TCPA_CALLER_ID + "; callgate policy (the agent's identity is recorded for every call)",
    ),
    Flag.CALLBACK_MISMATCH: FlagSpec(
        "Callback number mismatch",
        "disclosed_callback_number is not the campaign's callback_number",
        TCPA_CALLER_ID,
    ),
    Flag.OVER_DURATION: FlagSpec(
        "Prerecorded over duration limit",
        "the prerecorded call lasted longer than the purpose's max_duration_seconds",
        TCPA_PRERECORDED_LENGTH,
    ),
    Flag.DURATION_UNKNOWN: FlagSpec(
        "Prerecorded duration unknown",
        "the prerecorded call was reported without started_at or ended_at, so its length "
        "cannot be checked against the purpose's max_duration_seconds",
        TCPA_PRERECORDED_LENGTH,
    ),
    Flag.RECORDING_WITHOUT_CONSENT: FlagSpec(
        "Recorded without consent",
        "the outcome says recorded although the task said recording: forbidden (no written "
        "consent covering the call has recording: true)",
        RECORDING_CONSENT,
    ),
    Flag.IDENTITY_NOT_VERIFIED: FlagSpec(
        "Identity not verified",
        "phi_disclosed with fewer distinct identity_verified_with identifiers than the "
        "purpose's identity_identifiers",
        HIPAA_VERIFICATION,
    ),
    Flag.LATE_OUTCOME: FlagSpec(
        "Outcome after lease expiry",
        "the outcome was reported after lease_expires_at; the attempt had already been "
        "counted as made",
        CALLGATE_POLICY + " (an expired lease counts as an attempt; " + TCPA_FREQUENCY + ")",
    ),
    Flag.AFTER_REVOCATION: FlagSpec(
        "Outcome after revocation",
        "the outcome is for a call dialled before a revocation withdrew it",
        TCPA_REVOCATION,
    ),
    Flag.SMS_CONFIRMATION_EXPIRED: FlagSpec(
        "Opt-out confirmation expired",
        "the opt-out confirmation text was not leased within five minutes of the message's "
        "received_at and was not sent",
        TCPA_CONFIRMATION,
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
