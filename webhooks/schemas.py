"""Webhook subscriptions, deliveries and the event feed, as the API shows them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EventType = Literal[
    "consent.created", "consent.revoked", "dnc.added", "dnc.lifted",
    "call.refused", "call.completed", "call.flagged", "audit.checkpoint",
]
DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://crm.example.org/hooks/callgate",
        "events": ["consent.revoked", "dnc.added"],
        "description": "CRM opt-out sync",
    }]})

    url: str = Field(min_length=1, max_length=2048)
    events: list[EventType] = Field(min_length=1, max_length=8)
    description: str = Field(default="", max_length=500)

    @field_validator("events")
    @classmethod
    def _unique(cls, v: list[EventType]) -> list[EventType]:
        return list(dict.fromkeys(v))


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    created_at: datetime
    # While deliveries to it fail: how many in a row, and when it is tried again.
    failures: int = 0
    retry_at: datetime | None = None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_...`); shown this once only.")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event_id: str | None = Field(description="`evt_...`, the `webhook-id` header; null for "
                                 "a test message (its `webhook-id` is `test_<delivery id>`)")
    type: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    replay_of: str | None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, id_: str, type_: str, at: datetime, data: str) -> EventOut:
        return cls(id=id_, type=type_, timestamp=at, data=json.loads(data))


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str = Field(description="Pass as `after` for the events that follow")
