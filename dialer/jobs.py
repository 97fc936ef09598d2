"""Scheduled jobs (APScheduler 3.x): a ``MemoryJobStore`` per process with schedules defined
here in code (a 3.x job store must never be shared between processes). Every job is
idempotent; on PostgreSQL each run holds ``pg_try_advisory_lock`` for its job so that several
API processes may all run schedulers and only one of them does a given job at a time."""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Callable
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from core.runtime import Runtime
from dialer import audit_helper

log = logging.getLogger("callgate.jobs")

JobFn = Callable[[Runtime], int]


def _jobs() -> dict[str, JobFn]:
    from dialer import maintenance

    return dict(maintenance.JOBS)


def run_guarded(runtime: Runtime, name: str, fn: JobFn) -> int | None:
    """Run ``fn`` unless another process holds this job's lock (PostgreSQL); None if skipped."""
    db = runtime.db
    if db.is_sqlite:
        return fn(runtime)
    key = zlib.crc32(f"callgate.job.{name}".encode())
    with db.engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            return None
        try:
            return fn(runtime)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _run(runtime: Runtime, name: str, fn: JobFn, quiet: bool = False) -> None:
    try:
        n = run_guarded(runtime, name, fn)
        if n:
            log.log(logging.DEBUG if quiet else logging.INFO, "job %s: %d rows", name, n)
    except Exception as exc:  # a failed run is retried at the next tick
        log.error("job %s failed: %s", name, type(exc).__name__)
        log.debug("job failure detail", exc_info=exc)


def start_scheduler(runtime: Runtime) -> Any:
    interval = runtime.settings.job_interval_seconds
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={
            "default": ThreadPoolExecutor(3),
            # Checkpoints on a thread of their own, at a lower CPU priority (see below).
            "background": ThreadPoolExecutor(
                1, pool_kwargs={"initializer": _lower_priority,
                                "thread_name_prefix": "callgate-checkpoint"}),
        },
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        timezone="UTC",
    )
    for name, fn in _jobs().items():
        scheduler.add_job(
            _run, "interval", seconds=interval, args=(runtime, name, fn), id=name, name=name
        )
    # The audit log's sequencer and checkpoints (core.auditlog), in this process's helper
    # (dialer.audit_helper): on PostgreSQL one process at a time.
    scheduler.add_job(
        _run, "interval", seconds=runtime.settings.audit_seal_seconds,
        args=(runtime, "audit_seal", audit_helper.seal, True), id="audit_seal",
        name="audit_seal",
    )
    # This process's incremental check of the log (core.auditverify), in its helper too:
    # every process keeps its own anchor, so that its overview stays cheap.
    scheduler.add_job(
        _verify_audit, "interval", seconds=runtime.settings.audit_verify_seconds,
        args=(runtime,),
        id="audit_verify", name="audit_verify",
    )
    if runtime.db.is_sqlite:
        # Checkpoints off the request path: see Database.checkpoint.
        scheduler.add_job(
            _checkpoint, "interval", seconds=CHECKPOINT_SECONDS, args=(runtime,),
            id="wal_checkpoint", name="wal_checkpoint", executor="background",
        )
    scheduler.start()
    return scheduler


def _verify_audit(runtime: Runtime) -> None:
    try:
        v = audit_helper.verify(runtime)
    except Exception as exc:  # the next tick tries again
        log.error("audit verify failed: %s", type(exc).__name__)
        return
    if not v.ok:
        log.error("AUDIT LOG CHECK FAILED at index %s: %s", v.index, v.problem)


CHECKPOINT_SECONDS = 0.25
CHECKPOINT_NICE = 10


def _lower_priority() -> None:
    """The checkpoint thread runs at nice +CHECKPOINT_NICE (Linux: a thread's own priority).
    Under 1,000 calls/s a checkpoint copied for 52-77 ms about once a second, and the
    slowest leases (the client waking late, the server's event loop late to read a request)
    fell in those windows on a two-core machine; nobody waits for the copying itself, only
    for the short last step under the write gate (docs/performance.md, seventh pass). Where
    the priority cannot be changed, the checkpoint runs as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECKPOINT_NICE)
    except (AttributeError, OSError):  # not Linux, or not permitted
        log.debug("checkpoint thread priority unchanged")


def _checkpoint(runtime: Runtime) -> None:
    try:
        runtime.db.checkpoint()
    except Exception as exc:  # the next tick tries again; SQLite's own remains the fallback
        log.error("WAL checkpoint failed: %s", type(exc).__name__)
