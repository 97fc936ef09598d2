"""Lease throughput: a real ``callgate serve`` process, N concurrent HTTP pollers.

    python bench/lease.py [--calls 1000000] [--numbers 200000] [--pollers 1,8,32]
                          [--db sqlite|postgres] [--seconds 10] [--workers 1]
                          [--outcomes batch|single|none] [--rate 1000] [--servers 1]

Builds a fresh database (``core.migrate.upgrade``), bulk-inserts one written consent per
number and ``--calls`` queued calls over ``--numbers`` numbers (round-robin, so each number
has calls/numbers calls in as many campaigns; random priorities and ages), starts
``callgate serve`` as a subprocess, creates a dialer key, then for each N runs N pollers
(threads, one ``httpx.Client`` each) for ``--seconds``: lease (limit 10), report every
task's outcome (connected, or no_answer 1 time in 5) in one ``POST /v1/queue/outcomes``
(``--outcomes single``: one ``POST /v1/queue/{id}/outcome`` each), and so on, with no pause
(a closed loop: the figure is the most the server gives). Afterwards the same N threads
measure the HTTP floor. Then, at the largest N, an open loop: each poller starts a cycle
every N x 10 / ``--rate`` seconds, whether or not the last one has finished, and a lease's
latency is counted from when it was due (a closed loop at N = 32 measures queueing, not
service: by Little's law its latency is N / throughput whatever the server does). Last, one
client times polls of an empty and of a fully capped queue. The last line printed is JSON;
``cap_violations`` is computed from the database at the end.

``--servers K`` starts K ``callgate serve`` processes on the one database (as K instances
on K machines would be), each with ``--workers``; poller i talks to server i mod K. The
server CPU figures are the sum over all of them.

Policy: the benchmark runs with its own policy file (written next to the database):
calling hours 00:00-23:59 and no quiet days, so that it can run at any hour, with the
shipped caps (1/day, 3/week: many numbers keep them from starving the queue). The numbers
are all in one US zone, the one whose local day has the longest to run (the window closes
at 23:59 local). Not 24:00: with back-to-back all-day windows, computing when the window
closes walks day by day up to a 400-day horizon, which would put an artefact on the hot path.

The "HTTP floor" is ``POST /v1/check`` with an unparseable phone: authenticated (the API key
is looked up in the database, as for every request), validated, answered without touching
the queue. There is no cheaper authenticated endpoint a dialer key may call.
``ratio_to_floor`` = (lease + outcome requests per second) / floor requests per second.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, make_url, select, update  # noqa: E402

from config.policy import _default_policy_bytes, parse_policy  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Role, create_key  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.models import Call  # noqa: E402
from dialer.queue import store as queue_store  # noqa: E402
from dialer.rules.windows import check_window  # noqa: E402
from dialer.rules.zones import candidate_zones  # noqa: E402

# One area code per US zone; the benchmark puts every number in the best one right now.
AREA_CODES = {
    "America/New_York": "212", "America/Chicago": "312", "America/Denver": "303",
    "America/Phoenix": "602", "America/Los_Angeles": "213", "Pacific/Honolulu": "808",
}
PURPOSES = ("discharge_followup", "appointment_reminder", "test_results", "treatment",
            "wellness_checkup")
CALLBACK = "+13145550199"
LIMIT = 10


def log(msg: str) -> None:
    print(msg, flush=True)


# --- database -------------------------------------------------------------------------------


def bench_policy_text() -> str:
    text = _default_policy_bytes().decode()
    text = text.replace('start = "08:00"\nend = "21:00"\n\n[calling_hours.states',
                        'start = "00:00"\nend = "23:59"\n\n[calling_hours.states', 1)
    # (The per-state levels stay: none of the area codes below is in those states.)
    text = text.replace('holidays = "US"', 'holidays = ""', 1)
    return text


def pick_area_code(policy_text: str, now: datetime) -> tuple[str, str, datetime]:
    policy = parse_policy(policy_text.encode(), "bench policy")
    best: tuple[str, str, datetime] | None = None
    for zone, ac in AREA_CODES.items():
        phone = f"+1{ac}2000000"
        zones = candidate_zones(phone, None, None)
        w = check_window(now, zones, [], policy)
        if w.allowed and w.closes_at is not None and (best is None or w.closes_at > best[2]):
            best = (zone, ac, w.closes_at)
    if best is None:
        raise SystemExit("no zone is open under the bench policy right now (cannot happen)")
    return best


def phone_for(ac: str, i: int) -> str:
    # NXX 200-999, line 0000-9999: 8 million distinct valid numbers per area code.
    return f"+1{ac}{200 + i // 10000:03d}{i % 10000:04d}"


def _sqlite_ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@contextmanager
def raw_cursor(db: Database) -> Iterator[Any]:
    conn = db.engine.raw_connection()
    try:
        cur = conn.cursor()
        if db.is_sqlite:
            cur.execute("BEGIN IMMEDIATE")
        yield cur
        conn.commit()
    finally:
        conn.close()


def bulk_load(db: Database, url: str, calls: int, numbers: int, ac: str, key_id: str,
              policy_version: str, now: datetime) -> None:
    """Core inserts straight through the driver (executemany on SQLite, COPY on PostgreSQL);
    values in exactly the form the models store them."""
    rnd = random.Random(1)
    n_campaigns = max(1, -(-calls // numbers))
    campaigns = [str(uuid.uuid4()) for _ in range(n_campaigns)]
    zones_json = json.dumps([z.as_dict() for z in candidate_zones(phone_for(ac, 0), None, None)])
    obtained = now - timedelta(days=30)
    sqlite = db.is_sqlite

    def ts(dt: datetime) -> Any:
        return _sqlite_ts(dt) if sqlite else dt

    campaign_rows = [
        (cid, f"bench-{i}", PURPOSES[i % len(PURPOSES)], "autodialed_voice", "Mercy Heart Clinic",
         CALLBACK, None, None, 3, None, key_id, ts(now - timedelta(days=1)), policy_version)
        for i, cid in enumerate(campaigns)
    ]
    consent_rows = (
        (str(uuid.uuid4()), phone_for(ac, i), f"MRN-{i}", '["autodialed_voice"]', '["*"]',
         "written", ts(obtained), "scan://bench", None, key_id, ts(obtained), None)
        for i in range(numbers)
    )

    def call_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(calls):
            created = now - timedelta(seconds=rnd.randint(60, 86_400))
            yield (str(uuid.uuid4()), campaigns[i // numbers], f"b-{i}", None,
                   phone_for(ac, i % numbers), None, None, rnd.randint(1, 10), None, None,
                   "queued", ts(created), 0, zones_json, None, None, None, ts(created),
                   ts(created), key_id, policy_version)

    cols = {
        "campaigns": "id, name, purpose, channel, provider_name, callback_number, window_start, "
                     "window_end, max_attempts, script_id, created_by, created_at, policy_version",
        "consents": "id, phone, patient_ref, channels, purposes, method, obtained_at, "
                    "evidence_ref, expires_at, recorded_by, recorded_at, supersedes_id",
        "calls": "id, campaign_id, external_id, patient_ref, phone, state, postal_code, "
                 "priority, not_before, not_after, status, next_eligible_at, attempts, "
                 "candidate_zones, last_reason, lease_id, lease_expires_at, created_at, "
                 "updated_at, created_by, policy_version",
    }
    with raw_cursor(db) as cur:
        for table, rows in (("campaigns", iter(campaign_rows)), ("consents", consent_rows),
                            ("calls", call_rows())):
            if sqlite:
                marks = ", ".join("?" * len(cols[table].split(",")))
                sql = f"INSERT INTO {table} ({cols[table]}) VALUES ({marks})"
                while True:
                    chunk = [r for _, r in zip(range(50_000), rows, strict=False)]
                    if not chunk:
                        break
                    cur.executemany(sql, chunk)
            else:
                with cur.copy(f"COPY {table} ({cols[table]}) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
    if not sqlite:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


@contextmanager
def fresh_database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg

    base = make_url(pg_url)
    name = f"cg_bench_{os.getpid()}"
    admin = dict(host=base.host or "localhost", port=base.port or 5432, user=base.username,
                 password=base.password, dbname=base.database, autocommit=True)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def callgate_cmd() -> list[str]:
    exe = shutil.which("callgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from cli.main import main; main()"]


@contextmanager
def servers(url: str, policy_file: Path, workdir: Path, workers: int, count: int
            ) -> Iterator[tuple[list[str], list[int]]]:
    """``count`` ``callgate serve`` subprocesses on one database; yields their base URLs and
    process ids."""
    with ExitStack() as stack:
        started = [stack.enter_context(server(url, policy_file, workdir, workers, i))
                   for i in range(count)]
        yield [b for b, _ in started], [p for _, p in started]


@contextmanager
def server(url: str, policy_file: Path, workdir: Path, workers: int, index: int = 0
           ) -> Iterator[tuple[str, int]]:
    """A ``callgate serve`` subprocess; yields its base URL and process id."""
    port = free_port()
    env = {**os.environ, "CALLGATE_DATABASE_URL": url, "CALLGATE_POLICY_FILE": str(policy_file),
           "CALLGATE_LOG_LEVEL": "WARNING"}
    log_name = "serve.log" if index == 0 else f"serve-{index}.log"
    out = (workdir / log_name).open("wb")
    proc = subprocess.Popen(
        [*callgate_cmd(), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("callgate serve did not start:\n"
                                 + (workdir / log_name).read_text(errors="replace"))
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {pid}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(times.get(p, 0.0) for p in tree)


def cpu_of(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(p) for p in pids)


def db_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL processes (backends, WAL writer,
    checkpointer...): on one machine, the database's share of each lease. 0 without any."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm, _, rest = raw.partition(") ")
        if comm.endswith("(postgres"):
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


# --- load -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def run_threads(n: int, seconds: float, body: Callable[[httpx.Client, float, dict[str, Any]],
                                                        None], base: str | list[str],
                auth: dict[str, str]) -> tuple[list[dict[str, Any]], float]:
    bases = [base] if isinstance(base, str) else base
    results: list[dict[str, Any]] = [{"lat": [], "leased": 0, "requests": 0, "errors": 0}
                                     for _ in range(n)]
    start = threading.Barrier(n + 1)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    def worker(i: int) -> None:
        with httpx.Client(base_url=bases[i % len(bases)], headers=auth, timeout=600,
                          limits=limits) as c:
            start.wait()
            body(c, time.perf_counter() + seconds, results[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return results, time.perf_counter() - began


OUTCOMES = "batch"  # batch | single | none
OPEN_LOOP_INTERVAL = 0.0  # > 0: each poller starts a cycle every this many seconds


def _outcome(task: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "lease_id": task["lease_id"], "agent_id": "A-1", "agent_name": "Dana",
        "disclosed_callback_number": CALLBACK,
        "started_at": now.isoformat(), "ended_at": (now + timedelta(seconds=40)).isoformat(),
        "result": "no_answer" if rnd.random() < 0.2 else "connected",
    }


def lease_loop(c: httpx.Client, deadline: float, out: dict[str, Any]) -> None:
    """Lease, then report every task's outcome; again. Closed loop (the next cycle starts
    when this one ends) or, with OPEN_LOOP_INTERVAL, one cycle every interval from a random
    phase, latency counted from the scheduled start (a late cycle's wait is latency)."""
    rnd = random.Random(threading.get_ident())
    due = time.perf_counter() + rnd.random() * OPEN_LOOP_INTERVAL
    while True:
        if OPEN_LOOP_INTERVAL:
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            t = due
            due += OPEN_LOOP_INTERVAL
        else:
            t = time.perf_counter()
        if t >= deadline:
            return
        r = c.post("/v1/queue/lease", json={"dialer_id": "bench", "limit": LIMIT,
                                            "lease_seconds": 300})
        out["lat"].append(time.perf_counter() - t)
        out["requests"] += 1
        if r.status_code != 200:
            out["errors"] += 1
            continue
        tasks = r.json()["tasks"]
        out["leased"] += len(tasks)
        if tasks and OUTCOMES == "batch":
            o = c.post("/v1/queue/outcomes", json={"outcomes": [
                {"call_id": task["call_id"], **_outcome(task, rnd)} for task in tasks]})
            out["requests"] += 1
            if o.status_code != 200 or not all(x["ok"] for x in o.json()["results"]):
                out["errors"] += 1
        for task in tasks if OUTCOMES == "single" else ():
            o = c.post(f"/v1/queue/{task['call_id']}/outcome", json=_outcome(task, rnd))
            out["requests"] += 1
            if o.status_code != 200:
                out["errors"] += 1
        if not tasks and not OPEN_LOOP_INTERVAL:
            time.sleep(0.01)


def floor_loop(c: httpx.Client, deadline: float, out: dict[str, Any]) -> None:
    body = {"phone": "0", "purpose": "discharge_followup"}
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        r = c.post("/v1/check", json=body)
        out["lat"].append(time.perf_counter() - t)
        out["requests"] += 1
        if r.status_code != 200:
            out["errors"] += 1


def checkpoint_fully(db: Database) -> None:
    """Copy the whole WAL back into the database file and truncate it (retried while a
    reader or the server's own checkpoint holds it)."""
    conn = db.engine.raw_connection()
    try:
        for _ in range(600):
            busy = conn.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            time.sleep(0.1)
    finally:
        conn.close()
    log("the WAL could not be checkpointed fully within a minute")


def poll_p50(base: str, auth: dict[str, str], n: int = 200) -> float:
    lat: list[float] = []
    with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
        for _ in range(n):
            t = time.perf_counter()
            r = c.post("/v1/queue/lease", json={"dialer_id": "bench", "limit": LIMIT})
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200 and r.json()["tasks"] == [], r.text
    return round(pct(lat[n // 10:], 0.5), 2)


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--numbers", type=int, default=200_000)
    ap.add_argument("--pollers", default="1,8,32")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1, help="callgate serve --workers")
    ap.add_argument("--servers", type=int, default=1,
                    help="callgate serve processes on the one database (pollers dealt round)")
    ap.add_argument("--pg-url", default=os.environ.get(
        "CALLGATE_TEST_POSTGRES_URL",
        "postgresql+psycopg://callgate:callgate@localhost:5432/callgate_test"),
        help="an existing database to connect to for CREATE/DROP DATABASE")
    ap.add_argument("--with-index", action="store_true",
                    help=f"accepted for old command lines: {queue_store.QUEUE_ORDER_INDEX} is now "
                    "created by migration 0001")
    ap.add_argument("--outcomes", choices=("batch", "single", "none"), default="batch",
                    help="after each lease, report the tasks' outcomes in one "
                    "POST /v1/queue/outcomes (batch), one POST per task (single), or not at "
                    "all (none: the lease endpoint alone; leases last 300 s)")
    ap.add_argument("--lease-only", action="store_true", help="same as --outcomes none")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="then, at the largest N, an open-loop run offering this many calls/s "
                    "(each poller leasing every N*limit/rate s); 0 to skip")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    pollers = [int(x) for x in args.pollers.split(",") if x.strip()]
    global OUTCOMES, OPEN_LOOP_INTERVAL
    OUTCOMES = "none" if args.lease_only else args.outcomes
    workdir = Path(tempfile.mkdtemp(prefix="callgate-bench-"))
    policy_text = bench_policy_text()
    policy_file = workdir / "bench-policy.toml"
    policy_file.write_text(policy_text)
    policy = parse_policy(policy_text.encode(), str(policy_file))
    now = datetime.now(UTC)
    zone, ac, closes = pick_area_code(policy_text, now)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    log(f"machine: {os.cpu_count()} CPUs, {mem:.1f} GiB, {platform.python_implementation()} "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    log(f"policy: {policy_file} (calling hours 00:00-23:59, no quiet days, caps "
        f"{policy.caps.per_day}/day {policy.caps.per_week}/week) -- for throughput only")
    log(f"numbers: area code {ac} ({zone}); window closes {closes:%H:%M} UTC")
    try:
        with fresh_database(args.db, workdir, args.pg_url) as url:
            t = time.perf_counter()
            upgrade(url)
            db = Database(url)
            key, plaintext = create_key(db, Role.dialer, "bench-dialer", now)
            auth = {"Authorization": f"Bearer {plaintext}"}
            out: dict[str, Any] = {
                "db": args.db, "calls": args.calls, "numbers": args.numbers,
                "server_workers": args.workers, "servers": args.servers,
                "queue_index": queue_store.QUEUE_ORDER_INDEX,
                "outcomes": OUTCOMES,
                "results": [],
            }
            with servers(url, policy_file, workdir, args.workers, args.servers) as (bases, pids):
                base = bases[0]
                out["empty_poll_p50_ms"] = poll_p50(base, auth)
                log(f"empty queue: poll p50 {out['empty_poll_p50_ms']} ms")
                bulk_load(db, url, args.calls, args.numbers, ac, key.id,
                          policy.policy_version, now)
                log(f"database: {args.db}, {args.calls} calls over {args.numbers} numbers "
                    f"loaded in {time.perf_counter() - t:.1f} s")
                # This process's own pauses are not the server's latency: a full collection
                # of everything imported and loaded so far stopped every poller 80-130 ms
                # (its threads then sent late, and that lateness counts in the open loop).
                # As the server does (api/asgi.py): collect once, freeze what is left.
                gc.collect()
                gc.freeze()
                for n in pollers:
                    cpu0, own0, dbc0 = cpu_of(pids), time.process_time(), db_cpu()
                    res, took = run_threads(n, args.seconds, lease_loop, bases, auth)
                    server_cpu = cpu_of(pids) - cpu0
                    client_cpu = time.process_time() - own0
                    database_cpu = db_cpu() - dbc0
                    lat = [x for r in res for x in r["lat"]]
                    leased = sum(r["leased"] for r in res)
                    reqs = sum(r["requests"] for r in res)
                    errors = sum(r["errors"] for r in res)
                    cpu0 = cpu_of(pids)
                    fl, fl_took = run_threads(n, min(args.seconds, 5.0), floor_loop, bases, auth)
                    floor_cpu = cpu_of(pids) - cpu0
                    floor = sum(r["requests"] for r in fl) / fl_took
                    row = {
                        "pollers": n,
                        "leases_per_s": round(leased / took, 1),
                        "p50_ms": round(pct(lat, 0.5), 2),
                        "p99_ms": round(pct(lat, 0.99), 2),
                        "requests_per_s": round(reqs / took, 1),
                        "floor_req_per_s": round(floor, 1),
                        "floor_p50_ms": round(pct([x for r in fl for x in r["lat"]], 0.5), 2),
                        "ratio_to_floor": round(reqs / took / floor, 3),
                        "server_cpu_ms_per_lease": round(server_cpu * 1000 / max(leased, 1), 2),
                        "server_cpu_ms_per_request": round(server_cpu * 1000 / max(reqs, 1), 2),
                        "client_cpu_ms_per_lease": round(client_cpu * 1000 / max(leased, 1), 2),
                        "db_cpu_ms_per_lease": round(database_cpu * 1000 / max(leased, 1), 2),
                        "total_cpu_ms_per_lease": round(
                            (server_cpu + client_cpu + database_cpu) * 1000 / max(leased, 1), 2),
                        "floor_server_cpu_ms_per_request": round(
                            floor_cpu * 1000 / max(sum(r["requests"] for r in fl), 1), 2),
                        "load_avg": round(os.getloadavg()[0], 2),
                        "errors": errors,
                    }
                    out["results"].append(row)
                    log(f"N={n:3d}: {row['leases_per_s']:8.1f} calls leased/s, lease p50 "
                        f"{row['p50_ms']} ms p99 {row['p99_ms']} ms; {row['requests_per_s']} "
                        f"req/s vs floor {row['floor_req_per_s']} req/s "
                        f"(ratio {row['ratio_to_floor']}); server CPU "
                        f"{row['server_cpu_ms_per_lease']} ms per leased call (client "
                        f"{row['client_cpu_ms_per_lease']} ms, database "
                        f"{row['db_cpu_ms_per_lease']} ms), "
                        f"{row['server_cpu_ms_per_request']} ms per request (floor "
                        f"{row['floor_server_cpu_ms_per_request']} ms); load "
                        f"{row['load_avg']}; errors {errors}")
                if args.rate > 0 and pollers:
                    n = max(pollers)
                    OPEN_LOOP_INTERVAL = n * LIMIT / args.rate
                    cpu0, own0 = cpu_of(pids), time.process_time()
                    res, took = run_threads(n, args.seconds, lease_loop, bases, auth)
                    server_cpu = cpu_of(pids) - cpu0
                    client_cpu = time.process_time() - own0
                    OPEN_LOOP_INTERVAL = 0.0
                    lat = [x for r in res for x in r["lat"]]
                    leased = sum(r["leased"] for r in res)
                    out["open_loop"] = {
                        "pollers": n, "offered_calls_per_s": args.rate,
                        "leases_per_s": round(leased / took, 1),
                        "p50_ms": round(pct(lat, 0.5), 2), "p90_ms": round(pct(lat, 0.9), 2),
                        "p95_ms": round(pct(lat, 0.95), 2), "p99_ms": round(pct(lat, 0.99), 2),
                        "p999_ms": round(pct(lat, 0.999), 2),
                        "server_cpu_ms_per_lease": round(server_cpu * 1000 / max(leased, 1), 2),
                        "client_cpu_ms_per_lease": round(client_cpu * 1000 / max(leased, 1), 2),
                        "errors": sum(r["errors"] for r in res),
                        "load_avg": round(os.getloadavg()[0], 2),
                    }
                    ol = out["open_loop"]
                    log(f"open loop N={n}, {args.rate:.0f} calls/s offered: {ol['leases_per_s']} "
                        f"calls leased/s, lease p50 {ol['p50_ms']} ms p90 {ol['p90_ms']} ms "
                        f"p95 {ol['p95_ms']} ms p99 {ol['p99_ms']} ms p99.9 {ol['p999_ms']} ms "
                        f"(from each cycle's scheduled start); server CPU "
                        f"{ol['server_cpu_ms_per_lease']} ms per leased call; errors "
                        f"{ol['errors']}")
                # A fully capped queue: every remaining call deferred (as the lease leaves
                # them once their numbers are capped), set directly for speed.
                with db.write() as s:
                    later = datetime.now(UTC) + timedelta(hours=23)
                    s.execute(update(Call).where(Call.status == "queued")
                              .values(next_eligible_at=later, last_reason="DAILY_CAP"))
                if not db.is_sqlite:
                    # A million rows updated at once leave a million dead index entries in
                    # the eligible range until autovacuum passes; measure the steady state.
                    out["capped_poll_p50_ms_before_vacuum"] = poll_p50(base, auth, 50)
                    with db.engine.connect() as conn:
                        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                            "VACUUM ANALYZE calls")
                    log("fully capped queue: poll p50 before VACUUM "
                        f"{out['capped_poll_p50_ms_before_vacuum']} ms")
                else:
                    # Likewise on SQLite: that update leaves hundreds of MB of WAL, which
                    # every read consults and the server's checkpoint job is still copying
                    # back; measure while it does, then once it is done.
                    out["capped_poll_p50_ms_before_checkpoint"] = poll_p50(base, auth, 50)
                    checkpoint_fully(db)
                    log("fully capped queue: poll p50 before the WAL is checkpointed "
                        f"{out['capped_poll_p50_ms_before_checkpoint']} ms")
                out["capped_poll_p50_ms"] = poll_p50(base, auth)
                log(f"fully capped queue: poll p50 {out['capped_poll_p50_ms']} ms")
            with db.read() as s:
                out["cap_violations"] = queue_store.cap_violations(
                    s, policy.caps.per_day, policy.caps.per_week)
                out["live_lease_doubles"] = queue_store.live_lease_doubles(s)
                out["queued_left"] = s.scalar(
                    select(func.count()).select_from(Call).where(Call.status == "queued"))
            db.dispose()
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
