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
(:func:`dialer.queue.store.cap_violations`) and the audit chain is verified by
``GET /v1/audit/verify``. The exit status is non-zero when either fails.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import random
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from config.clock import FakeClock
from core.runtime import Runtime

if TYPE_CHECKING:
    from core.keys import Identity

# Monday 30 November 2026, 13:00 UTC = 08:00 Eastern: the first minute the east coast may be
# called. Not a US holiday (Thanksgiving was Thursday 26 November), so the week starts with
# every zone's ordinary calling hours.
START = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
EASTERN = ZoneInfo("America/New_York")
STEP = timedelta(minutes=30)  # one simulation step: jobs run, the dialer polls
ROUND = timedelta(minutes=2)  # one call per agent per round: dial check, dial, report
LEASE_SECONDS = 600
SAFETY = timedelta(seconds=60)  # never report (or dial) closer than this to a lease's end
IDLE_BACKOFF = timedelta(hours=1)  # a dialer whose poll came back empty waits this long
CALLS_PER_AGENT = 3  # calls an agent is given per step (one per round)
WRAP_UP_RATE = 0.08  # an agent spends a round on notes instead of dialling
DROP_RATE = 0.012  # an agent's desktop crashes mid-lease: never reported, the lease expires
HTTP_CONSENTS = 200  # about this many consents go through POST /v1/consents
PROVIDER = "Riverside Health"
CALLBACK = "+1 314 555 0199"

# Area codes with a home address in the same state (fictional 555-01xx lines: 100 a code).
AREA_HOMES: tuple[tuple[str, str, str], ...] = (
    ("212", "NY", "10001"), ("718", "NY", "11201"), ("617", "MA", "02108"),
    ("215", "PA", "19103"), ("412", "PA", "15222"), ("404", "GA", "30303"),
    ("305", "FL", "33130"), ("813", "FL", "33602"), ("919", "NC", "27601"),
    ("704", "NC", "28202"), ("410", "MD", "21201"), ("207", "ME", "04101"),
    ("313", "MI", "48226"), ("614", "OH", "43215"), ("216", "OH", "44113"),
    ("317", "IN", "46204"), ("502", "KY", "40202"), ("312", "IL", "60601"),
    ("314", "MO", "63110"), ("816", "MO", "64106"), ("615", "TN", "37203"),
    ("504", "LA", "70112"), ("612", "MN", "55401"), ("414", "WI", "53202"),
    ("713", "TX", "77002"), ("214", "TX", "75201"), ("512", "TX", "78701"),
    ("405", "OK", "73102"), ("303", "CO", "80202"), ("801", "UT", "84111"),
    ("505", "NM", "87102"), ("602", "AZ", "85004"), ("208", "ID", "83702"),
    ("702", "NV", "89101"), ("415", "CA", "94103"), ("213", "CA", "90012"),
    ("619", "CA", "92101"), ("206", "WA", "98101"), ("503", "OR", "97204"),
    ("808", "HI", "96813"), ("907", "AK", "99501"),
)
MAX_PATIENTS = 100 * len(AREA_HOMES)

# How the organisation's consent registry looks (shares of patients).
CONSENT_MIX: tuple[tuple[str, float], ...] = (
    ("written", 0.52),
    ("e-signed", 0.18),
    ("e-signed, voice only", 0.05),
    ("written, reminders only", 0.04),
    ("oral", 0.06),
    ("expired", 0.04),
    ("expires mid-week", 0.02),
    ("revoked", 0.04),
    ("do-not-call", 0.03),
    ("none", 0.02),
)
AGENT_NAMES = ("Dana", "Luis", "Priya", "Sam", "Grace", "Omar", "Mei", "Tom", "Ana", "Kofi")
AGENT_RESULTS = (
    ("connected", 0.42), ("voicemail", 0.18), ("no_answer", 0.22), ("busy", 0.08),
    ("failed", 0.03), ("opted_out", 0.04), ("wrong_number", 0.03),
)
IVR_RESULTS = (
    ("connected", 0.45), ("voicemail", 0.2), ("no_answer", 0.22), ("busy", 0.08),
    ("opted_out", 0.05),
)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seed: int = 7
    patients: int = 3000
    days: int = 7
    agents: int = 6
    keep: bool = False


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    key: str
    name: str
    short: str
    purpose: str
    channel: str
    window: tuple[str, str] | None
    max_attempts: int
    share: float  # of patients on this campaign's list
    priority: int


