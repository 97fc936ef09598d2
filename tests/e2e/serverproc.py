"""A real ``callgate serve`` process for end-to-end tests: start, wait for /healthz, kill -9,
stop, read its log. Plus the seeding the e2e tests share (keys, consents in bulk, a policy
whose calling window is open at any hour, since real servers use the wall clock)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import insert

from core.db import Database
from core.keys import Role, create_key
from core.models import Consent

# Calling hours all day, every day, no holidays: the tests run at any wall-clock hour. (The
# server prints a loud policy warning for this at start; that is expected here.)
OPEN_POLICY = """\
version = "e2e-open"
[calling_hours]
start = "00:00"
end = "24:00"
[caps]
per_day = {per_day}
per_week = {per_week}
period = "rolling"
[quiet_days]
holidays = ""
rules = []
"""


def write_policy(directory: Path, per_day: int = 1, per_week: int = 3) -> Path:
    path = directory / "policy.toml"
    path.write_text(OPEN_POLICY.format(per_day=per_day, per_week=per_week))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def callgate_command() -> list[str]:
    exe = shutil.which("callgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from api.cli import main; main()"]


class Server:
    """One ``callgate serve`` process on 127.0.0.1 and a free port; its stderr goes to a file."""

    def __init__(
        self,
        workdir: Path,
        db_url: str,
        *,
        policy: Path | None = None,
        name: str = "server",
        log_level: str = "INFO",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir, self.db_url, self.policy, self.name = workdir, db_url, policy, name
        self.log_level = log_level
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 60) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = free_port()
        self.starts += 1
        env = {
            **os.environ,
            "CALLGATE_DATABASE_URL": self.db_url,
            "CALLGATE_LOG_LEVEL": self.log_level,
            **self.extra_env,
        }
        if self.policy is not None:
            env["CALLGATE_POLICY_FILE"] = str(self.policy)
        else:
            env.pop("CALLGATE_POLICY_FILE", None)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts} on port {self.port}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [*callgate_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill9()
        raise AssertionError(f"{self.name} did not answer /healthz:\n{self.log_text()}")

    def kill9(self) -> None:
        """``kill -9``: no shutdown handler, no flush, no rollback but the database's own."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_keys(db_url: str, roles: Iterable[Role] = tuple(Role)) -> dict[str, dict[str, str]]:
    """One key per role, created directly in the database: Authorization headers by role."""
    db = Database(db_url)
    try:
        now = datetime.now(UTC)
        out = {}
        for role in roles:
            _, plaintext = create_key(db, role, f"e2e-{role.value}-{uuid.uuid4().hex[:6]}", now)
            out[role.value] = {"Authorization": f"Bearer {plaintext}"}
        return out
    finally:
        db.dispose()


def seed_consents(db_url: str, phone_list: Iterable[str], *, recorded_by: str = "e2e") -> int:
    """Written consent for every number, all channels and purposes, bulk-inserted (the API
    would take minutes for tens of thousands). Obtained a month ago, no expiry."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "id": str(uuid.uuid4()),
            "phone": p,
            "patient_ref": f"MRN-{i}",
            "channels": ["autodialed_voice", "prerecorded_voice", "sms"],
            "purposes": ["*"],
            "method": "written",
            "obtained_at": now - timedelta(days=30),
            "evidence_ref": f"scan://consents/{i}.pdf",
            "expires_at": None,
            "recorded_by": recorded_by,
            "recorded_at": now - timedelta(days=30),
            "supersedes_id": None,
        }
        for i, p in enumerate(phone_list)
    ]
    db = Database(db_url)
    try:
        for i in range(0, len(rows), 5000):
            with db.write() as s:
                s.execute(insert(Consent), rows[i : i + 5000])
    finally:
        db.dispose()
    return len(rows)


def campaign(client: httpx.Client, headers: dict[str, str], **overrides: Any) -> str:
    body: dict[str, Any] = {
        "name": "E2E discharge follow-up",
        "purpose": "discharge_followup",
        "channel": "autodialed_voice",
        "provider_name": "Mercy Heart Clinic",
        "callback_number": "+1 314 555 0199",
        "max_attempts": 3,
        **overrides,
    }
    r = client.post("/v1/campaigns", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])
