"""Webhook subscriptions (admin): create (the secret shown once), list, delete, the delivery
log, a test message, a replay; each change audited. The deliveries themselves are the
worker's (webhooks.worker): no request waits for a receiver."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select

from config.errors import Invalid, NotFound
from core import events
from core.audit import canonical_json
from core.keys import Identity
from core.models import WebhookDelivery, WebhookSubscription
from core.runtime import Runtime
from core.uow import UnitOfWork
from webhooks.delivery import new_secret
from webhooks.schemas import (
    DeliveryList,
    DeliveryOut,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
)
from webhooks.ssrf import UrlRefused, check_receiver

TEST_TYPE = "webhook.test"


def _out(sub: WebhookSubscription) -> WebhookOut:
    return WebhookOut(id=sub.id, url=sub.url, events=list(sub.events),
                      description=sub.description, created_at=sub.created_at,
                      failures=sub.failures, retry_at=sub.retry_at)


def delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=str(d.id), webhook_id=d.subscription_id,
        event_id=None if d.event_id is None else f"evt_{d.event_id}", type=d.type,
        status=d.status,
        attempts=d.attempts, created_at=d.created_at,
        next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
        last_attempt_at=d.last_attempt_at, last_status=d.last_status, last_error=d.last_error,
        delivered_at=d.delivered_at, replay_of=None if d.replay_of is None else str(d.replay_of),
    )


def create(rt: Runtime, who: Identity, data: WebhookIn) -> WebhookCreated:
    try:
        check_receiver(data.url, rt.settings.webhooks_allow_private)
    except UrlRefused as exc:
        raise Invalid("VALIDATION_ERROR", str(exc),
                      [{"field": "body.url", "message": str(exc)}]) from None
    secret = new_secret()
    with rt.write(who) as uow:
        sub = WebhookSubscription(
            id=str(uuid.uuid4()), url=data.url, events=list(data.events),
            description=data.description, secret=secret, created_at=uow.now,
            created_by=uow.key_id,
            # From the events that follow: a new receiver is not sent the past (the feed
            # has it).
            fanout_seq=events.head(uow.session), failures=0,
        )
        uow.session.add(sub)
        uow.audit("webhook.created", f"webhook:{sub.id}",
                  {"events": sub.events, "host": urlsplit(data.url).hostname})
        return WebhookCreated(**_out(sub).model_dump(), secret=secret)


def list_all(rt: Runtime, who: Identity) -> WebhookList:
    with rt.read(who) as uow:
        subs = uow.session.scalars(select(WebhookSubscription)
                                   .where(WebhookSubscription.deleted_at.is_(None))
                                   .order_by(WebhookSubscription.created_at))
        return WebhookList(items=[_out(s) for s in subs])


def _active(uow: UnitOfWork, webhook_id: str) -> WebhookSubscription:
    sub = uow.session.get(WebhookSubscription, webhook_id)
    if sub is None or sub.deleted_at is not None:
        raise NotFound("NOT_FOUND", "no such webhook")
    return sub


def delete(rt: Runtime, who: Identity, webhook_id: str) -> None:
    """The subscription ends: nothing more is sent to it (pending deliveries cancelled);
    its row and delivery log stay."""
    with rt.write(who) as uow:
        sub = _active(uow, webhook_id)
        sub.deleted_at = uow.now
        for d in uow.session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.subscription_id == sub.id, WebhookDelivery.status == "pending")):
            d.status = "cancelled"
        uow.audit("webhook.deleted", f"webhook:{sub.id}", {})


def deliveries(
    rt: Runtime, who: Identity, webhook_id: str, limit: int, cursor: str | None,
    status: str | None,
) -> DeliveryList:
    """The delivery log, newest first (``cursor``: the last id of the page before)."""
    before: int | None = None
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 19:
            raise Invalid("VALIDATION_ERROR", "cursor is not a cursor of this list",
                          [{"field": "query.cursor", "message": "invalid"}])
        before = int(cursor)
    with rt.read(who) as uow:
        sub = uow.session.get(WebhookSubscription, webhook_id)
        if sub is None:
            raise NotFound("NOT_FOUND", "no such webhook")
        q = select(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id)
        if before is not None:
            q = q.where(WebhookDelivery.id < before)
        if status is not None:
            q = q.where(WebhookDelivery.status == status)
        rows = list(uow.session.scalars(q.order_by(WebhookDelivery.id.desc()).limit(limit)))
        nxt = str(rows[-1].id) if len(rows) == limit else None
        return DeliveryList(items=[delivery_out(d) for d in rows], next_cursor=nxt)


def _new_delivery(sub: WebhookSubscription, now: datetime, **values: object) -> WebhookDelivery:
    return WebhookDelivery(subscription_id=sub.id, status="pending", attempts=0,
                           created_at=now, next_attempt_at=now, **values)


def send_test(rt: Runtime, who: Identity, webhook_id: str) -> DeliveryOut:
    """Queue a test message (type ``webhook.test``) to the receiver; the delivery log shows
    how it went a moment later."""
    with rt.write(who) as uow:
        sub = _active(uow, webhook_id)
        d = _new_delivery(sub, uow.now, event_id=None, event_seq=0, type=TEST_TYPE,
                          key=f"test:{uuid.uuid4()}",
                          data=canonical_json({"webhook_id": sub.id, "test": True}))
        uow.session.add(d)
        uow.session.flush()
        uow.audit("webhook.test", f"webhook:{sub.id}", {"delivery": d.id})
        out = delivery_out(d)
    events.committed.notify()
    return out


def replay(rt: Runtime, who: Identity, webhook_id: str, delivery_id: int) -> DeliveryOut:
    """Send a delivery's message again (a new delivery, same ``webhook-id``), whatever the
    first one's fate."""
    with rt.write(who) as uow:
        sub = _active(uow, webhook_id)
        old = uow.session.get(WebhookDelivery, delivery_id)
        if old is None or old.subscription_id != sub.id:
            raise NotFound("NOT_FOUND", "no such delivery of this webhook")
        d = _new_delivery(sub, uow.now, event_id=old.event_id, event_seq=old.event_seq,
                          type=old.type,
                          key=old.key if old.event_id is not None else f"test:{uuid.uuid4()}",
                          data=old.data, replay_of=old.id)
        uow.session.add(d)
        uow.session.flush()
        uow.audit("webhook.replayed", f"webhook:{sub.id}", {"delivery": d.id,
                                                             "replay_of": old.id})
        out = delivery_out(d)
    events.committed.notify()
    return out
