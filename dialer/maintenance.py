"""Idempotent housekeeping jobs, run by the scheduler (dialer.jobs)."""

from __future__ import annotations

from collections.abc import Callable

from dialer.queue import expire_deadlines, expire_leases
from dialer.runtime import Runtime

JOBS: dict[str, Callable[[Runtime], int]] = {
    "expire_leases": expire_leases,
    "expire_deadlines": expire_deadlines,
}
