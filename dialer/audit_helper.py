"""The audit log's background work in a helper process: sealing (core.auditlog.seal) and the
incremental check (core.auditverify.verify_incremental).

Both are CPU work in Python (a leaf's canonical JSON and hashes, per entry). In the serving
process they would take the GIL from the request threads: a server leasing 1,000 calls a
second seals ~2,000 entries a second. The hash chain did its hashing inside each writer's
commit; the Merkle log moves all of it off the request path, into one ``spawn``-ed helper
per server process, at a lower CPU priority (nice +10), ending with its server. The
scheduler's jobs (dialer.jobs) hand it the work and wait: on PostgreSQL the job's advisory
lock is held by the server while its helper seals, as before. If the helper cannot start or
dies, the work is done in the server process, and a new helper is started next time.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from core import auditlog, auditverify
from core.runtime import Runtime

log = logging.getLogger("callgate.audit")

HELPER_NICE = 10
TIMEOUT = 600.0


# --- in the helper ------------------------------------------------------------------------------

_runtime: Runtime | None = None


def _init(parent: int, settings: dict[str, Any]) -> None:
    """The helper's start: end with the server (a server killed with -9 leaves no orphan),
    run below the server's priority, build the runtime once (its own engine)."""
    global _runtime

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    try:
        os.nice(HELPER_NICE)
    except OSError:  # not permitted: run as it is
        pass
    from config.settings import Settings
    from core.runtime import build_runtime

    _runtime = build_runtime(Settings(**settings))


def _ready() -> bool:
    return _runtime is not None


def _seal() -> int:
    assert _runtime is not None
    return auditlog.seal(_runtime)


def _verify() -> auditverify.Verification:
    assert _runtime is not None
    return auditverify.verify_incremental(_runtime)


# --- in the server ------------------------------------------------------------------------------


@dataclass
class AuditHelper:
    """A server's helper process (``rt.state(AuditHelper)``), started on first use."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pool: ProcessPoolExecutor | None = None

    def _pool(self, rt: Runtime) -> ProcessPoolExecutor:
        with self.lock:
            if self.pool is None:
                self.pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init,
                    initargs=(os.getpid(), rt.settings.model_dump()),
                )
            return self.pool

    def run(self, rt: Runtime, fn: Any, fallback: Any) -> Any:
        """``fn()`` in the helper; ``fallback()`` here if the helper cannot do it."""
        try:
            return self._pool(rt).submit(fn).result(timeout=TIMEOUT)
        except (BrokenProcessPool, OSError) as exc:
            log.warning("audit helper unavailable (%s): working in this process",
                        type(exc).__name__)
            self.close()
            return fallback()

    def close(self) -> None:
        with self.lock:
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def start(rt: Runtime) -> None:
    """Start the helper now (a served process boots), not at the first seal: its start
    (imports, the runtime) is then over before the first requests."""
    try:
        rt.state(AuditHelper)._pool(rt).submit(_ready)
    except Exception as exc:  # the jobs fall back to this process
        log.warning("audit helper not started (%s)", type(exc).__name__)


def seal(rt: Runtime) -> int:
    """The ``audit_seal`` job: seal in the helper."""
    return int(rt.state(AuditHelper).run(rt, _seal, lambda: auditlog.seal(rt)))


def verify(rt: Runtime) -> auditverify.Verification:
    """The ``audit_verify`` job: check in the helper; the result is this process's latest
    (what the overview shows, without checking again)."""
    v: auditverify.Verification = rt.state(AuditHelper).run(
        rt, _verify, lambda: auditverify.verify_incremental(rt))
    auditverify.record_background(rt, v)
    return v
