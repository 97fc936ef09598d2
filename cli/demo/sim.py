"""The demo's simulated dialer week: a real HTTP server on a fake clock, agents, dialers."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich.progress import (
    Progress,
)

from config.clock import FakeClock
from core.runtime import Runtime

if TYPE_CHECKING:
    from cli.demo.oncall import OnCall
    from cli.demo.texts import SmsDemo
from cli.demo.client import Api, expect
from cli.demo.data import (
    AGENT_NAMES,
    AGENT_RESULTS,
    CALLS_PER_AGENT,
    CAMPAIGNS,
    DROP_RATE,
    EASTERN,
    IDLE_BACKOFF,
    IVR_RESULTS,
    LEASE_SECONDS,
    ROUND,
    SAFETY,
    START,
    STEP,
    WRAP_UP_RATE,
    DemoOptions,
    Patient,
    iso,
    pick,
    when,
)

# --- the simulated dialer ----------------------------------------------------------------


@dataclass
class Held:
    task: dict[str, Any]
    lease_expires_at: datetime
    result: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class Tally:
    """What the agents saw (each agent writes its own; merged at the end)."""

    counts: Counter[str] = field(default_factory=Counter)
    dial_blocked: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.dial_blocked.update(other.dial_blocked)
        self.outcomes.update(other.outcomes)


class Agent:
    """One agent at a desktop: one call a round. Right before dialling, the dial check; after
    the call, the outcome with the agent's identification; a call that could not be over and
    reported before its lease ends is released undialled instead."""

    def __init__(self, n: int, api: Api, rng: random.Random, sim: Simulation) -> None:
        self.agent_id = f"A-{n:02d}"
        self.agent_name = AGENT_NAMES[(n - 1) % len(AGENT_NAMES)]
        self.api, self.rng, self.sim = api, rng, sim
        self.queue: list[Held] = []
        self.in_call: Held | None = None
        self.tally = Tally()

    def round(self, now: datetime) -> None:
        """Report the call that ended, then dial the next one (unless still wrapping up)."""
        if self.in_call is not None:
            self._report(self.in_call)
            self.in_call = None
        if self.rng.random() < WRAP_UP_RATE:
            return  # notes from the last call take this round
        while self.queue:
            h = self.queue.pop(0)
            if h.lease_expires_at - SAFETY < now + ROUND:
                # Not over and reported before the lease ends: hand it back undialled.
                self._release(h)
                continue
            if self.rng.random() < DROP_RATE:
                self.tally.counts["dropped"] += 1  # never reported: the lease will expire
                continue
            r = self.api.post(f"/v1/queue/{h.task['call_id']}/dial",
                              {"lease_id": h.task["lease_id"]})
            if r.status_code == 409:
                self.tally.dial_blocked[r.json()["error"]["code"]] += 1
                continue
            expect(r, 200)
            self._dial(h, now)
            self.in_call = h
            return

    def finish(self) -> None:
        """End of the step's rounds: report the last call; what was not dialled goes back
        (released undialled: it does not count against the caps)."""
        if self.in_call is not None:
            self._report(self.in_call)
            self.in_call = None
        while self.queue:
            self._release(self.queue.pop(0))

    def _release(self, h: Held) -> None:
        expect(self.api.post(f"/v1/queue/{h.task['call_id']}/release",
                             {"lease_id": h.task["lease_id"]}), 200)
        self.tally.counts["released"] += 1

    def busy(self) -> bool:
        return bool(self.queue) or self.in_call is not None

    def _dial(self, h: Held, now: datetime) -> None:
        ivr = h.task["channel"] == "prerecorded_voice"
        h.result = pick(self.rng, IVR_RESULTS if ivr else AGENT_RESULTS)
        talk = {
            "connected": (25, 55) if ivr else (40, 95),
            "voicemail": (15, 40),
            "no_answer": (20, 30),
            "busy": (2, 5),
            "failed": (1, 3),
            "opted_out": (10, 25),
            "wrong_number": (8, 20),
        }[h.result]
        h.started_at = now + timedelta(seconds=self.rng.randint(4, 12))
        h.ended_at = h.started_at + timedelta(seconds=self.rng.randint(*talk))

    def _report(self, h: Held) -> None:
        t = h.task
        ivr = t["channel"] == "prerecorded_voice"
        assert h.started_at is not None and h.ended_at is not None
        body = {
            "lease_id": t["lease_id"],
            "agent_id": "ivr" if ivr else self.agent_id,
            "agent_name": "Riverside automated line" if ivr else self.agent_name,
            "disclosed_callback_number": t["callback_number"],
            "started_at": iso(h.started_at),
            "ended_at": iso(h.ended_at),
            "result": h.result,
        }
        if self.sim.oncall is not None:  # recording and identity (cli.demo.oncall)
            body.update(self.sim.oncall.outcome_fields(t, h.result, self.agent_id))
        path = f"/v1/queue/{t['call_id']}/outcome"
        if not ivr and self.sim.take_missing_id_demo():
            # One desktop forgets the agent id once: rejected, flagged, the lease still held.
            r = self.api.post(path, {k: v for k, v in body.items() if k != "agent_id"})
            err = r.json().get("error", {})
            self.sim.missing_id_answer = (r.status_code, str(err.get("code")),
                                          str(err.get("message")))
        r = self.api.post(path, body)
        if r.status_code == 409:
            self.tally.counts["outcome after lease lost"] += 1
            return
        expect(r, 200)
        self.tally.outcomes[h.result] += 1


class Dialer:
    """A vendor's dialer server: polls callgate once a step for its agents' next calls
    (one lease request, several tasks) and backs off while the queue has nothing callable."""

    def __init__(self, n: int, agents: list[Agent], api: Api, calls_per_agent: int) -> None:
        self.dialer_id = f"riverside-dialer-{n}"
        self.agents, self.api, self.calls_per_agent = agents, api, calls_per_agent
        self.idle_until: datetime | None = None
        self.polls = 0

    def lease(self, now: datetime) -> int:
        if self.idle_until is not None and now < self.idle_until:
            return 0
        want = sum(max(0, self.calls_per_agent - len(a.queue)) for a in self.agents)
        if want == 0:
            return 0
        body = {"dialer_id": self.dialer_id, "limit": min(100, want),
                "lease_seconds": LEASE_SECONDS,
                # Texts go to the SMS gateway (cli.demo.texts), calls to the agents.
                "channels": ["autodialed_voice", "prerecorded_voice"]}
        tasks = expect(self.api.post("/v1/queue/lease", body), 200)["tasks"]
        self.polls += 1
        if not tasks:
            self.idle_until = now + IDLE_BACKOFF
            return 0
        self.idle_until = None
        for i, t in enumerate(tasks):
            self.agents[i % len(self.agents)].queue.append(Held(t, when(t["lease_expires_at"])))
        return len(tasks)

    def round(self, now: datetime) -> None:
        for a in self.agents:
            a.round(now)

    def finish(self) -> None:
        for a in self.agents:
            a.finish()


@dataclass
class Event:
    kind: str  # revoke | dnc | manual
    patient: Patient
    campaign_id: str | None = None


class Simulation:
    """Steps of STEP: the maintenance jobs run, each dialer polls, mid-week events happen,
    then rounds of ROUND in which every agent reports its last call and dials the next."""

    def __init__(self, opts: DemoOptions, rt: Runtime, clock: FakeClock, apis: dict[str, Api],
                 patients: list[Patient], campaign_ids: dict[str, str],
                 on_list: dict[str, list[Patient]], rng: random.Random) -> None:
        self.opts, self.rt, self.clock, self.apis = opts, rt, clock, apis
        self.patients, self.campaign_ids, self.on_list, self.rng = (
            patients, campaign_ids, on_list, rng)
        self.steps = int(timedelta(days=opts.days) / STEP)
        self.agents = [Agent(i + 1, apis["dialer"], random.Random(opts.seed * 1000 + i), self)
                       for i in range(opts.agents)]
        # One dialer server polls for all its agents. (Threads would not make it faster:
        # client and server share this process, and SQLite one write lock.)
        self.dialer = Dialer(1, self.agents, apis["dialer"], CALLS_PER_AGENT)
        self.rounds = CALLS_PER_AGENT + 1
        self._missing_done = False
        self.missing_id_answer: tuple[int, str, str] | None = None
        self.job_rows: Counter[str] = Counter()
        self.events = self._plan_events()
        self.event_counts: Counter[str] = Counter()
        self.withdrawn_by_events = 0
        self.manual: Counter[str] = Counter()
        self.oncall: OnCall | None = None  # set by the run (cli.demo.oncall)
        self.sms: SmsDemo | None = None  # set by the run (cli.demo.texts)

    def take_missing_id_demo(self) -> bool:
        if self._missing_done:
            return False
        self._missing_done = True
        return True

    def _plan_events(self) -> dict[int, list[Event]]:
        """Mid-week: patients text STOP, ask by letter not to be called, call back."""
        out: dict[int, list[Event]] = defaultdict(list)
        callable_ = [p for ps in self.on_list.values() for p in ps
                     if p.consent in ("written", "e-signed")]
        if not callable_ or self.steps < 2:
            return out
        for _ in range(max(3, len(self.patients) // 150)):
            out[self.rng.randrange(1, self.steps)].append(
                Event("revoke", self.rng.choice(callable_)))
        for _ in range(max(2, len(self.patients) // 400)):
            out[self.rng.randrange(1, self.steps)].append(
                Event("dnc", self.rng.choice(callable_)))
        by_ref = {p.ref: key for key, ps in self.on_list.items() for p in ps}
        for day in range(self.opts.days):
            for hours in (3, 6, 9):  # callbacks at 11:00, 14:00 and 17:00 Eastern
                step = int(timedelta(days=day, hours=hours) / STEP)
                if 0 < step < self.steps:
                    p = self.rng.choice(callable_)
                    out[step].append(Event("manual", p, self.campaign_ids[by_ref[p.ref]]))
        return out

    def run(self, progress: Progress) -> None:
        from dialer.maintenance import JOBS

        bar = progress.add_task("simulation", total=self.steps)
        for step in range(self.steps):
            t = START + step * STEP
            self.clock.set(t)
            for name, job in JOBS.items():
                self.job_rows[name] += job(self.rt)
            self.dialer.lease(t)
            for ev in self.events.get(step, []):
                self._event(ev)
            if self.sms is not None:
                self.withdrawn_by_events += self.sms.step(step, t)
            if any(a.busy() for a in self.agents):
                for r in range(self.rounds):
                    self.clock.set(t + r * ROUND)
                    self.dialer.round(t + r * ROUND)
                self.clock.set(t + self.rounds * ROUND)
                self.dialer.finish()
            local = t.astimezone(EASTERN)
            progress.update(bar, advance=1,
                            description=f"simulation  {local:%a %d %b %H:%M} ET")
        self.clock.set(START + self.steps * STEP)
        for name, job in JOBS.items():
            self.job_rows[name] += job(self.rt)

    def _event(self, ev: Event) -> None:
        manager = self.apis["manager"]
        if ev.kind == "revoke":
            # Some STOPs come from a patient whose call a dialer holds right now: the dial
            # check must stop that call.
            held = [h for a in self.agents for h in a.queue]
            phone = ev.patient.dialled_as(self.rng)
            if held and self.rng.random() < 0.5:
                phone = self.rng.choice(held).task["phone"]
            out = expect(manager.post("/v1/consents/revocations",
                                      {"phone": phone, "source": "sms_stop"}), 201)
            self.withdrawn_by_events += int(out.get("withdrawn_calls", 0))
            self.event_counts["revocations (SMS STOP)"] += 1
        elif ev.kind == "dnc":
            out = expect(manager.post("/v1/dnc", {"phone": ev.patient.dialled_as(self.rng),
                                                  "reason": "asked by letter not to be called"}),
                         201)
            self.withdrawn_by_events += int(out.get("withdrawn_calls", 0))
            self.event_counts["do-not-call requests (letter)"] += 1
        else:
            spec = next(c for c in CAMPAIGNS if self.campaign_ids[c.key] == ev.campaign_id)
            body = {"phone": ev.patient.dialled_as(self.rng), "purpose": spec.purpose,
                    "channel": "autodialed_voice", "state": ev.patient.state,
                    "postal_code": ev.patient.postal_code, "reserve": True,
                    "agent_id": self.agents[0].agent_id, "agent_name": self.agents[0].agent_name,
                    "campaign_id": ev.campaign_id}
            out = expect(self.apis["dialer"].post("/v1/check", body), 200)
            if out["allowed"]:
                self.manual["reserved"] += 1
            else:
                self.manual[out["reasons"][0]["code"]] += 1

    def tally(self) -> Tally:
        total = Tally()
        for a in self.agents:
            total.merge(a.tally)
        total.counts["lease polls"] = self.dialer.polls
        return total
