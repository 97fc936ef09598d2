"""The demo's texts (issue 18): an approved reminder template, an SMS campaign whose rows
carry their appointment, an SMS gateway that leases texts (``channels: ["sms"]``), sends them
and reports them, and patients who text back: STOP in its many spellings (each forwarded by
the gateway at once; one delivered twice), HELP, and a plain-language opt-out held for a
human. What a patient texts never reaches the voice dialer's tasks: the voice dialer leases
its own channels."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console

from cli.demo.client import Api, expect
from cli.demo.data import CALLBACK, PROVIDER, Patient, iso

if TYPE_CHECKING:
    from core.runtime import Runtime

TEMPLATE = ("{provider_name}: reminder of your visit {appointment_date} at "
            "{appointment_time}. To change it call {callback_number}. Reply STOP to opt out.")
STOPS = ("STOP", "stop", "Stop.", "OPT OUT", "Unsubscribe", "cancel", "QUIT", "end")


@dataclass
class SmsDemo:
    """The SMS campaign and gateway of the demo, and what came of them (for the report)."""

    rng: random.Random
    manager: Api
    gateway: Api
    compliance: Api
    campaign_id: str = ""
    template: dict[str, Any] = field(default_factory=dict)
    refused_template: dict[str, Any] = field(default_factory=dict)
    intake: dict[str, Any] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    texters: list[str] = field(default_factory=list)  # numbers that will text back
    plans: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    def setup(self, members: list[Patient], now: datetime, steps: int) -> None:
        # A template with a name placeholder is refused, naming it; the approved one fits one
        # segment in the worst case.
        r = self.manager.post("/v1/templates", {
            "name": "reminder (with name)", "channel": "sms", "purpose": "appointment_reminder",
            "text": "Hi {patient_name}, " + TEMPLATE})
        self.refused_template = {"status": r.status_code, **r.json()["error"]}
        self.template = expect(self.manager.post("/v1/templates", {
            "name": "Visit reminder (text)", "channel": "sms",
            "purpose": "appointment_reminder", "text": TEMPLATE}), 201)
        self.campaign_id = expect(self.manager.post("/v1/campaigns", {
            "name": "Visit reminders (text)", "purpose": "appointment_reminder",
            "channel": "sms", "provider_name": PROVIDER, "callback_number": CALLBACK,
            "template_id": self.template["id"], "max_attempts": 2}), 201)["id"]
        rows = []
        for i, p in enumerate(members):
            appointment = now + timedelta(days=self.rng.randint(1, 5),
                                          hours=self.rng.randint(1, 7))
            rows.append({"external_id": f"sms-{i:05d}", "patient_ref": p.ref,
                         "phone": p.dialled_as(self.rng), "postal_code": p.postal_code,
                         "state": p.state,
                         "appointment_at": iso(appointment) if i % 25 else None})
        self.intake = expect(self.manager.post(f"/v1/campaigns/{self.campaign_id}/calls",
                                               rows), 200)
        # Who texts back, and when (steps of the simulation).
        queued = [members[r["row"] - 1] for r in self.intake["results"]
                  if r["status"] == "queued"]
        self.rng.shuffle(queued)
        plans: dict[int, list[tuple[str, str]]] = {}
        for i, p in enumerate(queued[: max(6, len(queued) // 8)]):
            body = (STOPS[i % len(STOPS)] if i % 6 not in (1, 2)
                    else "HELP" if i % 6 == 1 else "please don't text me again")
            step = self.rng.randrange(1, max(2, steps))
            plans.setdefault(step, []).append((f"+1{p.area}555{p.line}", body))
        self.plans = plans

    def step(self, n: int, now: datetime) -> int:
        """One step: forward what patients texted, then lease, send and report. Returns the
        calls that the STOPs withdrew."""
        withdrawn = 0
        for j, (phone, body) in enumerate(self.plans.get(n, [])):
            msg = f"SM{n:04d}{j:02d}"
            out = expect(self.gateway.post("/v1/sms/inbound", {
                "message_id": msg, "from": phone, "to": CALLBACK, "body": body,
                "received_at": iso(now)}), 200)
            self.counts[f"inbound {out['action']}"] += 1
            withdrawn += int(out.get("withdrawn_calls", 0))
            if out["action"] == "revoked" and not self.counts["redelivered"]:
                again = expect(self.gateway.post("/v1/sms/inbound", {
                    "message_id": msg, "from": phone, "to": CALLBACK, "body": body,
                    "received_at": iso(now)}), 200)
                assert again["duplicate"] and again["reply_id"] == out["reply_id"]
                self.counts["redelivered"] += 1
        tasks = expect(self.gateway.post("/v1/queue/lease", {
            "dialer_id": "riverside-sms-gateway", "limit": 100, "lease_seconds": 60,
            "channels": ["sms"]}), 200)["tasks"]
        for t in tasks:
            if t["kind"] != "call":
                expect(self.gateway.post(f"/v1/sms/replies/{t['call_id']}/outcome", {
                    "lease_id": t["lease_id"], "result": "sent", "sent_at": iso(now)}), 200)
                self.counts[f"{t['kind']} sent"] += 1
                continue
            if self.gateway.post(f"/v1/queue/{t['call_id']}/dial",
                                 {"lease_id": t["lease_id"]}).status_code != 200:
                self.counts["withheld at the dial check"] += 1
                continue
            expect(self.gateway.post(f"/v1/queue/{t['call_id']}/outcome", {
                "lease_id": t["lease_id"], "agent_id": "sms-gw", "agent_name": "SMS gateway",
                "disclosed_callback_number": t["callback_number"], "result": "connected",
                "started_at": iso(now), "ended_at": iso(now)}), 200)
            self.counts["texts sent"] += 1
            self.counts["longest text"] = max(self.counts["longest text"], len(t["text"]))
        return withdrawn

    def report(self, console: Console, rt: Runtime) -> None:
        from texts.rules import fits_one_segment

        t = self.template
        console.print(
            f"\n[bold]Texts[/]: template {t['encoding']}, worst case {t['max_length']} of "
            f"{t['limit']} (one segment); a template with {{patient_name}} was refused: "
            f"{self.refused_template['status']} {self.refused_template['code']} "
            f"({', '.join(r['code'] for r in self.refused_template['details']['reasons'])})",
            highlight=False)
        i = self.intake
        console.print(
            f"SMS campaign rows: {i['accepted']} queued, {i['refused']} refused, {i['invalid']} "
            f"invalid (no appointment_at for a template that needs it)", highlight=False)
        c = self.counts
        console.print(
            f"texts sent {c['texts sent']} (longest {c['longest text']} characters), withheld "
            f"at the dial check {c['withheld at the dial check']}; inbound: STOP "
            f"{c['inbound revoked']} -> confirmations sent {c['sms_confirmation sent']} "
            f"(one per STOP, a redelivered STOP {c['redelivered']}x changed nothing), HELP "
            f"{c['inbound help']} -> help texts {c['sms_help sent']}, held for review "
            f"{c['inbound review']}", highlight=False)
        assert fits_one_segment("x" * c["longest text"])
