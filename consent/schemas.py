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
    StrictBool,
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
                    "recording": False,
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
    recording: StrictBool = Field(
        default=False,
        description="The patient also consents to having calls recorded (API.md: a call is "
        "recorded only under a written consent covering it that says so)",
    )

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
    recording: bool = False
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


# --- Reassigned Numbers Database answers (API.md "Reassigned numbers") ---------------------


class ReassignedAnswerIn(BaseModel):
    """One answer of the FCC Reassigned Numbers Database (a JSON array element, or a CSV row
    with these column names). Documents the body; rows are checked one by one (a bad row is
    reported, never fails the good ones)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"phone": "3145550100", "date": "2026-03-05", "answer": "no",
                          "queried_at": "2026-11-20T15:00:00Z"}]
        },
    )

    phone: str = Field(max_length=40, description="The number, any format intake accepts")
    date: str = Field(description="The date asked about (the consent's date): YYYY-MM-DD or "
                                  "MM/DD/YYYY")
    answer: Literal["yes", "no", "no_data"] = Field(
        description="yes: permanently disconnected on or after `date`")
    queried_at: str = Field(description="When the RND was asked: ISO-8601 with an offset, "
                                        "or a date (midnight UTC)")


class RowErrorOut(BaseModel):
    row: int = Field(description="1-based: the array index + 1, or the CSV line after the "
                                 "header")
    field: str
    message: str


class ReassignedImportOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{
                "rows": 3, "stored": 2, "duplicates": 0, "invalid": 1,
                "answers": {"yes": 1, "no": 1, "no_data": 0},
                "withdrawn_calls": 1, "requeued_calls": 0,
                "errors": [{"row": 3, "field": "date",
                            "message": "is not a date (YYYY-MM-DD or MM/DD/YYYY)"}],
                "errors_truncated": False,
            }]
        },
    )

    rows: int
    stored: int = Field(description="New answers kept (an answer already on file is a "
                                    "duplicate)")
    duplicates: int
    invalid: int
    answers: dict[str, int] = Field(description="Valid rows by answer")
    withdrawn_calls: int = Field(description="Queued and leased calls withdrawn: the number "
                                             "was reassigned since their consent "
                                             "(NUMBER_REASSIGNED)")
    requeued_calls: int = Field(description="Calls parked for REASSIGNED_CHECK_STALE "
                                            "returned to the queue")
    errors: list[RowErrorOut] = Field(description="The first 100 invalid rows")
    errors_truncated: bool
