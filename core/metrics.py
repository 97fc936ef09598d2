"""Prometheus metrics (``GET /metrics``, docs/integration.md "Metrics").

Counters of what happened are kept per process and counted *after the commit* of the
transaction that did it (:func:`count_on_commit`): a rolled-back lease, outcome or refusal
is never counted. Gauges of what *is* (queue depth by state, the audit log's integration lag)
are read from the database at scrape time (dialer/metrics.py), so every instance reports the
same figures and a scrape of any one of them is enough for those.

Labels are bounded and never carry patient data: the route *template*
(``/v1/dnc/{phone}``, never the path), the method, the status, a reason code, a stage, an
outcome's result, a call's status.

With ``callgate serve --workers N`` the processes share their counters through
prometheus-client's multiprocess mode: ``callgate serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
(a fresh directory) before the workers start, and a scrape of any worker sums them all
(:func:`render`). With one process (the default) the process's own registry is served.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "callgate_http_requests", "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "callgate_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LEASED = Counter("callgate_leased_tasks", "Calls leased to dialers (tasks handed out)")
LEASE_POLLS = Counter(
    "callgate_lease_requests", "Lease requests answered, by whether they got tasks",
    ["result"],  # tasks | empty
)
OUTCOMES = Counter("callgate_outcomes", "Call outcomes reported, by result", ["result"])
REFUSALS = Counter(
    "callgate_refusals",
    "Rows written to the refusal log, by first reason code and stage (intake | dispatch)",
    ["code", "stage"],
)
# Webhook deliveries report through observe_webhook_delivery() (webhooks/worker.py, each
# attempt's result); the backlog itself is webhooks.worker.delivery_stats().
WEBHOOK_FAILURES = Counter(
    "callgate_webhook_delivery_failures",
    "Webhook delivery attempts that failed (no 2xx)",
)
WEBHOOK_LAG = Gauge(
    "callgate_webhook_delivery_lag_seconds",
    "Seconds between an event's delivery being queued and its latest successful delivery",
    multiprocess_mode="max",
)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered HTTP request (api/middleware.py, the access log's line). A method
    outside the standard ones is ``OTHER``: a client must not mint label values."""
    method = method if method in _METHODS else "OTHER"
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def observe_webhook_delivery(ok: bool, lag_seconds: float) -> None:
    """The one place webhook deliveries report to (the hook for the webhooks feature):
    a failed attempt counts a failure; a delivered event sets the lag (event -> delivery)."""
    if ok:
        WEBHOOK_LAG.set(max(0.0, lag_seconds))
    else:
        WEBHOOK_FAILURES.inc()


_PENDING = "callgate_metrics_pending"


def count_on_commit(session: Session, counter: Counter, labels: Iterable[str] = (),
                    n: float = 1) -> None:
    """Count ``n`` on ``counter`` when ``session``'s transaction commits (nothing if it
    rolls back)."""
    if n:
        session.info.setdefault(_PENDING, []).append((counter, tuple(labels), n))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for counter, labels, n in session.info.pop(_PENDING, ()):
        (counter.labels(*labels) if labels else counter).inc(n)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


class GaugeSource(Collector):
    """Gauges read at scrape time from a function returning
    ``{name: (help, label names, {label values: value})}``."""

    def __init__(self, read: Any) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (help_text, label_names, values) in self.read().items():
            family = GaugeMetricFamily(name, help_text, labels=list(label_names))
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render(extra: Collector | None = None) -> bytes:
    """The text exposition: this process's (or, in multiprocess mode, every worker's)
    counters, plus ``extra`` (the database gauges)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Everything())
    if extra is not None:
        registry.register(extra)
    return generate_latest(registry)


class _Everything(Collector):
    """The process's default registry (its counters, and the process and platform
    collectors), inside a registry of one scrape."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()
