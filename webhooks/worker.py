"""The delivery worker: a thread of the served process (never a request's) that numbers
committed events (core.events.sequence), fans them out to the subscriptions that take
their type, and sends what is due.

**Order per number.** Each delivery has its event's order key (a number's pseudonym; the
type for events about no number). Per subscription and key, only the pending delivery with
the lowest ``event_seq`` may be sent: the next one waits until it is delivered (or given
up). Different keys go in parallel (a small thread pool).

**Retries.** A delivery that fails is tried again after ``base * 2^(n-1)`` seconds (with up
to 25 % jitter), at most ``CALLGATE_WEBHOOKS_BACKOFF_MAX_SECONDS`` apart, until a 2xx, or
until it is ``CALLGATE_WEBHOOKS_GIVE_UP_HOURS`` (at least 24) old: then ``failed`` (it can
be replayed). When the receiver gives no answer, or answers 429/502/503/504, the whole
subscription waits the same way (``retry_at``): a receiver down for a day costs one try per
backoff interval, not one per event, and gets everything, in order, when it returns.

**Several processes.** On PostgreSQL one process at a time runs a pass (an advisory lock
held for the pass); the others wait for their next turn. A process that dies between a
send and the write of its result sends that message again later: at least once, as
Standard Webhooks expects (``webhook-id`` lets a receiver drop a repeat).
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text, update

from core import events, metrics
from core.audit import iso
from core.models import WebhookDelivery, WebhookSubscription
from core.runtime import Runtime
from webhooks.delivery import Result, Sender
from webhooks.service import TEST_TYPE

log = logging.getLogger("callgate.webhooks")

FANOUT_BATCH = 2000
HEADS_SCAN = 2000  # pending deliveries read per pass to find each key's head
SEND_THREADS = 8
MIN_PASS_SECONDS = 0.1
PASS_LOCK = zlib.crc32(b"callgate.webhooks.pass")


def backoff(rt: Runtime, failures: int) -> timedelta:
    s = rt.settings
    seconds = min(s.webhooks_backoff_base_seconds * 2 ** max(failures - 1, 0),
                  s.webhooks_backoff_max_seconds)
    return timedelta(seconds=seconds * (1 + random.random() / 4))


def fan_out(rt: Runtime) -> int:
    """A delivery for each sequenced event after each subscription's ``fanout_seq`` whose
    type it takes; returns how many."""
    made = 0
    with rt.db.read() as s:
        behind = s.scalar(select(func.min(WebhookSubscription.fanout_seq))
                          .where(WebhookSubscription.deleted_at.is_(None)))
        if behind is None or int(behind) >= events.head(s):
            return 0  # the check first, in a read: no write lock taken for nothing
    with rt.write("system:webhooks") as uow:
        s = uow.session
        subs = list(s.scalars(select(WebhookSubscription)
                              .where(WebhookSubscription.deleted_at.is_(None))))
        if not subs:
            return 0
        low = min(sub.fanout_seq for sub in subs)
        batch = events.after(s, low, FANOUT_BATCH)
        if not batch:
            return 0
        for sub in subs:
            wanted = set(sub.events)
            for e in batch:
                if e.seq > sub.fanout_seq and e.type in wanted:
                    s.add(WebhookDelivery(
                        subscription_id=sub.id, event_id=e.id, event_seq=e.seq, type=e.type,
                        key=e.key, status="pending", attempts=0, created_at=uow.now,
                        next_attempt_at=uow.now))
                    made += 1
            sub.fanout_seq = max(sub.fanout_seq, batch[-1].seq)
    return made


@dataclass(frozen=True, slots=True)
class _Due:
    id: int
    subscription_id: str
    url: str
    secret: str
    msg_id: str
    body: str
    attempts: int
    created_at: datetime


def due(rt: Runtime, now: datetime) -> list[_Due]:
    """Each key's head delivery that is due, of subscriptions not waiting."""
    with rt.db.read() as s:
        subs = {sub.id: sub for sub in s.scalars(
            select(WebhookSubscription).where(WebhookSubscription.deleted_at.is_(None)))}
        ready = [i for i, sub in subs.items() if sub.retry_at is None or sub.retry_at <= now]
        if not ready:
            return []
        heads: dict[tuple[str, str], WebhookDelivery] = {}
        for sub_id in ready:
            # Per subscription (one busy receiver's backlog never hides another's), in
            # order: the first row of a key is its head (ix_webhook_deliveries_pending).
            for d in s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.subscription_id == sub_id,
                       WebhookDelivery.status == "pending")
                .order_by(WebhookDelivery.event_seq, WebhookDelivery.id)
                .limit(HEADS_SCAN)
            ):
                heads.setdefault((d.subscription_id, d.key), d)
        chosen = [d for d in heads.values() if d.next_attempt_at <= now]
        found = events.by_ids(s, [d.event_id for d in chosen if d.event_id is not None])
        out = []
        for d in chosen:
            sub = subs[d.subscription_id]
            if d.event_id is None:  # a test message
                at = d.created_at
                body = (f'{{"type":"{TEST_TYPE}","timestamp":"{iso(at)}",'
                        f'"data":{d.data or "{}"}}}')
                msg_id = f"test_{d.replay_of or d.id}"
            else:
                e = found.get(d.event_id)
                if e is None:
                    continue
                body, msg_id = e.body(), e.public_id
            out.append(_Due(d.id, sub.id, sub.url, sub.secret, msg_id, body, d.attempts,
                            d.created_at))
        return out