CAMPAIGNS: tuple[CampaignSpec, ...] = (
    CampaignSpec("discharge", "Cardiology discharge follow-up", "discharge follow-up",
                 "discharge_followup",
                 "autodialed_voice", ("09:00", "19:00"), 3, 0.06, 8),
    CampaignSpec("reminders", "Primary care appointment reminders", "appointment reminders",
                 "appointment_reminder",
                 "autodialed_voice", None, 2, 0.10, 5),
    CampaignSpec("results", "Lab results ready (recorded message)", "lab results (IVR)",
                 "test_results",
                 "prerecorded_voice", ("10:00", "20:00"), 3, 0.05, 6),
)
BILLING = CampaignSpec("billing", "Outstanding balance reminders", "billing", "billing",
                       "autodialed_voice", None, 3, 0.0, 5)


# --- the synthetic organisation ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Patient:
    ref: str
    area: str
    line: str  # 0100-0199
    state: str | None
    postal_code: str | None
    consent: str

    def dialled_as(self, rng: random.Random) -> str:
        """The number as a spreadsheet would hold it (formats vary; intake normalises)."""
        a, line = self.area, self.line
        return rng.choice(
            (f"({a}) 555-{line}", f"{a}-555-{line}", f"{a}555{line}", f"+1 {a} 555 {line}")
        )


def make_patients(n: int, rng: random.Random) -> list[Patient]:
    slots = [(i, line) for i in range(len(AREA_HOMES)) for line in range(100, 200)]
    rng.shuffle(slots)
    kinds = [k for k, _ in CONSENT_MIX]
    weights = [w for _, w in CONSENT_MIX]
    out: list[Patient] = []
    for n_, (i, line) in enumerate(slots[:n]):
        area, state, postal = AREA_HOMES[i]
        r = rng.random()
        home: tuple[str | None, str | None]
        if r < 0.75:
            home = (state, postal)
        elif r < 0.82:  # moved away, kept the number: every candidate zone must be open
            _, st, pc = rng.choice(AREA_HOMES)
            home = (st, pc)
        else:
            home = (None, None)
        out.append(Patient(f"MRN-{100000 + n_}", area, f"{line:04d}", home[0], home[1],
                           rng.choices(kinds, weights)[0]))
    return out


def consent_body(p: Patient, now: datetime, rng: random.Random) -> dict[str, Any] | None:
    """The POST /v1/consents body for a patient's consent on file (None: no consent)."""
    if p.consent == "none":
        return None
    obtained = now - timedelta(days=rng.randint(20, 600), hours=rng.randint(0, 9))
    digest = hashlib.sha256(p.ref.encode()).hexdigest()[:16]
    body: dict[str, Any] = {
        "patient_ref": p.ref,
        "phone": p.dialled_as(rng),
        "channels": ["autodialed_voice", "prerecorded_voice", "sms"],
        "purposes": ["*"],
        "method": "written",
        "obtained_at": _iso(obtained),
        "evidence_ref": f"scan://consents/{p.ref}.pdf#sha256={digest}",
        "expires_at": None,
    }
    if p.consent.startswith("e-signed"):
        body["method"] = "electronic_signature"
        body["evidence_ref"] = f"esign://envelopes/{uuid.UUID(int=rng.getrandbits(128))}"
    if p.consent == "e-signed, voice only":
        body["channels"] = ["autodialed_voice"]
    elif p.consent == "written, reminders only":
        body["purposes"] = ["appointment_reminder"]
    elif p.consent == "oral":
        body["method"] = "oral"
        body["evidence_ref"] = f"note://front-desk/{p.ref}"
    elif p.consent == "expired":
        body["obtained_at"] = _iso(now - timedelta(days=rng.randint(400, 800)))
        body["expires_at"] = _iso(now - timedelta(days=rng.randint(3, 60)))
    elif p.consent == "expires mid-week":
        body["expires_at"] = _iso(now + timedelta(days=rng.randint(1, 4), hours=rng.randint(0, 23)))
    return body


