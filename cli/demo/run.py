"""``callgate demo``: a synthetic healthcare organisation and a simulated dialer week, run
against a real HTTP server, in well under a minute.

Time passes in the simulation, not in the wall clock: the server (uvicorn, in a thread of this
process) serves an app whose runtime holds a :class:`~config.clock.FakeClock`; the demo moves
that clock step by step and never sleeps. What the organisation does goes through the HTTP API
with role keys: consents (a sample of every kind; the rest of the registry is bulk-imported,
since thousands of single POSTs would take most of the minute), revocations, do-not-call,
campaigns, CSV call lists, the dialer's lease / dial check / outcome / release, manual
preflight reservations, compliance reads. The maintenance jobs
(:data:`dialer.maintenance.JOBS`) run once per step, as the scheduler of ``callgate serve``
would. The figures at the end are read back from the database
and the API: the per-number caps are recomputed from the attempts table
(:func:`dialer.queue.store.cap_violations`) and the audit log is verified by
``GET /v1/audit/verify``. The exit status is non-zero when either fails.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from config.clock import FakeClock
from core.runtime import Runtime

if TYPE_CHECKING:
    from core.keys import Identity
from cli.demo.client import Api, DemoServer, expect
from cli.demo.data import (
    BILLING,
    CALLBACK,
    CAMPAIGNS,
    EASTERN,
    HTTP_CONSENTS,
    MAX_PATIENTS,
    PROVIDER,
    START,
    DemoOptions,
    Patient,
    call_rows,
    consent_body,
    iso,
    make_patients,
    to_csv,
)
from cli.demo.oncall import OnCall, with_recording
from cli.demo.report import Report
from cli.demo.sim import Simulation
from cli.demo.texts import SmsDemo

# --- the run -------------------------------------------------------------------------------


def run_demo(opts: DemoOptions, console: Console) -> int:
    """Build, simulate, report. Returns the exit status (0: caps held, audit log verified)."""
    if not 1 <= opts.patients <= MAX_PATIENTS:
        raise ValueError(f"patients must be 1-{MAX_PATIENTS} (100 fictional lines per area code)")
    from config.policy import load_policy
    from config.settings import Settings
    from core.db import Database
    from core.keys import Identity, Role, create_key
    from core.migrate import upgrade

    wall = time.monotonic()
    if not console.is_terminal and console.width < 110:
        console = Console(file=console.file, width=110)  # piped: wide enough for the tables
    quiet = _quiet_logs()
    workdir = Path(tempfile.mkdtemp(prefix="callgate-demo-"))
    db_path = workdir / "demo.db"
    url = f"sqlite:///{db_path}"
    upgrade(url)
    clock = FakeClock(START)
    rt = Runtime(db=Database(url), policy=load_policy(None), clock=clock,
                 settings=Settings(database_url=url, policy_file=None,
                                   audit_key_file=workdir / "audit.key",
                                   audit_pseudonym_key_file=workdir / "audit-pseudonym.key",
                                   audit_checkpoint_dir=workdir / "checkpoints"))
    created = {role: create_key(rt.db, role, f"demo-{role.value}", clock.now())
               for role in Role}
    keys = {role.value: plaintext for role, (_, plaintext) in created.items()}
    admin_row = created[Role.admin][0]
    admin = Identity(admin_row.id, admin_row.name, Role.admin)
    server = DemoServer(rt)
    server.start()
    apis = {"admin": Api(server.url, keys["admin"]),
            "manager": Api(server.url, keys["campaign_manager"]),
            "dialer": Api(server.url, keys["dialer"]),
            "compliance": Api(server.url, keys["compliance"])}
    rng = random.Random(opts.seed)
    console.rule(f"[bold]callgate demo[/]  seed {opts.seed}, {opts.patients:,} patients, "
                 f"{opts.days} simulated days, {opts.agents} agents")
    console.print(f"database  {db_path}\nserver    {server.url}  (FakeClock from "
                  f"{START.astimezone(EASTERN):%a %d %b %Y %H:%M} Eastern)\n", highlight=False)
    try:
        report = _run(opts, rt, clock, apis, admin, rng, console)
        from core import auditlog

        auditlog.seal(rt, force=True)  # what the server's audit_seal job does every second
        ok = report.render(console, server, keys, db_path, opts, time.monotonic() - wall)
        if opts.keep:
            console.print(f"\n[bold]serving on {server.url}[/] (the simulated clock stays at "
                          f"{clock.now().astimezone(EASTERN):%a %d %b %H:%M} ET); Ctrl-C to stop")
            try:
                while server.thread.is_alive():
                    server.thread.join(0.5)
            except KeyboardInterrupt:
                console.print("stopping")
        return 0 if ok else 1
    finally:
        for api in apis.values():
            api.close()
        server.stop()
        rt.db.dispose()
        quiet()


def _quiet_logs() -> Callable[[], None]:
    """The access log would print every one of thousands of requests: warnings only."""
    names = ("callgate", "callgate.access", "callgate.jobs", "uvicorn", "uvicorn.error")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)

    def restore() -> None:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)

    return restore


def _bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _run(opts: DemoOptions, rt: Runtime, clock: FakeClock, apis: dict[str, Api],
         who: Identity, rng: random.Random, console: Console) -> Report:
    patients = make_patients(opts.patients, rng)
    now = clock.now()
    manager = apis["manager"]
    report = Report(rt, apis, patients)
    # On the call itself (cli.demo.oncall): its own random stream, so the rest of the demo
    # draws what it drew before.
    oncall = report.oncall = OnCall(random.Random(opts.seed * 7919 + 19))
    with _bar(console) as progress:
        # The consent registry: most of it imported in bulk (as an organisation's existing
        # registry would be), a sample of every kind recorded through POST /v1/consents;
        # earlier revocations and do-not-call requests through the API too.
        bodies = [(p, with_recording(consent_body(p, now, rng), oncall.rng))
                  for p in patients]
        every = max(1, round(len(patients) / HTTP_CONSENTS))
        bulk = [b for i, (_, b) in enumerate(bodies) if b is not None and i % every]
        requests: list[list[tuple[str, dict[str, Any]]]] = []
        for i, (p, body) in enumerate(bodies):
            reqs: list[tuple[str, dict[str, Any]]] = []
            if body is not None and i % every == 0:
                reqs.append(("/v1/consents", body))
            if p.consent == "revoked":
                reqs.append(("/v1/consents/revocations", {
                    "phone": p.dialled_as(rng),
                    "source": rng.choice(("letter", "web", "sms_stop", "in_person")),
                    "received_at": iso(now - timedelta(days=rng.randint(1, 30)))}))
            elif p.consent == "do-not-call":
                reqs.append(("/v1/dnc", {"phone": p.dialled_as(rng),
                                         "reason": "asked at the front desk not to be called"}))
            if reqs:
                requests.append(reqs)
        report.registry = (len(bulk), sum(1 for r in requests for path, _ in r
                                          if path == "/v1/consents"))
        if bulk:
            task = progress.add_task("consent registry (bulk import)", total=len(bulk))
            import_registry(rt, who, bulk, lambda n: progress.advance(task, n))
        task = progress.add_task("consents, revocations, do-not-call (HTTP)",
                                 total=sum(len(r) for r in requests))

        def register(chunk: Sequence[list[tuple[str, dict[str, Any]]]]) -> None:
            for reqs in chunk:
                for path, body in reqs:
                    expect(manager.post(path, body), 201)
                    progress.advance(task)

        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(register, _chunks(requests, 3)))

        # Campaigns, then one CSV call list each (and the billing campaign, refused).
        campaign_ids: dict[str, str] = {}
        for spec in (*CAMPAIGNS, BILLING):
            camp: dict[str, Any] = {
                "name": spec.name, "purpose": spec.purpose, "channel": spec.channel,
                "provider_name": PROVIDER, "callback_number": CALLBACK,
                "max_attempts": spec.max_attempts,
            }
            if spec.window:
                camp["calling_window"] = {"start": spec.window[0], "end": spec.window[1]}
            r = manager.post("/v1/campaigns", camp)
            if spec is BILLING:
                report.billing = (r.status_code, r.json()["error"])
                continue
            campaign_ids[spec.key] = expect(r, 201)["id"]
        on_list: dict[str, list[Patient]] = {}
        lists = {}
        for spec in CAMPAIGNS:
            members = rng.sample(patients, max(5, round(len(patients) * spec.share)))
            on_list[spec.key] = members
            lists[spec.key] = call_rows(spec, members, rng, now)
        task = progress.add_task("call lists (CSV)", total=sum(len(v) for v in lists.values()))
        for spec in CAMPAIGNS:
            rows = lists[spec.key]
            out = expect(manager.post(f"/v1/campaigns/{campaign_ids[spec.key]}/calls",
                                      content=to_csv(rows),
                                      headers={"content-type": "text/csv"}), 200)
            report.intake[spec.key] = out
            progress.advance(task, len(rows))
        report.campaign_ids = campaign_ids
        # The Reassigned Numbers Database round trip, before the week starts.
        oncall.reassigned_round_trip(
            rt, who, manager,
            sorted({f"+1{p.area}555{p.line}" for ps in on_list.values() for p in ps}), now)

        sim = Simulation(opts, rt, clock, apis, patients, campaign_ids, on_list, rng)
        sim.oncall = oncall
        # Texts (cli.demo.texts): an SMS campaign, a gateway, patients who text back.
        sms = report.sms = SmsDemo(random.Random(opts.seed * 104729 + 7), manager,
                                   apis["dialer"], apis["compliance"])
        sms.setup(sms.rng.sample(patients, max(8, len(patients) // 5)), now, sim.steps)
        sim.sms = sms
        sim.run(progress)
    report.sim = sim
    return report


def import_registry(rt: Runtime, who: Identity, bodies: Sequence[dict[str, Any]],
                    progress: Callable[[int], None]) -> None:
    """Load consents the organisation already holds (consent.service.import_consents): one
    POST /v1/consents each would spend most of the demo's minute on set-up. The bodies are
    validated as the API would validate them."""
    from consent.schemas import ConsentIn
    from consent.service import import_consents

    import_consents(rt, who, [ConsentIn.model_validate(b) for b in bodies], progress)


def _chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    return [items[i::n] for i in range(n)]
