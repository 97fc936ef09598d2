"""A real ``callgate serve`` process: it migrates a fresh database, answers /healthz, and stops
on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _callgate() -> list[str]:
    exe = shutil.which("callgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from api.cli import main; main()"]


def test_serve_answers_healthz(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "CALLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "CALLGATE_LOG_LEVEL": "WARNING",
    }
    env.pop("CALLGATE_POLICY_FILE", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*_callgate(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        resp = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        output = (tmp_path / "serve.log").read_text(errors="replace")
        assert resp is not None, f"server did not answer; exit={proc.poll()}\n{output}"
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok", "database": "ok"}
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "server" not in resp.headers
        # The database was created and migrated by the serve command.
        assert (tmp_path / "serve.db").exists()
        unauth = httpx.get(f"http://127.0.0.1:{port}/v1/audit/verify", timeout=5)
        assert unauth.status_code == 401
        assert unauth.json()["error"]["code"] == "UNAUTHORIZED"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
            proc.kill()
            proc.wait()
            pytest.fail("callgate serve did not stop on SIGTERM")
        log.close()
    assert proc.returncode in (0, -signal.SIGTERM)