def call_rows(
    spec: CampaignSpec, members: Sequence[Patient], rng: random.Random, now: datetime
) -> list[dict[str, Any]]:
    """A campaign's call list, as the organisation's systems would export it."""
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(members):
        not_before: datetime | None = None
        if spec.key == "discharge":
            not_after = now + timedelta(days=3)  # within 72 hours of discharge
        elif spec.key == "reminders":
            appointment = now + timedelta(days=rng.randint(1, 6), hours=rng.randint(1, 8))
            not_after = appointment - timedelta(hours=3)
            if appointment - now > timedelta(days=3):
                not_before = appointment - timedelta(days=3)
        else:
            not_after = now + timedelta(days=5)
        rows.append({
            "external_id": f"{spec.key}-{i + 1:05d}",
            "patient_ref": p.ref,
            "phone": p.dialled_as(rng),
            "not_before": _iso(not_before) if not_before else "",
            "not_after": _iso(not_after),
            "postal_code": p.postal_code or "",
            "state": p.state or "",
            "priority": spec.priority + rng.choice((0, 0, 0, 1, -1)),
        })
    # Duplicates: a resent line (same external_id) and the same number under a new id.
    for j in range(max(2, len(rows) // 80)):
        dup = dict(rng.choice(rows))
        if j % 2:
            dup["external_id"] = f"{spec.key}-r{j:04d}"
        rows.insert(rng.randint(len(rows) // 2, len(rows)), dup)
    # Invalid rows, as real exports have them.
    bad: list[dict[str, Any]] = [
        {"phone": "555-0100"},  # no area code
        {"phone": "+44 20 7946 0958"},  # not an allowed region
        {"state": "ZZ"},
        {"not_after": "next Tuesday"},
        {"priority": "11"},
        {"postal_code": "ABCDE"},
        {"external_id": ""},
    ]
    first = CAMPAIGNS.index(spec) * 3 if spec in CAMPAIGNS else 0
    for j in range(max(3, len(members) // 150)):
        base = dict(rng.choice(rows))
        base["external_id"] = f"{spec.key}-x{j:04d}"
        base.update(bad[(first + j) % len(bad)])
        rows.insert(rng.randint(0, len(rows)), base)
    return rows


def to_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    cols = ["external_id", "patient_ref", "phone", "not_before", "not_after", "postal_code",
            "state", "priority"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    return buf.getvalue().encode()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _pick(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]


# --- the HTTP server in a thread -----------------------------------------------------------


class DemoServer:
    """uvicorn serving ``create_app(runtime)`` from a background thread, on a socket bound
    before start (no port race)."""

    def __init__(self, runtime: Runtime) -> None:
        import uvicorn

        from api.app import create_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        app = create_app(runtime, migrate=False, scheduler=False)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                log_config=None, access_log=False, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="callgate-demo-http",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo HTTP server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class Api:
    """One role's HTTP client (keep-alive)."""

    def __init__(self, base: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60.0
        )

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return self.client.post(path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def close(self) -> None:
        self.client.close()


def expect(resp: httpx.Response, *statuses: int) -> Any:
    if resp.status_code not in statuses:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url.path} answered {resp.status_code}: "
            f"{resp.text[:300]}"
        )
    return resp.json()


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
        h.result = _pick(self.rng, IVR_RESULTS if ivr else AGENT_RESULTS)
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
            "started_at": _iso(h.started_at),
            "ended_at": _iso(h.ended_at),
            "result": h.result,
        }
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
                "lease_seconds": LEASE_SECONDS}
        tasks = expect(self.api.post("/v1/queue/lease", body), 200)["tasks"]
        self.polls += 1
        if not tasks:
            self.idle_until = now + IDLE_BACKOFF
            return 0
        self.idle_until = None
        for i, t in enumerate(tasks):
            self.agents[i % len(self.agents)].queue.append(Held(t, _when(t["lease_expires_at"])))
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


# --- the run -------------------------------------------------------------------------------


def run_demo(opts: DemoOptions, console: Console) -> int:
    """Build, simulate, report. Returns the exit status (0: caps held, chain verified)."""
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
                 settings=Settings(database_url=url, policy_file=None))
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
    with _bar(console) as progress:
        # The consent registry: most of it imported in bulk (as an organisation's existing
        # registry would be), a sample of every kind recorded through POST /v1/consents;
        # earlier revocations and do-not-call requests through the API too.
        bodies = [(p, consent_body(p, now, rng)) for p in patients]
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
                    "received_at": _iso(now - timedelta(days=rng.randint(1, 30)))}))
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

        sim = Simulation(opts, rt, clock, apis, patients, campaign_ids, on_list, rng)
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


# --- the figures ---------------------------------------------------------------------------


class Report:
    def __init__(self, rt: Runtime, apis: dict[str, Api], patients: list[Patient]) -> None:
        self.rt, self.apis, self.patients = rt, apis, patients
        self.intake: dict[str, dict[str, Any]] = {}
        self.billing: tuple[int, dict[str, Any]] | None = None
        self.campaign_ids: dict[str, str] = {}
        self.sim: Simulation | None = None
        self.registry = (0, 0)  # consents imported in bulk, recorded through the API

    def render(self, console: Console, server: DemoServer, keys: dict[str, str],
               db_path: Path, opts: DemoOptions, elapsed: float) -> bool:
        assert self.sim is not None
        self._organisation(console)
        self._intake(console)
        attempts = self._attempts()
        self._days(console, attempts)
        violations = self._caps(console, attempts)
        self._identification(console, attempts)
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
            console.print(f"[green]audit chain verified[/]: {out['entries']:,} entries, "
                          f"head {str(out.get('last_hash'))[:16]}... (GET /v1/audit/verify)")
            return True
        console.print(f"[bold red]audit chain BROKEN[/] at entry {out.get('broken_at')}: "
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

