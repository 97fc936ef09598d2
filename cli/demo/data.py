"""The demo's synthetic organisation: its patients, consents, campaigns and call lists."""

from __future__ import annotations

import csv
import hashlib
import io
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    pass

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
        "obtained_at": iso(obtained),
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
        body["obtained_at"] = iso(now - timedelta(days=rng.randint(400, 800)))
        body["expires_at"] = iso(now - timedelta(days=rng.randint(3, 60)))
    elif p.consent == "expires mid-week":
        body["expires_at"] = iso(now + timedelta(days=rng.randint(1, 4), hours=rng.randint(0, 23)))
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
            "not_before": iso(not_before) if not_before else "",
            "not_after": iso(not_after),
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


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def pick(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]
