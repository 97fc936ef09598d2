"""Input/output models for campaigns, calls, the queue and compliance reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["autodialed_voice", "prerecorded_voice", "sms"]


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=r"^\d{2}:\d{2}$", examples=["09:00"])
    end: str = Field(pattern=r"^\d{2}:\d{2}$", examples=["18:00"])


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
    max_attempts: int = Field(default=3, ge=1, le=20)
    script_id: str | None = Field(default=None, max_length=128)


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
    created_at: datetime
    created_by: str
    policy_version: str
    counts: dict[str, int] = Field(default_factory=dict)


class ReasonOut(BaseModel):
    code: str
    message: str
    rule: str
    details: Any = None


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int
    last_hash: str | None = None
    broken_at: int | None = None
    problem: str | None = None
