"""The figures ``GET /metrics`` reads from the database at scrape time (core/metrics.py):
what *is*, the same whichever instance is scraped."""

from __future__ import annotations

from core import auditlog
from core.metrics import GaugeSource
from core.runtime import Runtime
from dialer.queue import store

Gauges = dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]]


def read_gauges(rt: Runtime) -> Gauges:
    with rt.read("system:metrics") as uow:
        depth = store.depth_by_state(uow.session, uow.now)
        oldest = auditlog.oldest_pending_at(uow.session)
        now = uow.now
    lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    return {
        "callgate_queue_depth": (
            "Calls in the queue by state: queued_due (eligible now), queued_waiting (a later "
            "not_before, a cap or a window), leased",
            ("state",), {(k,): float(v) for k, v in depth.items()},
        ),
        "callgate_audit_integration_lag_seconds": (
            "Age of the oldest committed audit entry not yet integrated into the Merkle log "
            "(0 when none waits)",
            (), {(): lag},
        ),
    }


def gauges(rt: Runtime) -> GaugeSource:
    return GaugeSource(lambda: read_gauges(rt))
