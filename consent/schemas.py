"""Input/output models for consents, revocations and do-not-call (separate from tables)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

Channel = Literal["autodialed_voice", "prerecorded_voice", "sms"]

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_timestamp(value: Any) -> Any:
    # pydantic would read 7 or "7" as a Unix timestamp (1970-01-01T00:00:07Z); API.md: times
    # are ISO-8601 with an offset, so a number is refused rather than silently misread.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an ISO-8601 date-time with a UTC offset")
    return value


def _utc_instant(value: datetime) -> datetime:
    # Year 1 at +01:00 or year 9999 at -01:00 has no UTC date: refused here, not a 500 at the
    # first comparison or insert.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


# An instant in a request: ISO-8601 with an offset; no naive times, no Unix timestamps;
# read as UTC.
IsoDatetime = Annotated[
    AwareDatetime, BeforeValidator(_not_a_timestamp), AfterValidator(_utc_instant)
]
Method = Literal["written", "electronic_signature", "oral"]
RevocationSource = Literal[
    "ivr_keypress", "agent", "sms_stop", "web", "letter", "in_person", "voicemail", "email"
]


class ConsentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "patient_ref": "MRN-1001",
                    "phone": "+1 314 555 0100",
                    "channels": ["autodialed_voice", "prerecorded_voice", "sms"],
                    "purposes": ["*"],
                    "method": "written",
                    "obtained_at": "2026-11-01T15:00:00Z",
                    "evidence_ref": "scan://consents/1001.pdf#sha256=ab12",
                    "expires_at": None,
                }
            ]
        },
    )

    patient_ref: str = Field(min_length=1, max_length=128)
    phone: str = Field(min_length=1, max_length=40)
    channels: list[Channel] = Field(min_length=1, max_length=3)
    purposes: list[str] = Field(min_length=1, max_length=64)
    method: Method
    obtained_at: IsoDatetime
    evidence_ref: str = Field(default="", max_length=2000)
    expires_at: IsoDatetime | None = None
    supersedes_id: str | None = Field(default=None, max_length=36)

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, v: list[str]) -> list[str]:
        return sorted(set(v))

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or len(p) > 64:
                raise ValueError("each purpose is '*' or a purpose code")
        return sorted(set(v))


class ConsentOut(BaseModel):
    id: str
    patient_ref: str
    phone: str
    channels: list[str]
    purposes: list[str]
    method: str
    obtained_at: datetime
    evidence_ref: str
    expires_at: datetime | None
    recorded_at: datetime
    recorded_by: str
    supersedes_id: str | None = None
    status: str = Field(description="active | revoked | expired | superseded | not_yet_valid")


class RevocationIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"phone": "+1 314 555 0100", "source": "sms_stop",
                 "received_at": "2026-11-20T14:00:00Z"}
            ]
        },
    )

    phone: str = Field(min_length=1, max_length=40)
    source: RevocationSource
    received_at: IsoDatetime | None = None


class RevocationOut(BaseModel):
    id: str
    phone: str
    source: str
    received_at: datetime
    recorded_at: datetime
    recorded_by: str
    withdrawn_calls: int = 0
    revoked_consents: list[str] = Field(
        default_factory=list,
        description="The consents this revocation revoked: those obtained at or before its "
        "received_at that no earlier revocation had revoked. Empty: it revoked nothing (the "
        "number is on the do-not-call list all the same).",
    )
    consents_left_active: list[str] = Field(
        default_factory=list,
        description="Consents obtained after received_at: a re-consent given after this "
        "revocation, which it does not revoke (they cannot satisfy a check while the number "
        "is on the do-not-call list).",
    )


class ConsentHistory(BaseModel):
    phone: str
    consents: list[ConsentOut]
    revocations: list[RevocationOut]


class DncIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"phone": "+1 314 555 0100", "reason": "asked by letter"}]},
    )

    phone: str = Field(min_length=1, max_length=40)
    reason: str = Field(min_length=1, max_length=2000)


class DncLiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="lifted by an administrator", min_length=1, max_length=2000)


class DncOut(BaseModel):
    id: str
    phone: str
    reason: str
    source: str
    added_by: str
    added_at: datetime
    lifted_at: datetime | None = None
    lifted_by: str | None = None
    lift_reason: str | None = None
    withdrawn_calls: int = 0


class DncStatus(BaseModel):
    phone: str
    on_list: bool
    entries: list[DncOut]
