"""Fuzz the served OpenAPI document with schemathesis, as each role (issue 16).

    python -m bench.fuzz [--seconds 600] [--roles admin,campaign_manager,dialer,compliance,none]

Starts one real ``callgate serve`` (SQLite in a temporary directory, a policy whose calling
window is always open), seeds it over HTTP (consents, a campaign, a call list, live leases),
then runs ``schemathesis run`` once per role, all at the same time, each for ``--seconds``
(``--max-time``: its fuzzing and stateful phases repeat until the time is spent), with the
check ``not_a_server_error``. Prints each run's summary line and exits non-zero if any run
found a failure. Not part of the test suite (tests/integration/test_schemathesis.py is its
bounded, in-process counterpart).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.hostile import Served

OPEN_POLICY = """\
version = "fuzz-open"
[calling_hours]
start = "00:00"
end = "24:00"
[caps]
per_day = 50
per_week = 200
[quiet_days]
holidays = ""
rules = []
"""


def _seed(url: str, keys: dict[str, str]) -> None:
    mgr = {"Authorization": f"Bearer {keys['campaign_manager']}"}
    dialer = {"Authorization": f"Bearer {keys['dialer']}"}
    obtained = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    phones = [f"+1314555{100 + i:04d}" for i in range(30)]
    for p in phones:
        r = httpx.post(f"{url}/v1/consents", headers=mgr, json={
            "patient_ref": "MRN-1", "phone": p, "channels": ["autodialed_voice"],
            "purposes": ["*"], "method": "written", "obtained_at": obtained,
            "evidence_ref": "scan://fuzz"})
        assert r.status_code == 201, r.text
    camp = httpx.post(f"{url}/v1/campaigns", headers=mgr, json={
        "name": "fuzz", "purpose": "discharge_followup", "channel": "autodialed_voice",
        "provider_name": "Clinic", "callback_number": "+1 314 555 0199"})
    assert camp.status_code == 201, camp.text
    rows = [{"external_id": f"f{i}", "phone": p} for i, p in enumerate(phones)]
    r = httpx.post(f"{url}/v1/campaigns/{camp.json()['id']}/calls", headers=mgr, json=rows)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/v1/queue/lease", headers=dialer,
                   json={"dialer_id": "fuzz", "limit": 10, "lease_seconds": 900})
    assert r.status_code == 200, r.text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--roles", default="admin,campaign_manager,dialer,compliance,none")
    ap.add_argument("--out", default=None, help="directory for the reports")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cg-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    policy = out / "policy.toml"
    policy.write_text(OPEN_POLICY)
    import os

    os.environ["CALLGATE_POLICY_FILE"] = str(policy)
    srv = Served(None)
    try:
        roles = args.roles.split(",")
        keys = {r: srv.key(r) for r in ("admin", "campaign_manager", "dialer", "compliance")}
        url = f"http://127.0.0.1:{srv.port}"
        _seed(url, keys)
        exe = str(Path(sys.executable).parent / "schemathesis")
        runs = {}
        started = time.monotonic()
        for role in roles:
            cmd = [exe, "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                   "--max-time", str(args.seconds), "--workers", "1",
                   "--generation-with-security-parameters", "false",
                   "--request-timeout", "30", "--continue-on-failure", "--no-color",
                   "--report", "junit", "--report-junit-path", str(out / f"{role}.xml")]
            if role != "none":
                cmd += ["-H", f"Authorization: Bearer {keys[role]}"]
            log = (out / f"{role}.log").open("w")
            runs[role] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
        results = {}
        for role, (proc, log) in runs.items():
            proc.wait()
            log.close()
            text = (out / f"{role}.log").read_text(errors="replace")
            summary = [ln for ln in text.splitlines()
                       if re.search(r"\d+ (passed|failed)|test cases|failures|errors", ln)]
            results[role] = {"exit": proc.returncode, "summary": summary[-6:]}
        results["_elapsed_s"] = round(time.monotonic() - started)  # type: ignore[assignment]
        results["_reports"] = str(out)  # type: ignore[assignment]
        server_log = Path(srv.dir, "server.log").read_text(errors="replace")
        results["_server_500s"] = server_log.count("unhandled error")  # type: ignore[assignment]
        print(json.dumps(results, indent=2))
        failed = any(isinstance(v, dict) and v["exit"] != 0 for v in results.values())
        sys.exit(1 if failed else 0)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
