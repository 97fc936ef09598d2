"""The audit log of real ``callgate serve`` processes:

* ``examples/verify_audit.py`` (standard library and ``cryptography`` only) checks a live
  server's checkpoint against the pinned key, entries' inclusion, and consistency with a
  checkpoint it saved earlier; after the issue's rewrite (entries deleted, the rest
  renumbered and re-hashed, the checkpoints re-signed with the server's own key) the saved
  checkpoint gives it away;
* two instances on one PostgreSQL database, both running the sequencer job, under load:
  one tree, every entry in it exactly once, every checkpoint of either instance holding.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from config.settings import Settings
from core import auditlog, auditverify
from core.db import Database
from core.models import AuditEntry
from tests.conftest import PG_URL
from tests.e2e.serverproc import Server, make_keys, write_policy
from tests.helpers import rewrite_log

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "verify_audit.py"
FAST = {"CALLGATE_AUDIT_SEAL_SECONDS": "0.2", "CALLGATE_AUDIT_CHECKPOINT_SECONDS": "0.5"}


def _phone(i: int) -> str:
    return f"+1314{3_000_000 + i:07d}"


def _consent(i: int) -> dict[str, Any]:
    return {"patient_ref": f"MRN-{i}", "phone": _phone(i), "channels": ["autodialed_voice"],
            "purposes": ["*"], "method": "written", "obtained_at": "2026-01-05T10:00:00Z",
            "evidence_ref": f"scan://{i}"}


def _checkpoint_at_least(url: str, key: dict[str, str], size: int, timeout: float = 30
                         ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v1/audit/checkpoint", headers=key, timeout=10)
        if r.status_code == 200 and r.json()["size"] >= size:
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of size >= {size} within {timeout} s")


def _entries(db_url: str) -> int:
    db = Database(db_url)
    try:
        with db.read() as s:
            return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)
    finally:
        db.dispose()


def _auditor(url: str, key: dict[str, str], *args: str, cwd: Path
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url,
         "--api-key", key["Authorization"].split(" ", 1)[1], *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"},
    )


def test_the_auditor_script_against_a_live_server(db_url: str, tmp_path: Path) -> None:
    keys = make_keys(db_url)
    c = keys["compliance"]
    server = Server(tmp_path, db_url, policy=write_policy(tmp_path), env=FAST,
                    log_level="WARNING").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(12):
                assert http.post("/v1/consents", json=_consent(i),
                                 headers=keys["campaign_manager"]).status_code == 201
                assert http.get("/v1/consents", params={"phone": _phone(i)},
                                headers=c).status_code == 200
            first = _checkpoint_at_least(server.url, c, _entries(db_url))
            vkey = http.get("/v1/audit/key", headers=c).json()["vkey"]
        # The operator's key, pinned (published out of band): the same as the server serves.
        pinned = auditlog.load_signer(Settings())[0].vkey
        assert vkey == pinned
        r = _auditor(server.url, c, "--vkey", pinned, "--save", "cp1.note", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"size {first['size']}" in r.stdout and "WARNING" not in r.stderr
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(12, 20):
                http.post("/v1/consents", json=_consent(i), headers=keys["campaign_manager"])
        second = _checkpoint_at_least(server.url, c, _entries(db_url))
        assert second["size"] > first["size"]
        last = second["size"] - 1
        r = _auditor(server.url, c, "--vkey", pinned, "--since", "cp1.note", "--entry", "0",
                     "--entry", str(first["size"] - 1), "--entry", str(last),
                     "--save", "cp2.note", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"extends the saved one of size {first['size']}" in r.stdout
        assert f"entry {last} (consent.recorded) is in the tree of size {second['size']}" in (
            r.stdout)
        assert f"entry 0 (key.created) is in the tree of size {second['size']}" in r.stdout
        # An older checkpoint by size, and its consistency with the newer one.
        r = _auditor(server.url, c, "--vkey", pinned, "--size", str(first["size"]),
                     "--entry", "3", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        with httpx.Client(base_url=server.url, timeout=30) as http:
            verify = http.get("/v1/audit/verify", headers=c).json()
        assert verify["ok"] is True and verify["entries"] >= first["size"], verify

        # The insider's rewrite, re-signed with the server's own key: the saved checkpoint
        # (the auditor's copy) catches it.
        from config.clock import SystemClock
        from config.policy import load_policy
        from core.runtime import Runtime

        db = Database(db_url)
        try:
            rt = Runtime(db=db, policy=load_policy(), clock=SystemClock(), settings=Settings())
            rewrite_log(rt, drop={5, 6}, pad=2)
        finally:
            db.dispose()
        r = _auditor(server.url, c, "--vkey", pinned, "--since", "cp2.note", cwd=tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert ("fork: two different roots are signed" in r.stderr
                or "log was rewritten" in r.stderr), r.stderr
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/v1/audit/verify", headers=c).json()["ok"] is False
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()
    assert "audit helper unavailable" not in server.log_text()  # sealed in the helper


@pytest.mark.skipif(not PG_URL, reason="CALLGATE_TEST_POSTGRES_URL not set")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_instances_on_postgresql_leave_one_tree(db_url: str, tmp_path: Path) -> None:
    keys = make_keys(db_url)
    policy = write_policy(tmp_path)
    dirs = [tmp_path / "cp-a", tmp_path / "cp-b"]
    servers = [
        Server(tmp_path, db_url, policy=policy, name=f"server-{n}", log_level="WARNING",
               env={**FAST, "CALLGATE_AUDIT_CHECKPOINT_DIR": str(d)}).start()
        for n, d in zip("ab", dirs, strict=True)
    ]
    errors: list[str] = []
    stop = time.monotonic() + 8
    counter = iter(range(10**6))
    lock = threading.Lock()

    def client(server: Server) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while time.monotonic() < stop:
                with lock:
                    i = next(counter)
                for r in (
                    http.post("/v1/consents", json=_consent(i),
                              headers=keys["campaign_manager"]),
                    http.get("/v1/consents", params={"phone": _phone(i)},
                             headers=keys["compliance"]),
                    http.post("/v1/check", json={"phone": _phone(i),
                                                 "purpose": "discharge_followup"},
                              headers=keys["dialer"]),
                ):
                    if r.status_code not in (200, 201):
                        errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(s,)) for s in servers for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        total = _entries(db_url)
        # Both sequencers keep running; wait until every entry is sealed and signed.
        cp = _checkpoint_at_least(servers[0].url, keys["compliance"], total)
        assert cp["size"] == total
    finally:
        for s in servers:
            s.stop()
    for s in servers:
        assert "Traceback" not in s.log_text(), s.log_text()[-3000:]
        assert "audit helper unavailable" not in s.log_text()
    sign, _ = auditlog.load_signer(Settings())
    db = Database(db_url)
    try:
        with db.read() as s:
            assert auditlog.pending_count(s) == 0
            assert auditlog.tree_size(s) == total
        files = [len(auditlog.checkpoint_files(d)) for d in dirs]
        assert sum(files) > 2, files
        for d in dirs:
            report = auditverify.verify_full(db, sign.verifier, sign.origin, d)
            assert report.ok and report.size == total, report
            assert report.files == len(auditlog.checkpoint_files(d))
    finally:
        db.dispose()
    print(f"two instances: {total} entries sealed, checkpoint files per instance {files}")
