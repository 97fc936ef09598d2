"""The scheduler a served process runs (dialer/jobs.py) and the SQLite write gate."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import func, select, text

from core.db import Database
from core.migrate import upgrade
from core.models import AuditCheckpoint
from core.runtime import Runtime
from dialer import jobs


def test_scheduler_has_every_job_and_checkpoints_sqlite(runtime: Runtime) -> None:
    sched = jobs.start_scheduler(runtime)
    try:
        names = {j.id for j in sched.get_jobs()}
        executors = {j.id: j.executor for j in sched.get_jobs()}
    finally:
        sched.shutdown(wait=False)
    expected = set(jobs._jobs()) | {"audit_seal", "audit_verify"}
    if runtime.db.is_sqlite:
        expected.add("wal_checkpoint")
    assert names == expected
    if runtime.db.is_sqlite:
        assert executors.pop("wal_checkpoint") == "background"
    assert set(executors.values()) == {"default"}


def test_the_checkpoint_thread_runs_at_a_lower_priority() -> None:
    """Linux: the initializer of the checkpoint's thread lowers that thread's priority only."""
    import threading

    seen: list[int] = []

    def body() -> None:
        jobs._lower_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [min(before + jobs.CHECKPOINT_NICE, 19)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_checkpoint_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    """Committed pages sit in the WAL (far below wal_autocheckpoint) until Database.checkpoint
    copies them into the database file, which then grows."""
    path = tmp_path / "ck.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url)
    keep = db.engine.connect()  # an open connection keeps the WAL from being checkpointed
    keep.exec_driver_sql("SELECT 1").all()  # and removed when the writer's connection closes
    with db.write() as s:
        s.execute(text("INSERT INTO audit_checkpoints (size, root_hash, at, note) "
                       "VALUES (:i, x'00', '2026-01-01', :h)"),
                  [{"i": 100 + i, "h": f"{i:064d}"} for i in range(5000)])
    assert Path(f"{path}-wal").stat().st_size > 0
    before = path.stat().st_size
    db.checkpoint()
    after = path.stat().st_size
    keep.close()
    assert after > before + 100_000  # ~5,000 rows of 64-character text moved in
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditCheckpoint)) >= 5000
    db.dispose()


def test_checkpoint_of_a_long_wal_catches_up_holding_the_gate_and_the_wal_starts_over(
    tmp_path: Path,
) -> None:
    """Past CHECKPOINT_RESTART_PAGES, Database.checkpoint finishes holding the write gate: it
    waits for a writer in its transaction, and then every page is in the file, so the next
    writer starts the WAL over from the top (SQLite's own checkpoint inside a commit, with
    its fsync under the write lock, is never reached)."""
    import threading

    from core.db import CHECKPOINT_RESTART_PAGES

    path = tmp_path / "restart.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url)
    with db.write() as s:
        s.execute(text("INSERT INTO audit_checkpoints (size, root_hash, at, note) "
                       "VALUES (:i, x'00', '2026-01-01', :h)"),
                  [{"i": 100 + i, "h": f"{i:0600d}"} for i in range(50_000)])
    done: list[int] = []
    with db.write() as s:  # a writer in its transaction: the catch-up waits for it
        s.execute(text("UPDATE audit_checkpoints SET at = '2026-01-02' WHERE size = 100"))
        worker = threading.Thread(target=lambda: done.append(db.checkpoint()))
        worker.start()
        worker.join(timeout=2)
        assert worker.is_alive() and not done  # copied outside, now waiting at the gate
    worker.join(timeout=30)
    assert done and done[0] >= CHECKPOINT_RESTART_PAGES  # the WAL's length before
    with db.write() as s:  # this writer starts the WAL over
        s.execute(text("UPDATE audit_checkpoints SET at = '2026-01-03' WHERE size = 100"))
    conn = db.engine.raw_connection()
    try:
        _busy, frames, _copied = conn.cursor().execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    assert frames < 100  # not thousands: written from the top again
    db.dispose()


def test_sqlite_writers_of_two_processes_take_turns(tmp_path: Path) -> None:
    """The gate's flock: while our unit of work runs, another process finds the flock taken,
    its writer waits for ours, and its write lands after ours. The other process is a fork
    of this one holding the gate: it must make its own (core.db forgets gates at a fork)."""
    path = tmp_path / "gate.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other process: its own Database, hence its own engine and flock fd
        os.close(w)
        os.read(r, 1)  # wait until the parent holds the gate
        try:
            import fcntl

            probe = os.open(f"{path}-writelock", os.O_RDWR)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os._exit(4)  # the parent's unit of work did not hold the flock
            except BlockingIOError:
                pass
            other = Database(url)
            t = time.perf_counter()
            with other.write() as s:
                s.execute(text("INSERT INTO audit_checkpoints (size, root_hash, at, note) "
                               "VALUES (2, x'00', '2026-01-01', 'child')"))
            waited = time.perf_counter() - t
            os._exit(0 if 0.2 < waited < 5 else 3)
        except BaseException:
            os._exit(2)
    os.close(r)
    with db.write() as s:
        s.execute(text("INSERT INTO audit_checkpoints (size, root_hash, at, note) "
                       "VALUES (3, x'00', '2026-01-01', 'parent')"))
        os.write(w, b"x")
        time.sleep(0.5)  # the child is now waiting at the gate
        with db.read() as r2:
            assert r2.scalar(select(func.count()).select_from(AuditCheckpoint)
                             .where(AuditCheckpoint.size == 2)) == 0
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    with db.read() as s:
        ids = set(s.scalars(select(AuditCheckpoint.size)))
    assert {2, 3} <= ids
    db.dispose()
