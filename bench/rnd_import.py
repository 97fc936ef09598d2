"""``callgate rnd import`` of a large answer file, timed, with the process's peak memory.

    python bench/rnd_import.py [--answers 200000] [--format csv|json] [--numbers 100000]
                               [--calls 20000] [--db sqlite|postgres]

Builds a fresh database (Alembic migrations) with ``--numbers`` written consents (bulk
inserted) and ``--calls`` queued calls on a campaign (through intake), writes an answer file
(two answers a number on average: ``no`` for the consent's date, about 5 % ``yes``, some
``no_data``; a few dozen invalid rows), then runs ``callgate rnd import FILE`` as a
subprocess under ``/usr/bin/time -v``: wall time and maximum resident set size of that
process. The import reads the file a chunk at a time (consent.rnd, consent.rnd_service):
its peak memory should not grow with the file. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def phone(i: int) -> str:
    # Valid US numbers: St. Louis (314), exchanges 200-999, lines 0000-9999.
    return f"+1314{200 + i // 10_000:03d}{i % 10_000:04d}"


def keys_in(work: Path) -> dict[str, Path]:
    """The audit keys and checkpoints in the run's directory, not the repository's."""
    return {"audit_key_file": work / "audit.key", "audit_checkpoint_dir": work / "checkpoints"}


def build(url: str, numbers: int, calls: int, obtained: datetime, work: Path) -> None:
    from sqlalchemy import insert

    from config.settings import Settings
    from core.keys import Identity, Role
    from core.migrate import upgrade
    from core.models import Consent
    from core.runtime import build_runtime
    from dialer.campaigns import create_campaign
    from dialer.intake.service import submit
    from dialer.schemas import CampaignIn

    upgrade(url)
    rt = build_runtime(Settings(database_url=url, policy_file=None, **keys_in(work)))
    now = rt.clock.now()
    rows = [{"id": str(uuid.uuid4()), "phone": phone(i), "patient_ref": f"MRN-{i}",
             "channels": ["autodialed_voice"], "purposes": ["*"], "method": "written",
             "obtained_at": obtained, "evidence_ref": "scan://x", "expires_at": None,
             "recorded_by": "bench", "recorded_at": now, "supersedes_id": None,
             "recording": False} for i in range(numbers)]
    with rt.db.write() as s:
        for k in range(0, len(rows), 10_000):
            s.execute(insert(Consent), rows[k:k + 10_000])
    who = Identity("bench", "bench", Role.admin)
    camp = create_campaign(rt, who, CampaignIn(
        name="bench", purpose="discharge_followup", provider_name="p",
        callback_number="+13145550199"))
    step = max(1, numbers // max(1, calls))
    submit(rt, who, camp.id, [{"external_id": f"e{i}", "phone": phone(i)}
                              for i in range(0, numbers, step)][:calls])
    rt.db.dispose()


def answer_file(path: Path, n: int, numbers: int, day: str, fmt: str) -> dict[str, int]:
    rng = random.Random(7)
    counts = {"yes": 0, "no": 0, "no_data": 0, "invalid": 0}
    with path.open("w", encoding="utf-8") as f:
        f.write("[" if fmt == "json" else "phone,date,answer,queried_at\n")
        for i in range(n):
            r = rng.random()
            ans = "yes" if r < 0.05 else "no_data" if r < 0.10 else "no"
            # Each pass over the numbers is a later query of the same consent dates.
            queried = f"2026-11-{10 + (i // numbers) % 15:02d}T15:00:00Z"
            row = {"phone": phone(i % numbers)[2:], "date": day, "answer": ans,
                   "queried_at": queried}
            if i % 5000 == 4999:
                row["date"], ans = "not a date", "invalid"
            counts[ans] += 1
            if fmt == "json":
                f.write(("," if i else "") + json.dumps(row))
            else:
                f.write(f"{row['phone']},{row['date']},{row['answer']},{row['queried_at']}\n")
        if fmt == "json":
            f.write("]")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", type=int, default=200_000)
    ap.add_argument("--numbers", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--format", choices=("csv", "json"), default="csv")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="callgate-rnd-bench-"))
    pg_name = None
    if a.db == "sqlite":
        url = f"sqlite:///{work / 'bench.db'}"
    else:
        import psycopg
        from sqlalchemy import make_url

        base = make_url(os.environ["CALLGATE_TEST_POSTGRES_URL"])
        pg_name = f"cg_rnd_{uuid.uuid4().hex[:8]}"
        admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{pg_name}"')
        url = base.set(database=pg_name).render_as_string(hide_password=False)
    obtained = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)
    t = time.monotonic()
    build(url, a.numbers, a.calls, obtained, work)
    setup_s = time.monotonic() - t
    path = work / f"answers.{a.format}"
    counts = answer_file(path, a.answers, a.numbers, obtained.date().isoformat(), a.format)
    env = {**os.environ, "CALLGATE_DATABASE_URL": url, "COLUMNS": "120",
           **{f"CALLGATE_{k.upper()}": str(v) for k, v in keys_in(work).items()}}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "cli.main", "rnd", "import", str(path)]
    t = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    print(p.stdout[-2000:])
    if pg_name:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    print(json.dumps({
        "db": a.db, "format": a.format, "answers": a.answers, "numbers": a.numbers,
        "calls": a.calls, "file_bytes": path.stat().st_size, "exit": p.returncode,
        "import_wall_s": round(wall, 2), "peak_rss_mb": round(rss_kb / 1024, 1),
        "setup_s": round(setup_s, 1), "expected": counts,
    }))


if __name__ == "__main__":
    main()
