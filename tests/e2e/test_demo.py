"""``callgate demo`` as a newcomer runs it: a real process, a real HTTP server, a simulated
clock; it finishes well inside a minute with zero cap violations and a verified audit log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _callgate() -> list[str]:
    exe = shutil.which("callgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from api.cli import main; main()"]


def test_demo_small_run(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "CALLGATE_LOG_LEVEL": "WARNING"}
    for name in ("CALLGATE_POLICY_FILE", "CALLGATE_DATABASE_URL", "FORCE_COLOR"):
        env.pop(name, None)
    started = time.monotonic()
    proc = subprocess.run(
        [*_callgate(), "demo", "--patients", "300", "--days", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    elapsed = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"
    assert "audit log verified" in out
    assert "cap violations: 0" in out
    assert re.search(r"agent identification: ([\d,]+) of \1 reported calls", out), out
    assert "422 AGENT_ID_MISSING" in out
    assert "422 PURPOSE_NOT_ALLOWED" in out
    # On the call itself: a recorded call, an unverified disclosure, a reassigned number.
    assert re.search(r"flagged RECORDING_WITHOUT_CONSENT: agent A-\d\d", out), out
    assert re.search(r"flagged IDENTITY_NOT_VERIFIED: agent A-\d\d", out), out
    assert re.search(r"withdrawn NUMBER_REASSIGNED [1-9]", out), out
    # Texts: a template with a name refused, an SMS campaign sent, STOPs confirmed once each.
    assert "TEMPLATE_IDENTIFIER" in out
    assert re.search(r"texts sent [1-9]", out), out
    m_stop = re.search(r"STOP (\d+) -> confirmations sent (\d+)", out)
    assert m_stop and int(m_stop.group(1)) > 0 and m_stop.group(1) == m_stop.group(2), out
    assert "curl -s" in out and "/v1/audit/verify" in out
    # The throwaway database is where the output says, and can be reopened.
    m = re.search(r"CALLGATE_DATABASE_URL=sqlite:///(\S+) callgate serve", out)
    assert m and Path(m.group(1)).is_file() and Path(m.group(1)).is_relative_to(tmp_path)
    # No phone number in anything the demo printed to the log stream.
    assert not re.search(r"\+1\d{10}", proc.stderr)
    assert elapsed < 60, f"the demo took {elapsed:.1f}s"
