"""Webhooks and events (API.md "Webhooks and events"; role: admin)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Admin, RuntimeDep
from core import events
from webhooks import feed, service
from webhooks.schemas import (
    DeliveryList,
    DeliveryOut,
    DeliveryStatus,
    EventPage,
    WebhookCreated,
    WebhookIn,
    WebhookList,
)

router = APIRouter(tags=["webhooks and events"])

WebhookId = Annotated[str, Path(min_length=1, max_length=36)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such webhook (or delivery)"}}
# A long poll looks again this often when this process committed nothing meanwhile (events
# of other processes); at once when it did.
FEED_RECHECK_SECONDS = 0.5


@router.post(
    "/webhooks",
    name="create_webhook",
    status_code=201,
    response_model=WebhookCreated,
    summary="Subscribe a receiver to event types (the signing secret is shown once)",
)
def create_webhook(body: WebhookIn, rt: RuntimeDep, who: Admin) -> WebhookCreated:
    return service.create(rt, who, body)


@router.get("/webhooks", name="list_webhooks", response_model=WebhookList,
            summary="The webhook subscriptions (no secrets)")
def list_webhooks(rt: RuntimeDep, who: Admin) -> WebhookList:
    return service.list_all(rt, who)


@router.delete("/webhooks/{webhook_id}", name="delete_webhook", status_code=204,
               summary="End a subscription (pending deliveries are cancelled)",
               responses=NOT_FOUND)
def delete_webhook(webhook_id: WebhookId, rt: RuntimeDep, who: Admin) -> Response:
    service.delete(rt, who, webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    name="list_webhook_deliveries",
    response_model=DeliveryList,
    summary="The delivery log, newest first",
    responses=NOT_FOUND,
)
def list_webhook_deliveries(
    webhook_id: WebhookId,
    rt: RuntimeDep,
    who: Admin,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
) -> DeliveryList:
    return service.deliveries(rt, who, webhook_id, limit, cursor, status)


@router.post(
    "/webhooks/{webhook_id}/test",
    name="test_webhook",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a signed test message (type webhook.test); the delivery log shows the answer",
    responses=NOT_FOUND,
)
def test_webhook(webhook_id: WebhookId, rt: RuntimeDep, who: Admin) -> DeliveryOut:
    return service.send_test(rt, who, webhook_id)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
    name="replay_webhook_delivery",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a delivery's message again (same webhook-id), as a new delivery",
    responses=NOT_FOUND,
)
def replay_webhook_delivery(
    webhook_id: WebhookId,
    delivery_id: Annotated[int, Path(ge=1, le=2**62)],
    rt: RuntimeDep,
    who: Admin,
) -> DeliveryOut:
    return service.replay(rt, who, webhook_id, delivery_id)


@router.get(
    "/events",
    name="list_events",
    response_model=EventPage,
    summary="The events as a feed (pass next_cursor as after); ?wait= holds until one comes",
)
async def list_events(
    rt: RuntimeDep,
    who: Admin,
    after: Annotated[str | None, Query(max_length=20, description="A next_cursor")] = None,
    types: Annotated[str | None, Query(max_length=400,
                                       description="Comma-separated event types")] = None,
    wait: Annotated[float, Query(ge=0, le=feed.MAX_WAIT_SECONDS,
                                 description="Seconds to hold for an event")] = 0,
    limit: Annotated[int, Query(ge=1, le=feed.MAX_LIMIT)] = 100,
) -> EventPage:
    cursor = feed.parse_cursor(after)
    wanted = feed.parse_types(types)
    deadline = time.monotonic() + wait
    while True:
        seen = events.committed.generation
        got = await run_in_threadpool(feed.page, rt, who, cursor, wanted, limit)
        left = deadline - time.monotonic()
        if got.items or left <= 0:
            return got
        # Until this process commits an event (checked every 50 ms on the event loop: no
        # thread held) or the recheck interval passes (other processes' events).
        recheck = time.monotonic() + min(FEED_RECHECK_SECONDS, left)
        while time.monotonic() < recheck and events.committed.generation == seen:
            await asyncio.sleep(0.05)
