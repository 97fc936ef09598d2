"""Templates and texts: pydantic input/output (API.md "Templates and texts")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["sms", "prerecorded_voice", "autodialed_voice"]


class TemplateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{
                "name": "Appointment reminder (text)", "channel": "sms",
                "purpose": "appointment_reminder",
                "text": "{provider_name}: reminder of your appointment {appointment_date} at "
                        "{appointment_time}. Questions: {callback_number}. Reply STOP to opt out.",
            }]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    purpose: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=2000)


class TemplateOut(BaseModel):
    id: str
    name: str
    channel: str
    purpose: str
    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    max_length: int = Field(description="The worst-case rendered length (each placeholder at "
                            "its longest rendering)")
    limit: int | None = Field(description="160 (GSM-7) or 70 (UCS-2), or the purpose's "
                              "sms_max_chars when narrower; null for a voice template")
    segments: int | None
    placeholders: list[str]
    created_at: datetime
    created_by: str
    policy_version: str


class TemplateList(BaseModel):
    items: list[TemplateOut]


class InboundIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"message_id": "SM-1", "from": "+1 314 555 0100",
                          "to": "+1 314 555 0199", "body": "STOP",
                          "received_at": "2026-11-20T15:00:00Z"}]
        },
    )

    message_id: str = Field(min_length=1, max_length=128)
    from_: str = Field(alias="from", min_length=1, max_length=40)
    to: str | None = Field(default=None, max_length=40)
    body: str = Field(max_length=1600)
    received_at: datetime | None = None


class InboundOut(BaseModel):
    action: Literal["revoked", "review", "help", "none"]
    message_id: str
    duplicate: bool = Field(description="The same message_id was decided before: nothing done "
                            "again; the first decision is answered")
    withdrawn_calls: int = 0
    reply_id: str | None = Field(default=None, description="The confirmation or help text "
                                 "queued for this message (none when one was already sent "
                                 "for this revocation)")


class ReviewDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"decision": "revoke"}]})

    decision: Literal["revoke", "release"]


class ReviewOut(BaseModel):
    id: str
    review_status: str
    withdrawn_calls: int = 0
    reply_id: str | None = None


class ReplyOutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "lease_id": "0b9e8f2c-7d1a-4c7e-9d3f-1f2e3d4c5b6a", "result": "sent",
        "sent_at": "2026-11-20T15:01:00Z"}]})

    lease_id: str = Field(min_length=1, max_length=36)
    result: Literal["sent", "failed"]
    sent_at: datetime | None = None


class ReplyOutcomeOut(BaseModel):
    id: str
    status: str
