"""The scheduler a served process runs (dialer/jobs.py) and the SQLite write gate."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, text

from dialer import jobs
from dialer.db import Database
from dialer.migrate import upgrade
from dialer.models import AuditHead
from dialer.runtime import Runtime


def test_scheduler_has_every_job_and_checkpoints_sqlite(runtime: Runtime) -> None:
    sched = jobs.start_scheduler(runtime)
    try:
        names = {j.id for j in sched.get_jobs()}
    finally:
        sched.shutdown(wait=False)
    expected = set(jobs._jobs())
    if runtime.db.is_sqlite:
        expected.add("wal_checkpoint")
    assert names == expected


def test_checkpoint_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url)
    keep = db.engine.connect()  # an open connection keeps the WAL file from being removed
    keep.exec_driver_sql("SELECT 1").all()
    with db.write() as s:
        for i in range(200):
            s.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (:i, 0, 'x')"),
                      {"i": 100 + i})
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    raw = db.engine.raw_connection()
    cur = raw.cursor()
    cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
    before = cur.fetchall()
    raw.close()
    db.checkpoint()
    raw = db.engine.raw_connection()
    cur = raw.cursor()
    cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
    busy, frames, done = cur.fetchall()[0]
    raw.close()
    assert before[0][0] == 0 and (busy, frames == done) == (0, True)
    keep.close()
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditHead)) >= 200
    db.dispose()


def test_sqlite_writers_of_two_processes_take_turns(tmp_path: Path) -> None:
    """The gate's flock: a writer in another process waits for ours, and gets in the moment
    ours commits (no busy-handler sleep), and its write lands after ours."""
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
            from dialer import db as dbmod

            dbmod._gates.clear()
            other = Database(url)
            t = time.perf_counter()
            with other.write() as s:
                s.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (2, 0, 'child')"))
            os._exit(0 if time.perf_counter() - t < 5 else 3)
        except BaseException:
            os._exit(2)
    os.close(r)
    held = threading.Event()
    with db.write() as s:
        s.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (3, 0, 'parent')"))
        os.write(w, b"x")
        held.set()
        time.sleep(0.5)  # the child is now waiting at the gate
        with db.read() as r2:
            assert r2.scalar(select(func.count()).select_from(AuditHead)
                             .where(AuditHead.id == 2)) == 0
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    with db.read() as s:
        ids = set(s.scalars(select(AuditHead.id)))
    assert {2, 3} <= ids
    db.dispose()
