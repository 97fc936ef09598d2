"""Input/output models for campaigns, calls, the queue and compliance reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from consent.schemas import IsoDatetime

Channel = Literal["autodialed_voice", "prerecorded_voice", "sms"]
# What an agent may verify a caller's identity with (config.policy.IDENTIFIER_KINDS).
Identifier = Literal[
    "date_of_birth", "address", "last_service_date", "member_id", "invoice_number"
]
# Request numbers and flags are Strict*: pydantic would otherwise read `true` as 1 and `1` or
# "yes" as true, which the documented schema (integer, boolean) does not allow.


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=r"^[0-9]{2}:[0-9]{2}$", examples=["09:00"])
    end: str = Field(pattern=r"^[0-9]{2}:[0-9]{2}$", examples=["18:00"])


class CampaignIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Cardiology discharge follow-up",
                    "purpose": "discharge_followup",
                    "channel": "autodialed_voice",
                    "provider_name": "Mercy Heart Clinic",
                    "callback_number": "+1 314 555 0199",
                    "calling_window": {"start": "09:00", "end": "18:00"},
                    "max_attempts": 3,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=64)
    channel: Channel = "autodialed_voice"
    provider_name: str = Field(min_length=1, max_length=200)
    callback_number: str = Field(min_length=1, max_length=40)
    calling_window: WindowIn | None = None
    max_attempts: StrictInt = Field(default=3, ge=1, le=20)
    script_id: str | None = Field(default=None, max_length=128)
    template_id: str | None = Field(
        default=None, max_length=36,
        description="Required on the `sms` channel: a template of the campaign's channel and "
        "purpose (422 `TEMPLATE_REQUIRED` / `TEMPLATE_MISMATCH`)",
    )


class CampaignOut(BaseModel):
    id: str
    name: str
    purpose: str
    channel: str
    provider_name: str
    callback_number: str
    calling_window: WindowIn | None
    max_attempts: int
    script_id: str | None
    template_id: str | None = None
    created_at: datetime
    created_by: str
    policy_version: str
    counts: dict[str, int] = Field(default_factory=dict)


class ReasonOut(BaseModel):
    code: str
    message: str
    rule: str
    details: Any = None


class IntakeRowIn(BaseModel):
    """One row of a call list (JSON array element or CSV row with these column names)."""

    external_id: str = Field(max_length=128, examples=["enc-778"])
    patient_ref: str | None = Field(default=None, max_length=128, examples=["MRN-1001"])
    phone: str = Field(max_length=40, examples=["3145550100"])
    not_before: IsoDatetime | None = None
    not_after: IsoDatetime | None = Field(default=None, examples=["2026-11-26T00:00:00Z"])
    postal_code: str | None = Field(default=None, examples=["63110"])
    state: str | None = Field(default=None, examples=["MO"])
    priority: int = Field(default=5, ge=1, le=10)


class RowResultOut(BaseModel):
    row: int
    external_id: str | None
    status: Literal["queued", "refused", "invalid", "duplicate"]
    call_id: str | None
    reasons: list[ReasonOut]


class IntakeOut(BaseModel):
    accepted: int
    refused: int
    invalid: int
    duplicates: int
    dry_run: bool = False
    ignored_columns: list[str] = Field(default_factory=list)
    results: list[RowResultOut]


class DecisionOut(BaseModel):
    at: datetime
    kind: str
    actor: str
    payload: dict[str, Any]


class CallOut(BaseModel):
    id: str
    campaign_id: str
    external_id: str
    status: Literal["queued", "leased", "completed", "refused", "withdrawn", "expired"]
    phone: str
    priority: int
    not_before: datetime | None
    not_after: datetime | None
    next_eligible_at: datetime | None
    attempts: int
    last_reason: str | None
    candidate_zones: list[dict[str, str]]
    created_at: datetime
    decisions: list[DecisionOut]
    refusals: list[dict[str, Any]]


class LeaseIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"dialer_id": "acme-1", "limit": 10, "lease_seconds": 120}]
        },
    )

    dialer_id: str = Field(min_length=1, max_length=128)
    limit: StrictInt = Field(default=10, ge=1, le=100)
    lease_seconds: StrictInt = Field(default=120, ge=15, le=900)
    channels: list[Channel] | None = Field(
        default=None, min_length=1, max_length=3,
        description="Lease only these channels (default: every channel): an SMS gateway "
        "leases `sms`, a voice dialer the voice channels",
    )


class TaskOut(BaseModel):
    call_id: str
    lease_id: str
    lease_expires_at: datetime
    phone: str
    purpose: str
    channel: str
    campaign_id: str
    provider_name: str
    callback_number: str
    script_id: str | None = None
    max_duration_seconds: int | None
    sms_max_chars: int | None = None
    kind: Literal["call", "sms_confirmation", "sms_help"] = Field(
        default="call",
        description="`call` (a campaign's call or text), or a reply to the patient's own "
        "text (`sms_confirmation`, `sms_help`): report a reply's outcome at "
        "`POST /v1/sms/replies/{call_id}/outcome`",
    )
    text: str | None = Field(default=None, description="An SMS task's rendered text (one "
                             "segment); send it exactly")
    template_id: str | None = None
    disclosures: list[str]
    attempt: int
    max_attempts: int
    # On the call itself (API.md "Recording and identity verification").
    recording: Literal["allowed", "forbidden"] = Field(
        default="forbidden",
        description="`allowed` only when a written consent covering the call also has "
        "`recording: true`; otherwise do not record",
    )
    identity_identifiers: int = Field(
        default=0, ge=0,
        description="Distinct identifiers to verify (date_of_birth, address, ...) before "
        "disclosing health information (45 CFR 164.514(h))",
    )


class LeaseOut(BaseModel):
    tasks: list[TaskOut]


class OutcomeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "lease_id": "4b6f0c1e-...",
                    "agent_id": "A-17",
                    "agent_name": "Dana",
                    "disclosed_callback_number": "+13145550199",
                    "started_at": "2026-11-24T17:01:00Z",
                    "ended_at": "2026-11-24T17:03:10Z",
                    "result": "connected",
                    "recorded": False,
                    "phi_disclosed": True,
                    "identity_verified_with": ["date_of_birth", "address"],
                }
            ]
        },
    )

    lease_id: str = Field(min_length=1, max_length=36)
    agent_id: str | None = Field(default=None, max_length=128)
    agent_name: str | None = Field(default=None, max_length=200)
    disclosed_callback_number: str | None = Field(default=None, max_length=40)
    started_at: IsoDatetime | None = None
    ended_at: IsoDatetime | None = None
    result: Literal[
        "connected", "voicemail", "no_answer", "busy", "failed", "wrong_number", "opted_out"
    ]
    # On the call itself (API.md "Recording and identity verification").
    recorded: StrictBool = Field(
        default=False, description="The call was recorded (flagged RECORDING_WITHOUT_CONSENT "
        "when the task said `recording: forbidden`)")
    phi_disclosed: StrictBool = Field(
        default=False, description="Health information was disclosed on the call")
    identity_verified_with: list[Identifier] = Field(
        default_factory=list, max_length=10,
        description="The identifiers verified before disclosing (flagged "
        "IDENTITY_NOT_VERIFIED when `phi_disclosed` with fewer distinct ones than the task's "
        "`identity_identifiers`)")


class OutcomeItemIn(OutcomeIn):
    """One outcome of a batch: the single-call body plus the call it is for."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=36)


class OutcomesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcomes: list[OutcomeItemIn] = Field(min_length=1, max_length=100)


class ItemError(BaseModel):
    code: str
    message: str
    details: Any = None


class OutcomeItemOut(BaseModel):
    """``ok`` true: what ``POST /v1/queue/{call_id}/outcome`` answers with 200. ``ok``
    false: the error (and HTTP status) that endpoint would have answered."""

    call_id: str
    ok: bool
    status: str | None = None
    attempts: int | None = None
    flags: list[str] | None = None
    http_status: int | None = None
    error: ItemError | None = None


class OutcomesOut(BaseModel):
    results: list[OutcomeItemOut]


class OutcomeOut(BaseModel):
    call_id: str
    status: str
    attempts: int
    flags: list[str]


class LeaseRefIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_id: str = Field(min_length=1, max_length=36)


class DialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_id: str | None = Field(default=None, max_length=36)


class GoOut(BaseModel):
    go: bool


class ReleasedOut(BaseModel):
    released: bool


class CheckIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"phone": "+1 314 555 0100", "purpose": "appointment_reminder",
                 "channel": "autodialed_voice", "state": "MO", "postal_code": "63110",
                 "at": None, "reserve": False}
            ]
        },
    )

    phone: str = Field(min_length=1, max_length=40)
    purpose: str = Field(min_length=1, max_length=64)
    channel: Channel = "autodialed_voice"
    state: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    postal_code: str | None = Field(default=None, pattern=r"^[0-9]{5}(-?[0-9]{4})?$")
    at: IsoDatetime | None = None
    reserve: StrictBool = False
    agent_id: str | None = Field(default=None, max_length=128)
    agent_name: str | None = Field(default=None, max_length=200)
    campaign_id: str | None = Field(default=None, max_length=36)


class ZoneOut(BaseModel):
    zone: str
    source: str


class CheckOut(BaseModel):
    allowed: bool
    reasons: list[ReasonOut]
    next_eligible_at: datetime | None
    candidate_zones: list[ZoneOut]
    reservation_id: str | None = None
    recording: Literal["allowed", "forbidden"] = Field(
        default="forbidden", description="As a task would say: `allowed` only under a written "
        "consent covering the call that also has `recording: true`")
    identity_identifiers: int = Field(
        default=0, description="As a task would say: identifiers to verify before disclosing "
        "health information")
