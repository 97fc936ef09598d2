"""Idempotent housekeeping jobs, run by the scheduler (dialer.jobs)."""

from __future__ import annotations

from collections.abc import Callable

from dialer.runtime import Runtime

JOBS: dict[str, Callable[[Runtime], int]] = {}
