"""The audit log as a Merkle log: how fast it takes entries in, seals them, proves and checks.

    python bench/audit.py [--entries 1000000] [--db sqlite|postgres] [--new 10000]

On a fresh database (``core.migrate.upgrade``), in this process:

1. **append**: ``--entries`` entries through the writers' path (``core.audit.record``, the
   insert at commit), 5,000 per transaction: entries/s (the first 10,000 first, then the rest);
2. **integrate**: the sequencer (``core.auditlog.integrate``) gives them their leaf index and
   stores the tree's nodes: entries integrated per second; then one signed checkpoint (ms);
3. **proofs at the full size**: 1,000 inclusion proofs of random leaves and 1,000
   consistency proofs from random sizes to the full one, each read from the database and
   verified (``core.merkle``): p50/p99 ms; and 200 inclusion proofs over HTTP
   (``GET /v1/audit/proof/inclusion`` through the ASGI app, no network);
4. **verify**: the full check (``callgate audit verify``'s ``verify_full``: rebuild, every
   node, every checkpoint) in entries/s; the incremental check (``verify_incremental``) with
   nothing new (ms) and after ``--new`` new entries (ms, entries/s);
5. **the dashboard overview** (``review.dashboard.overview``, which runs the incremental check)
   at 10,000 entries and at ``--entries``, and its audit-log part alone
   (``review.audit.status``): median ms of 5, once the check has caught up.

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import make_url  # noqa: E402

from config.clock import SystemClock  # noqa: E402
from config.policy import load_policy  # noqa: E402
from config.settings import Settings  # noqa: E402
from core import audit, auditlog, auditverify, merkle  # noqa: E402
from core.db import Database  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.runtime import Runtime  # noqa: E402

FIRST = 10_000
PER_TX = 5000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def fresh_database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'audit-bench.db'}"
        return
    import psycopg

    base = make_url(pg_url)
    name = f"cg_auditbench_{os.getpid()}"
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


def append(rt: Runtime, start: int, n: int) -> float:
    """``n`` entries like a lease's (``call.leased``), through the writers' path: seconds."""
    t = time.perf_counter()
    now = rt.clock.now()
    for lo in range(start, start + n, PER_TX):
        with rt.db.write() as s:
            for i in range(lo, min(lo + PER_TX, start + n)):
                audit.record(s, at=now, actor="key:5e7f9a1b-0000-4000-8000-000000000001",
                             kind="call.leased", subject=f"call:{uuid.UUID(int=i)}",
                             policy_version=rt.policy_version,
                             payload={"lease": str(uuid.UUID(int=i + 1)), "dialer": "acme-1",
                                      "attempt": i % 3 + 1})
    return time.perf_counter() - t


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50": round(s[len(s) // 2] * 1000, 3),
            "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1000, 3)}


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_ms(fn: Callable[[], Any], n: int = 5) -> float:
    return round(statistics.median(timed(fn) for _ in range(n)) * 1000, 2)


def overview_figures(rt: Runtime) -> tuple[float, float]:
    from review import audit as audit_view
    from review import dashboard

    while auditverify.verify_incremental(rt).behind:  # caught up first (the job's work)
        pass
    dashboard.overview(rt)  # warm
    return median_ms(lambda: dashboard.overview(rt)), median_ms(lambda: audit_view.status(rt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=10_000,
                    help="entries added before timing the incremental check")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default=os.environ.get(
        "CALLGATE_TEST_POSTGRES_URL",
        "postgresql+psycopg://callgate:callgate@localhost:5432/callgate_test"))
    ap.add_argument("--seed", type=int, default=9162)
    args = ap.parse_args()
    n_total = max(args.entries, FIRST)
    rnd = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="callgate-auditbench-"))
    log(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; work dir {workdir}")
    out: dict[str, Any] = {"db": args.db, "entries": n_total}
    with fresh_database(args.db, workdir, args.pg_url) as url:
        upgrade(url)
        settings = Settings(database_url=url, audit_key_file=workdir / "audit.key",
                            audit_pseudonym_key_file=workdir / "pseudonym.key",
                            audit_checkpoint_dir=workdir / "checkpoints")
        rt = Runtime(db=Database(url), policy=load_policy(), clock=SystemClock(),
                     settings=settings)
        try:
            # 10,000 entries: sealed, checked, the overview timed.
            secs = append(rt, 0, FIRST)
            secs_i = timed(lambda: auditlog.integrate(rt.db))
            auditlog.make_checkpoint(rt, force=True)
            ov_small, status_small = overview_figures(rt)
            log(f"{FIRST:,} entries: overview {ov_small} ms (log status {status_small} ms)")
            # The rest.
            rest = n_total - FIRST
            secs += append(rt, FIRST, rest)
            out["append_per_s"] = round(n_total / secs)
            log(f"appended {n_total:,} entries: {out['append_per_s']:,}/s")
            secs_i += timed(lambda: auditlog.integrate(rt.db))
            out["integrate_per_s"] = round(n_total / secs_i)
            log(f"integrated: {out['integrate_per_s']:,} entries/s")
            out["checkpoint_ms"] = round(
                timed(lambda: auditlog.make_checkpoint(rt, force=True)) * 1000, 2)
            with rt.db.read() as s:
                size = auditlog.tree_size(s)
                root = auditlog.root_at(s, size)
            assert size == n_total, size

            # Proofs at the full size, each verified.
            inc, cons = [], []
            for _ in range(1000):
                i = rnd.randrange(size)
                t = time.perf_counter()
                with rt.db.read() as s:
                    leaf, proof = auditlog.inclusion_proof(s, i, size)
                inc.append(time.perf_counter() - t)
                assert merkle.verify_inclusion(leaf, i, size, proof, root)
                m = rnd.randint(1, size - 1)
                t = time.perf_counter()
                with rt.db.read() as s:
                    cproof = auditlog.consistency_proof(s, m, size)
                cons.append(time.perf_counter() - t)
                with rt.db.read() as s:
                    old = auditlog.root_at(s, m)
                assert merkle.verify_consistency(m, size, old, root, cproof)
            out["inclusion_proof_ms"] = pct(inc)
            out["consistency_proof_ms"] = pct(cons)
            out["proof_hashes"] = len(proof)
            out["http_inclusion_proof_ms"] = pct(http_proofs(rt, size, rnd))
            log(f"proofs at {size:,}: inclusion {out['inclusion_proof_ms']} ms, consistency "
                f"{out['consistency_proof_ms']} ms, over HTTP {out['http_inclusion_proof_ms']}")

            # The full check, then the incremental one.
            sign = auditlog.signer(rt)
            t = time.perf_counter()
            report = auditverify.verify_full(rt.db, sign.verifier, sign.origin,
                                             settings.audit_checkpoint_dir)
            secs_v = time.perf_counter() - t
            assert report.ok, report
            out["full_verify_per_s"] = round(size / secs_v)
            out["full_verify_s"] = round(secs_v, 2)
            log(f"full check: {secs_v:.1f} s, {out['full_verify_per_s']:,} entries/s")
            ov_big, status_big = overview_figures(rt)
            out["incremental_verify_idle_ms"] = median_ms(
                lambda: auditverify.verify_incremental(rt))
            append(rt, size, args.new)
            auditlog.integrate(rt.db)
            auditlog.make_checkpoint(rt, force=True)
            with rt.db.read() as s:
                grown = auditlog.tree_size(s)
            t = time.perf_counter()
            v = auditverify.verify_incremental(rt, budget=args.new * 2)
            secs_n = time.perf_counter() - t
            assert v.ok and v.entries == grown >= size + args.new, v
            out["incremental_verify"] = {"new_entries": args.new,
                                         "ms": round(secs_n * 1000, 1),
                                         "per_s": round(args.new / secs_n)}
            out["overview_ms"] = {str(FIRST): ov_small, str(n_total): ov_big}
            out["log_status_ms"] = {str(FIRST): status_small, str(n_total): status_big}
            log(f"{n_total:,} entries: overview {ov_big} ms (log status {status_big} ms); "
                f"incremental check idle {out['incremental_verify_idle_ms']} ms, "
                f"{args.new:,} new {out['incremental_verify']['ms']} ms")
        finally:
            rt.db.dispose()
    out["load_avg"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


def http_proofs(rt: Runtime, size: int, rnd: random.Random) -> list[float]:
    """Inclusion proofs through the app (authentication, routing, JSON), no network."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from api.app import create_app
    from core.keys import Role, create_key

    _, key = create_key(rt.db, Role.compliance, f"bench-{uuid.uuid4().hex[:6]}",
                        rt.clock.now())
    samples = []
    with TestClient(create_app(rt, migrate=False)) as client:
        h = {"Authorization": f"Bearer {key}"}
        for _ in range(200):
            i = rnd.randrange(size)
            t = time.perf_counter()
            r = client.get("/v1/audit/proof/inclusion", params={"index": i, "size": size},
                           headers=h)
            samples.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return samples


if __name__ == "__main__":
    main()
