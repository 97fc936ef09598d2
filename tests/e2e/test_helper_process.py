"""The intake helper process (dialer/intake_pool.py) ends with the process that started it,
even one killed with -9: no orphan keeps its ~180 MB."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def test_helper_exits_when_its_parent_is_killed() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from dialer.intake import pool as intake_pool\n"
        "intake_pool.pool().submit(intake_pool._warm).result()\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == b"ready"
        kids = _children(parent.pid)
        assert kids, "the helper runs"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{k}") for k in kids):
        time.sleep(0.2)
    left = [k for k in kids if os.path.exists(f"/proc/{k}")
            and "zombie" not in Path(f"/proc/{k}/status").read_text().lower()]
    assert left == [], "helper processes outlived their parent"
