"""Call-list intake, end to end: a CSV POSTed to the real server, timed.

    python bench/intake.py [--rows 100000] [--db sqlite|postgres] [--keep]

Builds a fresh database (Alembic migrations), a synthetic population of distinct US numbers
spread over every US time zone (most with written or e-signed consent; some oral, expired,
revoked or on do-not-call; some with none), writes a CSV with a few invalid rows, starts
``callgate serve`` as a subprocess on a free port, creates an admin key and a campaign,
then times one POST of the whole list, response included. In the same run it times the
floor: ``phonenumbers`` parse + is_valid_number + format_number(E164) over the same raw
numbers in a bare loop, the work no intake can skip. The server's peak RSS is read from
/proc/PID/status (VmHWM) before it is stopped.

PostgreSQL uses CALLGATE_TEST_POSTGRES_URL's server and a throwaway database, dropped after.
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import phonenumbers  # noqa: E402
from sqlalchemy import insert, make_url  # noqa: E402

from core.db import Database  # noqa: E402
from core.keys import Role, create_key  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.models import Consent, DncEntry, Revocation  # noqa: E402

# Area codes in every US zone: Eastern, Central, Mountain, Arizona, Pacific, Alaska, Hawaii,
# and a few that span zones or states (Florida panhandle, Texas, Indiana, Kentucky).
AREA_CODES = (
    212, 305, 404, 617, 215, 313, 704, 202, 412, 904,  # Eastern
    312, 314, 713, 214, 504, 612, 615, 816, 901, 402,  # Central
    303, 801, 505, 406, 307, 208,  # Mountain
    602, 520,  # Arizona
    415, 213, 206, 503, 702, 916,  # Pacific
    907, 808,  # Alaska, Hawaii
    850, 915, 317, 270,  # mixed zones
)
ZIPS = ("63110", "10001", "60601", "94103", "98101", "80202", "85004", "33101", "77002",
        "30303", "02108", "99501", "96813", "46204", "40202")
STATES = ("MO", "NY", "IL", "CA", "WA", "CO", "AZ", "FL", "TX", "GA", "MA", "AK", "HI")
FORMATS = ("+1 {a} {e} {l}", "({a}) {e}-{l}", "{a}.{e}.{l}", "{a}{e}{l}", "1-{a}-{e}-{l}")


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- population ----------------------------------------------------------------------------


def numbers(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` distinct valid US numbers as (raw as written in the list, E.164)."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        a = rng.choice(AREA_CODES)
        e = rng.randint(200, 999)
        line = rng.randint(0, 9999)
        e164 = f"+1{a}{e}{line:04d}"
        if e164 in seen or e % 100 == 11:  # N11 exchanges are not assignable
            continue
        if not phonenumbers.is_valid_number(phonenumbers.parse(e164)):
            continue
        seen.add(e164)
        raw = rng.choice(FORMATS).format(a=a, e=e, l=f"{line:04d}")
        out.append((raw, e164))
    return out


def populate(db: Database, phones: list[str], rng: random.Random, now: datetime) -> Counter[str]:
    """Consents (and revocations, do-not-call entries) inserted in bulk; returns the mix."""
    kinds: Counter[str] = Counter()
    consents: list[dict[str, Any]] = []
    revocations: list[dict[str, Any]] = []
    dnc: list[dict[str, Any]] = []
    obtained = now - timedelta(days=60)
    for p in phones:
        x = rng.random()
        kind = (
            "written" if x < 0.80 else
            "esigned" if x < 0.86 else
            "oral" if x < 0.89 else
            "expired" if x < 0.92 else
            "revoked" if x < 0.94 else
            "dnc" if x < 0.96 else
            "none"
        )
        kinds[kind] += 1
        if kind == "none":
            continue
        consents.append({
            "id": str(uuid.uuid4()), "phone": p, "patient_ref": f"MRN-{p[-6:]}",
            "channels": ["autodialed_voice", "prerecorded_voice", "sms"], "purposes": ["*"],
            "method": {"esigned": "electronic_signature", "oral": "oral"}.get(kind, "written"),
            "obtained_at": obtained, "evidence_ref": "scan://bench",
            "expires_at": now - timedelta(days=1) if kind == "expired" else None,
            "recorded_by": "bench", "recorded_at": obtained, "supersedes_id": None,
        })
        if kind == "revoked":
            revocations.append({
                "id": str(uuid.uuid4()), "phone": p, "source": "letter",
                "received_at": now - timedelta(days=5), "recorded_at": now - timedelta(days=5),
                "recorded_by": "bench", "call_id": None,
            })
        if kind in ("revoked", "dnc"):
            dnc.append({
                "id": str(uuid.uuid4()), "phone": p, "reason": "bench", "source": "manual",
                "added_by": "bench", "added_at": now - timedelta(days=5), "lifted_at": None,
                "lifted_by": None, "lift_reason": None,
            })
    step = 10_000
    with db.write() as s:
        for model, rows in ((Consent, consents), (Revocation, revocations), (DncEntry, dnc)):
            for i in range(0, len(rows), step):
                s.execute(insert(model), rows[i : i + step])
    return kinds


def write_csv(path: Path, pop: list[tuple[str, str]], rows: int, rng: random.Random,
              now: datetime) -> Counter[str]:
    """The list: one row per number, with ~1% bad phones, ~0.5% bad dates, ~0.3% repeats."""
    mix: Counter[str] = Counter()
    later = (now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "patient_ref", "phone", "not_before", "not_after",
                    "postal_code", "state", "priority"])
        for i in range(rows):
            raw, _ = pop[i]
            x = rng.random()
            not_after = later if rng.random() < 0.5 else ""
            if x < 0.01:
                raw, kind = rng.choice(("12345", "555-CALL-NOW", "+44 20", "")), "bad_phone"
            elif x < 0.015:
                not_after, kind = rng.choice(("2026-13-45", "tomorrow", "2026-11-30T09:00")), \
                    "bad_date"
            elif x < 0.018 and i > 0:
                raw, kind = pop[i - 1][0], "repeat_number"
            else:
                kind = "row"
            mix[kind] += 1
            w.writerow([
                f"enc-{i:07d}", f"MRN-{i:07d}", raw, "", not_after,
                rng.choice(ZIPS) if rng.random() < 0.3 else "",
                rng.choice(STATES) if rng.random() < 0.3 else "",
                rng.randint(1, 10) if rng.random() < 0.5 else "",
            ])
    return mix


def parse_floor(raws: list[str]) -> float:
    """Rows per second of the bare phonenumbers work intake cannot avoid."""
    t = time.perf_counter()
    for raw in raws:
        try:
            num = phonenumbers.parse(raw, "US")
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return len(raws) / (time.perf_counter() - t)


# --- databases -----------------------------------------------------------------------------


class Throwaway:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.name = f"cg_bench_{uuid.uuid4().hex[:10]}"
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp / 'bench.db'}"
            return
        base = os.environ.get("CALLGATE_TEST_POSTGRES_URL", "").strip()
        if not base:
            sys.exit("--db postgres needs CALLGATE_TEST_POSTGRES_URL")
        self.base = make_url(base)
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = self.base.set(database=self.name).render_as_string(hide_password=False)

    def _admin(self) -> Any:
        import psycopg

        u = self.base
        return psycopg.connect(host=u.host or "localhost", port=u.port or 5432, user=u.username,
                               password=u.password, dbname=u.database, autocommit=True)

    def drop(self) -> None:
        if self.kind != "sqlite":
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- the server ----------------------------------------------------------------------------


def start_server(url: str, rows: int, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "callgate"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cli.main"]
    env = {
        **os.environ,
        "CALLGATE_DATABASE_URL": url,
        "CALLGATE_MAX_BODY_BYTES": str(1 << 30),
        "CALLGATE_MAX_LIST_ROWS": str(rows + 1000),
        "CALLGATE_LOG_LEVEL": "WARNING",
    }
    errlog = (tmp / "server.log").open("wb")
    proc = subprocess.Popen([*cmd, "serve", "--port", str(port)], cwd=str(tmp), env=env,
                            stdout=errlog, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not start within 60 s")


def proc_status(pid: int, key: str) -> float:
    """A /proc/PID/status figure (VmHWM, VmRSS) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (the intake helper and multiprocessing's resource
    tracker)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out.append(k)
            out.extend(children(k))
    return out


