"""The demo's "on the call itself" (API.md "Recording and identity verification", "Reassigned
numbers"), kept apart from the rest of the demo: which consents allow recording, what an agent
desktop reports about recording and identity checks (with one misconfigured recorder and one
hurried disclosure), and the organisation's Reassigned Numbers Database round trip (the query
file of ``callgate rnd export``, answers loaded through ``POST /v1/numbers/reassigned``)."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.table import Table

from cli.demo.data import iso

if TYPE_CHECKING:
    import httpx

    from core.keys import Identity
    from core.runtime import Runtime

class Poster(Protocol):
    """The demo's HTTP client for one role (cli.demo.client.Api), as far as used here."""

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response: ...


RECORDING_SHARE = 0.35  # written consents that also consent to recording
IDENTIFIERS = ("date_of_birth", "address", "last_service_date", "member_id")
YES_NUMBERS = 4  # numbers on the call lists the RND finds reassigned since their consent
NO_DATA_SHARE = 0.03


def with_recording(body: dict[str, Any] | None, rng: random.Random) -> dict[str, Any] | None:
    """A consent body, some written ones also consenting to recording."""
    if body is not None and body["method"] != "oral" and rng.random() < RECORDING_SHARE:
        body = {**body, "recording": True}
    return body


@dataclass
class OnCall:
    """What the agents do on the call, and what came of it (for the report)."""

    rng: random.Random
    recorder_slip_done: bool = False
    disclosure_slip_done: bool = False
    tasks: Counter[str] = field(default_factory=Counter)
    slips: list[str] = field(default_factory=list)
    rnd: dict[str, Any] = field(default_factory=dict)
    reassigned_refs: list[str] = field(default_factory=list)

    def outcome_fields(self, task: dict[str, Any], result: str, agent: str) -> dict[str, Any]:
        """An agent desktop doing it right: record only when the task allows it; before
        disclosing health information, verify the task's identity_identifiers (distinct).
        Two deliberate slips, once each: a desktop whose recorder stays on for a forbidden
        call, and an agent who discloses after one identifier."""
        self.tasks[f"recording {task['recording']}"] += 1
        recorded = task["recording"] == "allowed" and result == "connected"
        slipped = False
        if (not recorded and result == "connected" and task["recording"] == "forbidden"
                and not self.recorder_slip_done and task["channel"] != "prerecorded_voice"):
            self.recorder_slip_done, recorded, slipped = True, True, True
            self.slips.append(f"{agent}: recorder left on for a call whose task said "
                              "recording: forbidden")
        need = int(task.get("identity_identifiers", 0))
        out: dict[str, Any] = {"recorded": recorded}
        if result != "connected" or task["channel"] == "prerecorded_voice":
            # Voicemail, no answer, an IVR message: no health information is left.
            return {**out, "phi_disclosed": False, "identity_verified_with": []}
        verified = self.rng.sample(IDENTIFIERS, k=max(need, 2 if need else 0))
        if need and not self.disclosure_slip_done and not slipped:
            self.disclosure_slip_done = True
            verified = verified[:1]
            self.slips.append(f"{agent}: disclosed health information after verifying "
                              f"{len(verified)} of {need} identifiers")
        if len(set(verified)) >= need:
            self.tasks["identity verified, then disclosed"] += 1
        return {**out, "phi_disclosed": True, "identity_verified_with": verified}

    def reassigned_round_trip(self, rt: Runtime, who: Identity, manager: Poster,
                              on_lists: list[str], now: datetime) -> None:
        """``callgate rnd export``'s file for the registry, answered as the RND would: most
        numbers ``no``, a few ``no_data``, and YES_NUMBERS numbers with calls queued
        ``yes`` (permanently disconnected since their consent): loaded through the API,
        which withdraws their calls."""
        from consent import rnd_service

        buf = io.StringIO()
        exported = rnd_service.export_queries(rt, who, lambda _i: buf)
        rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
        queued = {p[2:] for p in on_lists}
        yes = set(self.rng.sample(sorted(queued & {r["telephone_number"] for r in rows}),
                                  k=min(YES_NUMBERS, len(queued))))
        queried = iso(now - timedelta(hours=2))
        lines = ["phone,date,answer,queried_at"]
        for r in rows:
            n = r["telephone_number"]
            ans = ("yes" if n in yes else
                   "no_data" if self.rng.random() < NO_DATA_SHARE else "no")
            lines.append(f"{n},{r['date']},{ans},{queried}")
        resp = manager.post("/v1/numbers/reassigned", content="\n".join(lines).encode(),
                            headers={"content-type": "text/csv"})
        if resp.status_code != 200:
            raise RuntimeError(f"POST /v1/numbers/reassigned answered {resp.status_code}")
        self.rnd = {"exported": exported.rows, **resp.json()}
        self.reassigned_refs = sorted(yes)

    def report(self, console: Console, rt: Runtime) -> None:
        from sqlalchemy import func, select

        from core.models import Attempt, Refusal

        t = Table(title=None)
        t.add_column("on the call itself")
        t.add_column("calls", justify="right")
        for k, v in sorted(self.tasks.items()):
            t.add_row(k, f"{v:,}")
        with rt.db.read() as s:
            recorded = s.scalar(select(func.count()).select_from(Attempt).where(
                Attempt.recorded.is_(True))) or 0
            flagged = [(a.agent_id, a.agent_name, list(a.flags or [])) for a in s.execute(
                select(Attempt.agent_id, Attempt.agent_name, Attempt.flags))
                if {"RECORDING_WITHOUT_CONSENT", "IDENTITY_NOT_VERIFIED"} & set(a.flags or [])]
            reassigned = s.scalar(select(func.count()).select_from(Refusal).where(
                Refusal.code == "NUMBER_REASSIGNED")) or 0
        t.add_row("recorded (outcome recorded: true)", f"{recorded:,}")
        console.print("\n[bold]Recording consent and identity verification[/]")
        console.print(t)
        for agent_id, name, flags in flagged:
            console.print(f"[red]flagged[/] {', '.join(flags)}: agent {agent_id} ({name}) "
                          "- shown on the dashboard's flagged calls and in the call log",
                          highlight=False)
        for slip in self.slips:
            console.print(f"  (staged: {slip})", highlight=False)
        r = self.rnd
        if r:
            console.print(
                f"\n[bold]Reassigned Numbers Database[/]: {r['exported']:,} numbers and "
                f"consent dates exported (callgate rnd export), answers loaded "
                f"(POST /v1/numbers/reassigned): yes {r['answers']['yes']}, no "
                f"{r['answers']['no']:,}, no_data {r['answers']['no_data']}; queued calls "
                f"withdrawn [red]NUMBER_REASSIGNED {r['withdrawn_calls']}[/]; refusal-log rows "
                f"with NUMBER_REASSIGNED: {reassigned}", highlight=False)
            console.print('curl -s -H "Authorization: Bearer $COMPLIANCE_KEY" '
                          '"$CG/v1/refusals?code=NUMBER_REASSIGNED"  (each number\'s story in '
                          'the dashboard shows its answers)', highlight=False, soft_wrap=True)
