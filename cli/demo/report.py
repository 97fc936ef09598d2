"""The demo's report: what was queued and refused, calls per day, caps, identification,
the audit log, read back from the database and the API."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from core.runtime import Runtime

if TYPE_CHECKING:
    from cli.demo.oncall import OnCall
    from cli.demo.texts import SmsDemo
from cli.demo.client import Api, DemoServer, expect
from cli.demo.data import BILLING, CAMPAIGNS, CONSENT_MIX, EASTERN, START, DemoOptions, Patient
from cli.demo.sim import Simulation

# --- the figures ---------------------------------------------------------------------------


class Report:
    def __init__(self, rt: Runtime, apis: dict[str, Api], patients: list[Patient]) -> None:
        self.rt, self.apis, self.patients = rt, apis, patients
        self.intake: dict[str, dict[str, Any]] = {}
        self.billing: tuple[int, dict[str, Any]] | None = None
        self.campaign_ids: dict[str, str] = {}
        self.sim: Simulation | None = None
        self.registry = (0, 0)  # consents imported in bulk, recorded through the API
        self.oncall: OnCall | None = None  # cli.demo.oncall
        self.sms: SmsDemo | None = None  # cli.demo.texts

    def render(self, console: Console, server: DemoServer, keys: dict[str, str],
               db_path: Path, opts: DemoOptions, elapsed: float) -> bool:
        assert self.sim is not None
        self._organisation(console)
        self._intake(console)
        attempts = self._attempts()
        self._days(console, attempts)
        violations = self._caps(console, attempts)
        self._identification(console, attempts)
        if self.oncall is not None:
            self.oncall.report(console, self.rt)
        if self.sms is not None:
            self.sms.report(console, self.rt)
        self._after(console)
        verified = self._audit(console)
        self._curl(console, server, keys, db_path, opts)
        console.print(f"\nwall clock: {elapsed:.1f} s for {opts.days} simulated days")
        return violations == 0 and verified

    # -- tables --

    def _organisation(self, console: Console) -> None:
        kinds = Counter(p.consent for p in self.patients)
        t = _table(f"Organisation: {len(self.patients):,} patients")
        t.add_column("consent on file")
        t.add_column("patients", justify="right")
        for k, _ in CONSENT_MIX:
            t.add_row(k, f"{kinds[k]:,}")
        _show(console, t)
        bulk, http = self.registry
        console.print(f"consents: {bulk:,} imported into the registry in bulk, {http:,} recorded "
                      f"through POST /v1/consents; revocations and do-not-call entries through "
                      f"the API", highlight=False)
        if self.billing is not None:
            status, err = self.billing
            rule = (err.get("details") or {}).get("rule", "")
            console.print(f"campaign [bold]{BILLING.name}[/] (purpose billing): "
                          f"[red]{status} {err.get('code')}[/]: {err.get('message')} [{rule}]",
                          highlight=False)

    def _intake(self, console: Console) -> None:
        t = _table("Call lists submitted (CSV, POST /v1/campaigns/{id}/calls)")
        for c in ("campaign", "channel", "rows", "queued", "refused", "invalid", "duplicate"):
            t.add_column(c, justify="left" if c in ("campaign", "channel") else "right")
        reasons: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        for spec in CAMPAIGNS:
            out = self.intake[spec.key]
            n = len(out["results"])
            totals.update({"rows": n, "queued": out["accepted"], "refused": out["refused"],
                           "invalid": out["invalid"], "duplicate": out["duplicates"]})
            t.add_row(spec.short, spec.channel, f"{n:,}", f"{out['accepted']:,}",
                      f"{out['refused']:,}", f"{out['invalid']:,}", f"{out['duplicates']:,}")
            for res in out["results"]:
                if res["status"] in ("refused", "invalid"):
                    for r in res["reasons"]:
                        reasons[r["code"]] += 1
        t.add_row("[bold]all[/]", "", *(f"{totals[k]:,}" for k in
                                         ("rows", "queued", "refused", "invalid", "duplicate")))
        _show(console, t)
        rt_ = _table("Rows refused or invalid at intake, by reason (a row may have several)")
        rt_.add_column("reason")
        rt_.add_column("rows", justify="right")
        for code, n in reasons.most_common():
            rt_.add_row(code, f"{n:,}")
        _show(console, rt_)

    def _attempts(self) -> list[Any]:
        from sqlalchemy import select

        from core.models import Attempt

        with self.rt.db.read() as s:
            return list(s.execute(select(
                Attempt.phone, Attempt.at, Attempt.kind, Attempt.state, Attempt.counted,
                Attempt.result, Attempt.agent_id, Attempt.agent_name,
                Attempt.disclosed_callback_number, Attempt.flags,
            )))

    def _days(self, console: Console, attempts: Sequence[Any]) -> None:
        assert self.sim is not None
        by_day: dict[int, Counter[str]] = defaultdict(Counter)
        for a in attempts:
            d = (a.at - START) // timedelta(days=1)
            c = by_day[d]
            if a.kind == "manual":
                c["manual"] += 1
                continue
            c["leased"] += 1
            if a.state == "reported":
                c["dialled"] += 1
                if a.result in ("connected", "voicemail"):
                    c["reached"] += 1
                elif a.result in ("opted_out", "wrong_number"):
                    c["opted out"] += 1
                else:
                    c["retry"] += 1
            elif a.state == "released":
                c["released"] += 1
            elif a.state == "expired":
                c["lapsed"] += 1
            elif a.state == "withdrawn":
                c["withdrawn"] += 1
        cols = ("leased", "dialled", "reached", "retry", "opted out", "released",
                "lapsed", "withdrawn", "manual")
        t = _table("Calls leased per day (days start 08:00 Eastern; from the attempts table)")
        t.add_column("day")
        for col in cols:
            t.add_column(col, justify="right")
        total: Counter[str] = Counter()
        for d in range(self.sim.opts.days):
            c = by_day.get(d, Counter())
            total.update(c)
            label = (START + timedelta(days=d)).astimezone(EASTERN).strftime("%a %d %b")
            t.add_row(label, *(f"{c[k]:,}" for k in cols))
        t.add_row("[bold]week[/]", *(f"{total[k]:,}" for k in cols))
        _show(console, t)
        tally = self.sim.tally()
        blocked = ", ".join(f"{k} {v}" for k, v in tally.dial_blocked.most_common()) or "none"
        console.print(
            f"dial checks that stopped a leased call: {sum(tally.dial_blocked.values())} "
            f"({blocked}); leases dropped by a crashed desktop (expired, counted as attempts): "
            f"{tally.counts['dropped']}; released undialled (not reached before the lease end): "
            f"{tally.counts['released']}",
            highlight=False,
        )
        events = ", ".join(f"{k}: {v}" for k, v in self.sim.event_counts.items())
        console.print(f"mid-week: {events}; calls withdrawn by them: "
                      f"{self.sim.withdrawn_by_events}", highlight=False)
        manual = ", ".join(f"{k} {v}" for k, v in self.sim.manual.most_common()) or "none"
        console.print(f"manual callbacks (POST /v1/check reserve=true): {manual}",
                      highlight=False)
        jobs = ", ".join(f"{k} {v:,}" for k, v in self.sim.job_rows.items())
        console.print(f"maintenance jobs (rows): {jobs}", highlight=False)

    def _caps(self, console: Console, attempts: Sequence[Any]) -> int:
        from dialer.queue.store import cap_violations

        caps = self.rt.policy.caps
        times: dict[str, list[datetime]] = defaultdict(list)
        for a in attempts:
            if a.counted:
                times[a.phone].append(a.at)
        max_day = max_week = 0
        at_day = at_week = 0
        for ts in times.values():
            ts.sort()
            d = _max_in_window(ts, timedelta(hours=24))
            w = _max_in_window(ts, timedelta(days=7))
            max_day, max_week = max(max_day, d), max(max_week, w)
            at_day += d >= caps.per_day
            at_week += w >= caps.per_week
        with self.rt.db.read() as s:
            violations = cap_violations(s, caps.per_day, caps.per_week)
            deferred = _deferred_by_cap(s)
        t = _table(f"Frequency caps per number, all campaigns, voice and text "
                        f"({caps.period}; {sum(len(v) for v in times.values()):,} counted "
                        f"attempts to {len(times):,} numbers)")
        for c in ("cap", "limit", "max attempts seen", "numbers at the limit"):
            t.add_column(c, justify="left" if c == "cap" else "right")
        t.add_row("per 24 hours", str(caps.per_day), str(max_day), f"{at_day:,}")
        t.add_row("per 7 days", str(caps.per_week), str(max_week), f"{at_week:,}")
        _show(console, t)
        console.print(
            f"lease-time deferrals by the caps: DAILY_CAP {deferred['DAILY_CAP']:,}, "
            f"WEEKLY_CAP {deferred['WEEKLY_CAP']:,}", highlight=False)
        style = "green" if violations == 0 else "bold red"
        console.print(f"[{style}]cap violations: {violations}[/] "
                      f"(dialer.queue.store.cap_violations over the attempts table)")
        return violations

    def _identification(self, console: Console, attempts: Sequence[Any]) -> None:
        assert self.sim is not None
        reported = [a for a in attempts if a.kind == "lease" and a.state == "reported"]
        manual = [a for a in attempts if a.kind == "manual"]
        by_agent: dict[tuple[str, str], int] = Counter()
        complete = 0
        flagged = 0
        for a in reported + manual:
            if a.agent_id and a.agent_name and (a.kind == "manual" or a.disclosed_callback_number):
                complete += 1
            by_agent[(a.agent_id or "(none)", a.agent_name or "(none)")] += 1
            flagged += "AGENT_ID_MISSING" in (a.flags or [])
        t = _table("Agent identification on every reported call (call log)")
        t.add_column("agent_id")
        t.add_column("agent_name")
        t.add_column("calls", justify="right")
        for (aid, name), n in sorted(by_agent.items()):
            t.add_row(aid, name, f"{n:,}")
        _show(console, t)
        total = len(reported) + len(manual)
        style = "green" if complete == total else "bold red"
        console.print(f"[{style}]agent identification: {complete:,} of {total:,} "
                      f"reported calls[/] (agent id, name and callback number disclosed)")
        if self.sim.missing_id_answer is not None:
            status, code, message = self.sim.missing_id_answer
            console.print(f"an outcome sent without agent_id: [red]{status} {code}[/] "
                          f"({message}); flagged in the call log ({flagged}), lease kept, "
                          f"resent complete", highlight=False)

    def _after(self, console: Console) -> None:
        from sqlalchemy import func, select

        from core.models import Refusal

        with self.rt.db.read() as s:
            rows = list(s.execute(
                select(Refusal.status, Refusal.code, func.count())
                .where(Refusal.stage == "dispatch")
                .group_by(Refusal.status, Refusal.code)
            ))
        t = _table("After intake: calls that left the queue without a completed call")
        for c in ("status", "reason", "calls"):
            t.add_column(c, justify="right" if c == "calls" else "left")
        for status, code, n in sorted(rows, key=lambda r: (r[0], -r[2])):
            t.add_row(status, code, f"{n:,}")
        _show(console, t)
        t = _table("Calls by status (GET /v1/campaigns/{id})")
        cols = ("queued", "leased", "completed", "refused", "withdrawn", "expired")
        t.add_column("campaign")
        for c in cols:
            t.add_column(c, justify="right")
        for spec in CAMPAIGNS:
            counts = expect(self.apis["manager"].get(
                f"/v1/campaigns/{self.campaign_ids[spec.key]}"), 200)["counts"]
            t.add_row(spec.short, *(f"{counts.get(c, 0):,}" for c in cols))
        _show(console, t)

    def _audit(self, console: Console) -> bool:
        out = expect(self.apis["compliance"].get("/v1/audit/verify"), 200)
        if out.get("ok"):
            cp = out.get("checkpoint") or {}
            console.print(f"[green]audit log verified[/]: {out['entries']:,} entries sealed, "
                          f"signed root {str(cp.get('root_hash'))[:16]}... "
                          "(GET /v1/audit/verify)")
            return True
        console.print(f"[bold red]audit log check FAILED[/] at entry {out.get('index')}: "
                      f"{out.get('problem')}")
        return False

    def _curl(self, console: Console, server: DemoServer, keys: dict[str, str],
              db_path: Path, opts: DemoOptions) -> None:
        cid = self.campaign_ids[CAMPAIGNS[0].key]
        console.rule("the same data through the API")
        lines = [
            f"export CG={server.url}",
            f"export COMPLIANCE_KEY={keys['compliance']}",
            f"export ADMIN_KEY={keys['admin']}",
            'curl -s -H "Authorization: Bearer $COMPLIANCE_KEY" $CG/v1/audit/verify',
            'curl -s -H "Authorization: Bearer $COMPLIANCE_KEY" $CG/v1/refusals/summary',
            'curl -s -H "Authorization: Bearer $COMPLIANCE_KEY" '
            '"$CG/v1/refusals?code=DEADLINE_PASSED&limit=5"',
            'curl -s -H "Authorization: Bearer $COMPLIANCE_KEY" '
            '"$CG/v1/call-log?agent_id=A-01&limit=5"',
            'curl -s -H "Authorization: Bearer $COMPLIANCE_KEY" "$CG/v1/refusals.csv" '
            f"-o {db_path.parent / 'refusals.csv'}",
            f'curl -s -H "Authorization: Bearer $ADMIN_KEY" $CG/v1/campaigns/{cid}',
        ]
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)
        if opts.keep:
            console.print("\n(the server keeps serving until Ctrl-C)")
        else:
            console.print(
                "\nThe server stops when the demo exits: run [bold]callgate demo --keep[/] to "
                "keep it serving until Ctrl-C, or reopen this database (same keys, real clock):"
            )
            console.print(f"CALLGATE_DATABASE_URL=sqlite:///{db_path} callgate serve --port "
                          "8000", highlight=False, soft_wrap=True)
        console.print(f"(delete it with: rm -r {db_path.parent})", highlight=False,
                      soft_wrap=True)


def _table(title: str) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)


def _show(console: Console, table: Table) -> None:
    """The title on a line of its own (a table narrower than its title would wrap it)."""
    console.print(f"\n[bold]{table.title}[/]", highlight=False)
    table.title = None
    console.print(table)


def _max_in_window(ts: Sequence[datetime], width: timedelta) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _deferred_by_cap(s: Any) -> Counter[str]:
    from sqlalchemy import func, select

    from core.models import AuditEntry

    out: Counter[str] = Counter()
    for code in ("DAILY_CAP", "WEEKLY_CAP"):
        out[code] = int(s.scalar(
            select(func.count()).select_from(AuditEntry).where(
                AuditEntry.kind == "call.deferred", AuditEntry.payload.contains(code))
        ) or 0)
    return out