def wait_helpers_idle(pid: int, timeout: float = 30.0) -> float:
    """Wait until the server's helper processes have started and gone idle (their CPU time
    stops growing): a server that has been up a few seconds, as a production one has. The
    first list after a boot would also wait for the intake helper's start (about a second).
    Returns the seconds waited."""
    t0 = time.monotonic()
    last = -1.0
    while time.monotonic() - t0 < timeout:
        kids = children(pid)
        cpu = sum(cpu_seconds(k) for k in kids)
        if kids and cpu == last:
            break
        last = cpu
        time.sleep(0.3)
    return time.monotonic() - t0


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- main ----------------------------------------------------------------------------------


def in_process(url: str, body: bytes, admin_key: str, rows: int, profile: bool,
               tmp: Path) -> float:
    """The service alone (no HTTP), optionally under pyinstrument; returns rows/s."""
    import gc

    from config.settings import Settings
    from core.keys import authenticate
    from core.runtime import build_runtime
    from dialer.campaigns import create_campaign
    from dialer.intake import service as intake
    from dialer.schemas import CampaignIn

    # Its keys and checkpoints in the run's directory, not the current one.
    rt = build_runtime(Settings(database_url=url, max_list_rows=rows + 1000,
                                audit_key_file=tmp / "audit.key",
                                audit_checkpoint_dir=tmp / "checkpoints"))
    gc.collect()
    gc.freeze()  # as api/asgi.py does for the server
    gc.set_threshold(50_000, 20, 100)
    who = authenticate(rt.db, admin_key)
    assert who is not None
    cid = create_campaign(rt, who, CampaignIn(
        name="bench-in-process", purpose="discharge_followup", provider_name="Bench Clinic",
        callback_number="+1 314 555 0199")).id
    profiler: Any = None
    if profile:
        from pyinstrument import Profiler  # pip install pyinstrument (not a dependency)

        profiler = Profiler(interval=0.0005)
        profiler.start()
    t = time.perf_counter()
    result = intake.submit_body(rt, who, cid, body, "csv")
    out = json.dumps(result.as_dict(), separators=(",", ":"))
    seconds = time.perf_counter() - t
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    rt.db.dispose()
    log(f"in-process   {rows} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
        f"(submit_body + JSON, no HTTP); {len(out) / 1e6:.1f} MB response")
    return rows / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--in-process", action="store_true",
                    help="also time the service in-process (no HTTP) on a second campaign")
    ap.add_argument("--in-process-only", action="store_true",
                    help="only time the service in-process (no server, no profiler)")
    ap.add_argument("--profile", action="store_true",
                    help="only profile the service in-process with pyinstrument (no server)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="callgate-bench-"))
    db_kind = "sqlite" if args.db == "sqlite" else "postgresql"
    target = Throwaway(db_kind, tmp)
    proc: subprocess.Popen[bytes] | None = None
    try:
        t = time.perf_counter()
        upgrade(target.url)
        db = Database(target.url)
        pop = numbers(args.rows, rng)
        kinds = populate(db, [e for _, e in pop], rng, now)
        csv_path = tmp / "list.csv"
        mix = write_csv(csv_path, pop, args.rows, rng, now)
        _, admin_key = create_key(db, Role.admin, "bench-admin", now)
        db.dispose()
        body = csv_path.read_bytes()
        log(f"setup        {time.perf_counter() - t:.1f} s: {args.rows} numbers; consents "
            f"{dict(kinds)}; list {dict(mix)}; {len(body) / 1e6:.1f} MB CSV")

        if args.profile or args.in_process_only:
            in_process(target.url, body, admin_key, args.rows, args.profile, tmp)
            return
        port = free_port()
        proc = start_server(target.url, args.rows, port, tmp)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {admin_key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=1800) as client:
            r = client.post("/v1/campaigns", json={
                "name": "bench", "purpose": "discharge_followup", "channel": "autodialed_voice",
                "provider_name": "Bench Clinic", "callback_number": "+1 314 555 0199"})
            r.raise_for_status()
            cid = r.json()["id"]
            waited = wait_helpers_idle(proc.pid)
            rss_before = proc_status(proc.pid, "VmRSS")
            helpers = children(proc.pid)
            cpu_before = cpu_seconds(proc.pid)
            helper_cpu_before = sum(cpu_seconds(k) for k in helpers)
            t = time.perf_counter()
            r = client.post(f"/v1/campaigns/{cid}/calls", content=body,
                            headers={"Content-Type": "text/csv"})
            result = r.json()
            seconds = time.perf_counter() - t
            server_cpu = cpu_seconds(proc.pid) - cpu_before
            helpers = children(proc.pid)
            helper_cpu = sum(cpu_seconds(k) for k in helpers) - helper_cpu_before
        r.raise_for_status()
        peak = proc_status(proc.pid, "VmHWM")
        helper_peak = sum(proc_status(k, "VmHWM") for k in helpers)
        stop(proc)
        proc = None
        assert len(result["results"]) == args.rows, "one result per row"
        counts = {k: result[k] for k in ("accepted", "refused", "invalid", "duplicates")}
        codes = Counter(x["reasons"][0]["code"] for x in result["results"] if x["reasons"])

        floor = parse_floor([raw for raw, _ in pop])
        rate = args.rows / seconds
        log(f"server       callgate serve, {target.kind}, up and helpers idle after "
            f"{waited:.1f} s; RSS {rss_before:.0f} MB before the "
            f"request, peak (VmHWM) {peak:.0f} MB; its {len(helpers)} helper processes "
            f"{helper_peak:.0f} MB, {helper_cpu:.2f} s CPU")
        log(f"intake       {args.rows} rows in {seconds:.2f} s = {rate:,.0f} rows/s "
            f"(POST to parsed response); server CPU {server_cpu:.2f} s; {counts}")
        log(f"first codes  {dict(codes.most_common())}")
        log(f"floor        phonenumbers parse+is_valid+format: {floor:,.0f} numbers/s; intake "
            f"runs at {rate / floor:.2f} of it")
        if args.in_process:
            in_process(target.url, body, admin_key, args.rows, args.profile, tmp)
        print(json.dumps({
            "rows": args.rows, "seconds": round(seconds, 3), "rows_per_s": round(rate),
            "parse_floor_per_s": round(floor), "ratio_to_floor": round(rate / floor, 3),
            "peak_rss_mb": round(peak, 1), "db": target.kind,
            "server_cpu_s": round(server_cpu, 2),
            "helper_peak_rss_mb": round(helper_peak, 1), "helper_cpu_s": round(helper_cpu, 2),
            "total_peak_rss_mb": round(peak + helper_peak, 1),
        }))
    finally:
        if proc is not None:
            stop(proc)
        target.drop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")


if __name__ == "__main__":
    main()
