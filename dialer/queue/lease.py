"""The lease: the eligible calls in queue order, each decided afresh at this instant
(dialer.rules.dispatch), dealt to the waiting requests up to each one's limit.

Why it holds under concurrency: see dialer.queue.store. In short, on SQLite the whole
pass holds the write lock; on PostgreSQL a call is locked SKIP LOCKED before it is decided
and its number's lock before its attempts are counted, so the caps hold across
pollers and instances, and the live-lease index forbids two live leases for one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from math import ceil
from typing import Any

from config.ids import new_id
from config.policy import CHANNELS
from consent.store import dnc_numbers, facts_for
from core import metrics
from core.keys import Identity
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.queue import store
from dialer.queue.decide import apply_not_go, facts
from dialer.queue.expiry import sweep_expired
from dialer.queue.store import CampaignView, QCall, QueueState, Writes
from dialer.rules.dispatch import decide
from texts import service as text_replies
from texts import store as text_store

DISCLOSURES_AGENT = ["provider_name", "callback_number", "agent_name"]
DISCLOSURES_IVR = ["provider_name", "callback_number"]
ROUNDS = 6  # candidate reads per pass, at most


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    dialer_id: str
    limit: int = 10
    lease_seconds: int = 120
    # Only these channels (None: every channel); replies to texts need ``sms``.
    channels: tuple[str, ...] | None = None

    def takes(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels


@dataclass(eq=False, slots=True)
class LeaseJob:
    """One lease request; ``tasks`` is its answer."""

    who: Identity
    req: LeaseRequest
    tasks: list[dict[str, Any]] = field(default_factory=list)


def lease_in(rt: Runtime, uow: UnitOfWork, jobs: list[LeaseJob]) -> None:
    """The lease requests ``jobs`` in one pass over the queue: expired leases back first,
    then the eligible calls in queue order, each that may go now dealt to the first request
    still short of its limit."""
    state = rt.state(QueueState)
    s, now = uow.session, uow.now
    for j in jobs:
        j.tasks = []
    sweep_expired(rt, uow.acting(jobs[0].who))
    # Replies to a patient's own text first (the opt-out confirmation, the help text):
    # ahead of every call, outside the caps and windows (API.md; 47 CFR 64.1200(a)(12)).
    # One probe when there is none (the usual case).
    if any(j.req.takes("sms") for j in jobs) and text_store.any_reply_due(s, now):
        for j in jobs:
            if j.req.takes("sms"):
                j.tasks.extend(text_replies.lease_replies(
                    uow.acting(j.who), j.req.dialer_id, j.req.limit, j.req.lease_seconds))
    jobs = [j for j in jobs if len(j.tasks) < j.req.limit]
    if not jobs:
        return
    # Numbers whose text waits for a human get nothing (probed once per pass).
    holding = text_store.any_held(s)
    store.unpark_due(s, state, now)
    takers = list(jobs)
    # Leases for some channels only: read only the calls of campaigns on those channels
    # (the union over the group's requests; each call still goes to a request taking it).
    wanted: list[str] | None = None
    if all(j.req.channels is not None for j in jobs):
        union = {c for j in jobs for c in (j.req.channels or ())}
        if not union.issuperset(CHANNELS):
            wanted = store.campaigns_on(s, sorted(union))
    seen: set[str] = set()
    for _round in range(ROUNDS):
        want = sum(j.req.limit - len(j.tasks) for j in takers)
        if want <= 0:
            break
        if uow.dialect == "postgresql" and wanted is None:  # read and locked in one statement
            calls = [c for c in store.next_calls(s, now, read_size(state, want) + len(seen))
                     if c.id not in seen]
            if not calls:
                break
            seen.update(c.id for c in calls)
            before = sum(len(j.tasks) for j in jobs)
            reached = _lease_batch(rt, uow, calls, takers, holding)
            observe(state, sum(len(j.tasks) for j in jobs) - before, reached)
            continue
        # SQLite, or a lease naming its channels (their campaigns' calls only).
        n = want * (3 if uow.dialect == "postgresql" else 2) + len(seen)
        ids = [i for i in store.candidate_ids(s, state, now, n, wanted) if i not in seen]
        if not ids:
            break
        seen.update(ids)
        calls = store.lock_candidates(s, ids, now)
        if calls:
            _lease_batch(rt, uow, calls, takers, holding)


def read_size(state: QueueState, want: int) -> int:
    """PostgreSQL: how many calls to read and lock for ``want`` tasks. Every call read is
    locked (a tuple write each) and decided, and holds other pollers off until the commit,
    so the read is sized by the share of reads that recent passes leased, with a margin
    (between 1.2 and 3 times ``want``): a short read costs one more round, not a wrong
    answer."""
    return ceil(want * min(3.0, max(1.2, 1.15 / max(state.go_share, 1e-3))))


def observe(state: QueueState, went: int, reached: int) -> None:
    """A pass leased ``went`` of the ``reached`` calls it read and got to."""
    if reached > 0:
        state.go_share = 0.8 * state.go_share + 0.2 * (went / reached)


def _lease_batch(rt: Runtime, uow: UnitOfWork, calls: list[QCall], takers: list[LeaseJob],
                 holding: bool = True) -> int:
    """Decide ``calls`` in order; each that may go is leased to the first of ``takers``
    that takes its channel, which leaves the list once it has its limit. Stops when none is
    left. A call no request takes (another channel), or to a number whose text waits for
    review (API.md: held, not sent), is left queued as it is. Returns how many of ``calls``
    it got to (those to numbers busy elsewhere included, those after the stop not)."""
    s, now = uow.session, uow.now
    locked = store.lock_numbers_of(s, calls)
    read = len(calls)
    calls = [c for c in calls if c.phone in locked]
    reached = read - len(calls)  # the calls to numbers busy elsewhere: got to, not leased
    phone_list = [c.phone for c in calls]
    hist = facts_for(s, phone_list)
    dnc = dnc_numbers(s, phone_list)
    times = store.attempt_times(s, phone_list, now)
    campaigns = store.campaigns(s, rt.state(QueueState), (c.campaign_id for c in calls))
    held = text_store.held_numbers(s, phone_list) if holding else set()
    attempt_rows: list[dict[str, Any]] = []
    w = Writes()
    for c in calls:
        takers[:] = [j for j in takers if len(j.tasks) < j.req.limit]
        if not takers:
            break
        reached += 1
        campaign = campaigns[c.campaign_id]
        taker = next((j for j in takers if j.req.takes(campaign.channel)), None)
        if taker is None or c.phone in held:
            continue
        job = taker
        who, req = job.who, job.req
        acting = uow.acting(who)
        d = decide(facts(rt, c, campaign, hist, dnc, times), rt.policy, now)
        if d.outcome != "go":
            apply_not_go(acting, w, c, d)
            continue
        attempt_id = new_id()
        expires = now + timedelta(seconds=req.lease_seconds)
        if d.window_closes_at is not None and d.window_closes_at < expires:
            expires = d.window_closes_at  # a lease never outlives the calling window
        times[c.phone].append(now)  # counts at once for the rest of this batch
        attempt_no = c.attempts + 1
        terms = on_call_terms(rt, campaign, d.recording)
        w.call(c, {"status": "leased", "lease_id": attempt_id, "lease_expires_at": expires,
                   "next_eligible_at": None, "parked": False, "attempts": attempt_no,
                   "last_reason": None, "updated_at": now})
        attempt_rows.append(
            {
                "id": attempt_id, "call_id": c.id, "campaign_id": c.campaign_id,
                "phone": c.phone, "kind": "lease", "state": "live", "counted": True,
                "at": now, "expires_at": expires, "dialer_id": req.dialer_id,
                "key_id": who.key_id, "flags": [],
                # What the task says on recording and identity (checked at the outcome).
                "recording_allowed": d.recording,
                "identity_required": terms["identity_identifiers"],
            }
        )
        acting.audit("call.leased", f"call:{c.id}", {
            "lease": attempt_id, "dialer_id": req.dialer_id,
            "expires_at": expires.isoformat(), "attempt": attempt_no,
        })
        job.tasks.append({**task(rt, c, campaign, attempt_id, expires, attempt_no), **terms})
    # The calls' new state first (the live-lease index checks the attempts against it).
    w.send(s)
    if attempt_rows:
        store.insert_attempts(s, attempt_rows)
        metrics.count_on_commit(s, metrics.LEASED, n=len(attempt_rows))
    return reached


def on_call_terms(rt: Runtime, campaign: CampaignView, recording: bool) -> dict[str, Any]:
    """What the agent is told about the call itself (API.md "Recording and identity
    verification"): ``recording`` ``allowed`` only under a written consent covering the call
    that also consents to recording (the lease's consent decision); ``identity_identifiers``,
    the distinct identifiers to verify before disclosing health information (the purpose's,
    45 CFR 164.514(h))."""
    spec = rt.policy.purposes.get(campaign.purpose)
    return {
        "recording": "allowed" if recording else "forbidden",
        "identity_identifiers": spec.identity_identifiers if spec is not None else 0,
    }


def task(rt: Runtime, c: QCall, campaign: CampaignView, lease_id: str, expires: Any,
         attempt_no: int) -> dict[str, Any]:
    """What a dialer is told about a leased call: the number, the purpose and what to
    disclose; no patient reference, no clinical datum (PRODUCT.md 8)."""
    spec = rt.policy.purposes.get(campaign.purpose)
    prerecorded = campaign.channel == "prerecorded_voice"
    return {
        "call_id": c.id,
        "lease_id": lease_id,
        "lease_expires_at": expires,
        "phone": c.phone,
        "purpose": campaign.purpose,
        "channel": campaign.channel,
        "campaign_id": campaign.id,
        "provider_name": campaign.provider_name,
        "callback_number": campaign.callback_number,
        "script_id": campaign.script_id,
        "max_duration_seconds": spec.max_duration_seconds
        if (prerecorded and spec is not None) else None,
        "sms_max_chars": spec.sms_max_chars
        if (campaign.channel == "sms" and spec is not None) else None,
        "kind": "call",
        # An SMS call's text, rendered at intake (dialer.intake.sms): nothing else about
        # the patient.
        "text": c.sms_text if campaign.channel == "sms" else None,
        "template_id": campaign.template_id,
        # A text states the provider and callback number itself (its template must).
        "disclosures": DISCLOSURES_IVR if prerecorded or campaign.channel == "sms"
        else DISCLOSURES_AGENT,
        "attempt": attempt_no,
        "max_attempts": campaign.max_attempts,
    }