def record(rt: Runtime, results: list[tuple[_Due, Result]]) -> None:
    """Each attempt's result on its delivery, and the subscriptions' backoff."""
    if not results:
        return
    give_up = timedelta(hours=rt.settings.webhooks_give_up_hours)
    with rt.write("system:webhooks") as uow:
        s, now = uow.session, uow.now
        down: set[str] = set()
        up: set[str] = set()
        for job, res in results:
            d = s.get(WebhookDelivery, job.id)
            if d is None or d.status != "pending":
                continue  # cancelled meanwhile
            d.attempts += 1
            d.last_attempt_at, d.last_status, d.last_error = now, res.status, res.error
            metrics.observe_webhook_delivery(res.ok, (now - d.created_at).total_seconds())
            if res.ok:
                d.status, d.delivered_at = "delivered", now
                up.add(job.subscription_id)
            else:
                if now - d.created_at >= give_up:
                    d.status = "failed"
                    uow.audit("webhook.gave_up", f"webhook:{job.subscription_id}",
                              {"delivery": d.id, "attempts": d.attempts})
                else:
                    d.next_attempt_at = now + backoff(rt, d.attempts)
                if res.receiver_down:
                    down.add(job.subscription_id)
                else:
                    up.add(job.subscription_id)
        for sub_id in up - down:
            s.execute(update(WebhookSubscription).where(WebhookSubscription.id == sub_id)
                      .values(failures=0, retry_at=None))
        for sub_id in down:
            sub = s.get(WebhookSubscription, sub_id)
            if sub is not None:
                sub.failures += 1
                sub.retry_at = now + backoff(rt, sub.failures)


@contextmanager
def _turn(rt: Runtime) -> Iterator[bool]:
    """Whether this process has the pass: on PostgreSQL an advisory lock for its length;
    on an SQLite file an exclusive flock of ``<file>-webhooks`` (``serve --workers N``)."""
    if rt.db.is_sqlite:
        path = rt.db.engine.url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            yield True
            return
        fd = os.open(f"{path}-webhooks", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    with rt.db.engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PASS_LOCK})
                   .scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PASS_LOCK})
                conn.commit()


def run_pass(rt: Runtime, sender: Sender, pool: ThreadPoolExecutor | None = None) -> int:
    """One pass: number, fan out, send what is due. Returns how many were sent."""
    with _turn(rt) as mine:
        if not mine:
            return 0
        events.sequence(rt.db)
        while fan_out(rt):
            pass
        jobs = due(rt, rt.clock.now())
        if not jobs:
            return 0

        def send(job: _Due) -> Result:
            return sender.send(job.url, job.secret, job.msg_id, job.body, rt.clock.now())

        results = list(pool.map(send, jobs)) if pool is not None else [send(j) for j in jobs]
        record(rt, list(zip(jobs, results, strict=True)))
        for job, res in zip(jobs, results, strict=True):
            if not res.ok:
                log.info("webhook delivery %s to webhook %s failed: %s", job.id,
                         job.subscription_id, res.error)
        return len(jobs)


class WebhookWorker:
    """The process's delivery thread (start with the server, stop with it)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sender = Sender(rt.settings.webhooks_allow_private,
                              rt.settings.webhooks_timeout_seconds)
        self._pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="callgate-webhook")

    def start(self) -> WebhookWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="callgate-webhooks",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        seen = events.committed.generation
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                sent = run_pass(self.rt, self._sender, self._pool)
            except Exception as exc:  # the next pass tries again
                log.error("webhook pass failed: %s", type(exc).__name__)
                log.debug("webhook pass failure", exc_info=exc)
                sent = 0
            if not sent:
                seen = events.committed.wait(seen, self.rt.settings.webhooks_poll_seconds)
            # At most one pass per MIN_PASS_SECONDS however many commits wake it: under
            # load a pass numbers and sends what a tenth of a second brought, and its
            # writes (SQLite's write lock) stay a small share of the queue's.
            rest = MIN_PASS_SECONDS - (time.monotonic() - started)
            if rest > 0:
                self._stop.wait(rest)

    def stop(self) -> None:
        self._stop.set()
        events.committed.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sender.close()


# --- for /metrics ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """What the metrics show of the webhooks (docs/integration.md)."""

    lag_seconds: float  # age of the oldest pending delivery (0 when none)
    pending: int
    failed: int  # deliveries given up
    failing_attempts: int  # pending deliveries' failed attempts so far
    subscriptions_down: int  # subscriptions waiting after no answer


def delivery_stats(rt: Runtime) -> DeliveryStats:
    """Webhook delivery lag and failure counts, for the metrics endpoint."""
    with rt.db.read() as s:
        now = rt.clock.now()
        oldest, pending, failing = s.execute(
            select(func.min(WebhookDelivery.created_at), func.count(),
                   func.coalesce(func.sum(WebhookDelivery.attempts), 0))
            .where(WebhookDelivery.status == "pending")).one()
        failed = s.scalar(select(func.count()).select_from(WebhookDelivery)
                          .where(WebhookDelivery.status == "failed")) or 0
        down = s.scalar(select(func.count()).select_from(WebhookSubscription)
                        .where(WebhookSubscription.deleted_at.is_(None),
                               WebhookSubscription.retry_at.is_not(None))) or 0
    if isinstance(oldest, str):  # SQLite aggregate: the stored text
        oldest = datetime.fromisoformat(iso(oldest))
    lag = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return DeliveryStats(lag, int(pending), int(failed), int(failing), int(down))


def start(rt: Runtime) -> WebhookWorker:
    return WebhookWorker(rt).start()
