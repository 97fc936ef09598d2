"""Held leases: the dial check the moment before dialling, the release of a call returned
undialled, and outcomes with the agent's identification (PRODUCT.md 7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from config.errors import Conflict, DomainError, Invalid, NotFound
from config.reasons import Code, Flag, reason
from consent import phones
from consent.service import revoke_in_session
from consent.store import dnc_numbers, facts_for
from core import metrics
from core.keys import Identity
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.queue import store
from dialer.queue.decide import facts, requeue
from dialer.queue.store import CampaignView, Held, QCall, QueueState, Writes
from dialer.rules.dispatch import blocks_now, permanent_reasons
from dialer.rules.oncall import call_flags

COMPLETE = {"connected", "voicemail", "opted_out", "wrong_number"}
RETRY = {"no_answer", "busy", "failed"}
RESULTS = COMPLETE | RETRY
REVOKING = ("opted_out", "wrong_number")


@dataclass(frozen=True, slots=True)
class Outcome:
    lease_id: str
    result: str
    agent_id: str | None
    agent_name: str | None
    disclosed_callback_number: str | None
    started_at: datetime | None
    ended_at: datetime | None
    # On the call itself (API.md "Recording and identity verification").
    recorded: bool = False
    phi_disclosed: bool = False
    identity_verified_with: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class OutcomeJob:
    """One request's outcomes; ``results`` is its answer, one per item."""

    who: Identity
    items: Sequence[tuple[str, Outcome]]
    results: list[tuple[dict[str, Any], DomainError | None]] = field(default_factory=list)


def check_held(
    s: Any, held: Held | None, lease_id: str | None, now: datetime
) -> tuple[QCall, str, list[str]]:
    """The call, its live attempt's id and flags, if the lease (``lease_id``, or whichever
    when None) is held now; else NOT_FOUND or LEASE_NOT_HELD."""
    if held is None:
        raise NotFound("NOT_FOUND", "no such call")
    c = held.call
    if (
        c.status != "leased"
        or c.lease_id is None
        or (lease_id is not None and c.lease_id != lease_id)
        or c.lease_expires_at is None
        or c.lease_expires_at <= now
    ):
        raise Conflict(
            "LEASE_NOT_HELD", "the lease is unknown, expired, released or withdrawn",
            {"call_status": c.status},
        )
    if held.attempt_id != c.lease_id:
        held.attempt_id, held.flags = c.lease_id, store.attempt_flags(s, c.lease_id)
    return c, c.lease_id, held.flags


def _held(uow: UnitOfWork, call_id: str, lease_id: str | None) -> QCall:
    s = uow.session
    return check_held(s, store.held_rows(s, [call_id]).get(call_id), lease_id, uow.now)[0]


def dial_check(rt: Runtime, who: Identity, call_id: str, lease_id: str | None) -> None:
    """The moment before dialling: consent, do-not-call, purpose and window again, now.
    Raises Conflict with the blocking reason."""
    with rt.read(who) as uow:
        s, now = uow.session, uow.now
        rows = store.calls_by_id(s, [call_id])
        if not rows:
            raise NotFound("NOT_FOUND", "no such call")
        if rows[0].status == "withdrawn" and rows[0].last_reason:
            why = reason(Code(rows[0].last_reason))
            raise Conflict(why.code.value, why.message, {"rule": why.rule, "go": False})
        c = _held(uow, call_id, lease_id)
        campaign = store.campaigns(s, rt.state(QueueState), [c.campaign_id])[c.campaign_id]
        f = facts(rt, c, campaign, facts_for(s, [c.phone]), dnc_numbers(s, [c.phone]), {})
        why_list = permanent_reasons(f, rt.policy, now)
        if not why_list:
            # The attempt was counted at lease time (facts carry no attempts): window only.
            why_list, _ = blocks_now(f, rt.policy, now, lease_margin=False)
        if why_list:
            raise Conflict(
                why_list[0].code.value, why_list[0].message,
                {"rule": why_list[0].rule, "go": False,
                 "reasons": [r.as_dict() for r in why_list]},
            )


def release(rt: Runtime, who: Identity, call_id: str, lease_id: str) -> None:
    """Returned undialled: the attempt does not count."""
    with rt.write(who) as uow:
        now = uow.now
        c = _held(uow, call_id, lease_id)
        attempt_id = c.lease_id
        w = Writes()
        w.attempt(attempt_id or "", {"state": "released", "counted": False, "recorded_at": now})
        w.call(c, {"status": "queued", "lease_id": None, "lease_expires_at": None,
                   "next_eligible_at": now, "parked": False,
                   "attempts": max(0, c.attempts - 1), "updated_at": now})
        w.send(uow.session)
        uow.audit("lease.released", f"call:{c.id}", {"lease": attempt_id})


@lru_cache(maxsize=1024)
def _callback_e164(raw: str, default_region: str, allowed: tuple[str, ...]) -> str | None:
    """A disclosed callback number as E.164 (None if invalid): dialers disclose a handful of
    numbers, each parsed and validated once."""
    return phones.check(raw, default_region, allowed, "disclosed_callback_number")[0]


def outcomes_in(
    rt: Runtime, uow: UnitOfWork, items: Sequence[tuple[Identity, str, Outcome]]
) -> list[tuple[dict[str, Any], DomainError | None]]:
    """The outcomes in order, in the open transaction: each item's answer or error. Errors
    other than identification problems are raised before anything changed for that item."""
    s = uow.session
    results: list[tuple[dict[str, Any], DomainError | None]] = []
    store.lock_numbers_of_calls(s, [call_id for _, call_id, o in items if o.result in REVOKING])
    rows = store.held_rows(s, [call_id for _, call_id, _ in items])
    campaigns = store.campaigns(s, rt.state(QueueState),
                                (h.call.campaign_id for h in rows.values()))
    w = Writes()
    for who, call_id, o in items:
        problem: DomainError | None
        try:
            out, problem = one_outcome(rt, uow.acting(who), w, rows.get(call_id), campaigns, o)
            if o.result in REVOKING and problem is None:
                # The revocation changed other calls (maybe later items'): read the later
                # items' calls afresh, as the single endpoint would.
                rows = store.held_rows(s, [i for _, i, _ in items])
        except DomainError as e:  # raised before anything was changed for this item
            out, problem = {}, e
        results.append((out, problem))
    w.send(s)
    return results


# A lease that may have been dialled although it is no longer held (API.md extension, docs/
# integration.md "Late outcomes"): its attempt's state, and the flag its outcome gets.
LATE_STATES = {"expired": Flag.LATE_OUTCOME, "withdrawn": Flag.AFTER_REVOCATION}


@dataclass(slots=True)
class _Late:
    """An outcome for a lease no longer held: whether the call is still the lease's own
    (leased under it, past its expiry) or has moved on (requeued, re-leased, withdrawn,
    refused, completed): then the call's state is not the outcome's to change."""

    flag: Flag
    moved_on: bool


def _lease_of(
    s: Any, w: Writes, held: Held | None, lease_id: str, now: datetime
) -> tuple[QCall, str, list[str], _Late | None]:
    """The call, its lease's attempt id and flags, and whether the outcome is late. A lease
    held now is on time; a lease past its expiry, or ended by the expiry job or by a
    withdrawal (revocation, do-not-call), may have been dialled: its outcome is late and
    accepted. A lease released undialled, already reported, or never made is 409
    LEASE_NOT_HELD."""
    if held is None:
        raise NotFound("NOT_FOUND", "no such call")
    c = held.call
    if c.status == "leased" and c.lease_id == lease_id:
        if held.attempt_id != c.lease_id:
            held.attempt_id, held.flags = c.lease_id, store.attempt_flags(s, c.lease_id)
        on_time = c.lease_expires_at is not None and c.lease_expires_at > now
        return c, lease_id, held.flags, None if on_time else _Late(Flag.LATE_OUTCOME, False)
    w.send(s)  # an earlier item of this transaction may have reported this lease already
    found = store.lease_attempt(s, lease_id, c.id)
    if found is None or found[0] not in LATE_STATES:
        raise Conflict(
            "LEASE_NOT_HELD", "the lease is unknown, released or already reported",
            {"call_status": c.status},
        )
    state, flags = found
    return c, lease_id, flags, _Late(LATE_STATES[state], True)


def one_outcome(
    rt: Runtime, uow: UnitOfWork, w: Writes, held: Held | None,
    campaigns: dict[str, CampaignView], o: Outcome,
) -> tuple[dict[str, Any], Invalid | None]:
    """One outcome, its writes queued in ``w``. Identification problems are recorded (flag,
    audit entry) and returned, to be raised after the commit; other errors raise before any
    change."""
    s = uow.session
    if o.started_at and o.ended_at and o.ended_at < o.started_at:
        raise Invalid("VALIDATION_ERROR", "ended_at is before started_at",
                      [{"field": "body.ended_at", "message": "before started_at"}])
    c, attempt_id, flags, late = _lease_of(s, w, held, o.lease_id, uow.now)
    if o.result not in RESULTS:
        raise Invalid("VALIDATION_ERROR", "result is not a known outcome",
                      [{"field": "body.result", "message": "unknown"}])
    campaign = campaigns.get(c.campaign_id) or store.campaigns(
        s, rt.state(QueueState), [c.campaign_id])[c.campaign_id]
    prerecorded = campaign.channel == "prerecorded_voice"
    missing = [
        f for f, v in (("agent_id", o.agent_id), ("agent_name", o.agent_name),
                       ("disclosed_callback_number", o.disclosed_callback_number))
        if v is None or not str(v).strip()
    ]
    if o.agent_id is not None and o.agent_id.strip().lower() == "ivr" and not prerecorded:
        missing.append("agent_id")
    flags = list(flags)
    problem: tuple[str, str, list[str]] | None = None
    if missing:
        problem = ("AGENT_ID_MISSING",
                   "agent identification is required: " + ", ".join(missing), missing)
    else:
        assert o.disclosed_callback_number is not None
        disclosed = _callback_e164(o.disclosed_callback_number, rt.policy.default_region,
                                   tuple(rt.policy.allowed_regions))
        if disclosed != campaign.callback_number:
            problem = ("CALLBACK_MISMATCH",
                       "disclosed_callback_number is not the campaign's callback number",
                       ["disclosed_callback_number"])
    if problem is not None:
        code, message, fields = problem
        if code not in flags:
            flags.append(code)
        w.attempt(attempt_id, {"flags": flags})
        assert held is not None
        if late is None or not late.moved_on:
            held.flags = flags
        uow.audit("outcome.rejected", f"call:{c.id}",
                  {"lease": attempt_id, "flag": code, "fields": fields})
        uow.emit("call.flagged", {"call_id": c.id, "campaign_id": c.campaign_id,
                                  "flags": [code], "outcome": "rejected"}, phone=c.phone)
        # lease_held: the dialer may send the outcome again, complete (a late one too).
        return {}, Invalid(code, message, {"fields": fields, "lease_held": True})
    if late is not None and late.flag not in flags:
        flags.append(late.flag)
    if late is not None and late.moved_on:
        _apply_late_outcome(rt, uow, w, c, attempt_id, campaign, o, flags)
    else:
        _apply_outcome(rt, uow, w, c, attempt_id, campaign, o, flags)
    return {"call_id": c.id, "status": c.status, "attempts": c.attempts, "flags": flags}, None


def _on_call_flags(
    rt: Runtime, uow: UnitOfWork, attempt_id: str, campaign: CampaignView, o: Outcome,
) -> list[str]:
    """RECORDING_WITHOUT_CONSENT / IDENTITY_NOT_VERIFIED against what the task said (read
    only when the outcome reports a recording or a disclosure; a lease of before migration
    0007: forbidden, and the purpose's identity_identifiers now)."""
    if not (o.recorded or o.phi_disclosed):
        return []
    allowed, required = store.attempt_terms(uow.session, attempt_id)
    if required is None:
        spec = rt.policy.purposes.get(campaign.purpose)
        required = spec.identity_identifiers if spec is not None else 0
    return call_flags(
        recording_allowed=bool(allowed), identity_required=required, recorded=o.recorded,
        phi_disclosed=o.phi_disclosed, identity_verified_with=o.identity_verified_with,
    )


def _apply_outcome(
    rt: Runtime, uow: UnitOfWork, w: Writes, c: QCall, attempt_id: str,
    campaign: CampaignView, o: Outcome, flags: list[str],
) -> None:
    now = uow.now
    _report_attempt(rt, uow, w, c, attempt_id, campaign, o, flags)
    if o.result in COMPLETE:
        w.call(c, {"status": "completed", "lease_id": None, "lease_expires_at": None,
                   "next_eligible_at": None, "updated_at": now})
        _completed_event(uow, c, campaign, o)
    else:
        requeue(uow, w, c, campaign)
    if o.result in REVOKING:
        w.send(uow.session)  # the revocation reads the calls and attempts
        if o.result == "wrong_number":
            source = "wrong_number"
        else:
            source = "ivr_keypress" if campaign.channel == "prerecorded_voice" else "agent"
        revoke_in_session(uow, c.phone, source, now, call_id=c.id)


def _duration_flags(rt: Runtime, campaign: CampaignView, o: Outcome) -> list[str]:
    """A prerecorded call's length against the purpose's limit: over it, or unknown when a
    time is missing (then it cannot be checked, issue 16)."""
    spec = rt.policy.purposes.get(campaign.purpose)
    if campaign.channel != "prerecorded_voice" or spec is None:
        return []
    if o.started_at is None or o.ended_at is None:
        return [Flag.DURATION_UNKNOWN]
    if (o.ended_at - o.started_at).total_seconds() > spec.max_duration_seconds:
        return [Flag.OVER_DURATION]
    return []


def _report_attempt(
    rt: Runtime, uow: UnitOfWork, w: Writes, c: QCall, attempt_id: str,
    campaign: CampaignView, o: Outcome, flags: list[str],
) -> None:
    """The attempt's result, with the agent's identification and its flags (on the call
    itself too: recording and identity, _on_call_flags)."""
    flags.extend(f for f in _duration_flags(rt, campaign, o) if f not in flags)
    flags.extend(f for f in _on_call_flags(rt, uow, attempt_id, campaign, o) if f not in flags)
    w.attempt(attempt_id, {
        "state": "reported", "agent_id": o.agent_id, "agent_name": o.agent_name,
        "disclosed_callback_number": campaign.callback_number, "started_at": o.started_at,
        "ended_at": o.ended_at, "result": o.result, "flags": flags, "recorded_at": uow.now,
        "recorded": o.recorded, "phi_disclosed": o.phi_disclosed,
        "identity_verified_with": list(o.identity_verified_with),
    })
    metrics.count_on_commit(uow.session, metrics.OUTCOMES, (o.result,))
    uow.audit("call.outcome", f"call:{c.id}", {
        "lease": attempt_id, "result": o.result, "agent_id": o.agent_id, "flags": flags,
        "recorded": o.recorded, "phi_disclosed": o.phi_disclosed,
        "identity_verified_with": sorted(set(o.identity_verified_with)),
    })
    if flags:
        uow.emit("call.flagged", {"call_id": c.id, "campaign_id": c.campaign_id,
                                  "flags": list(flags), "outcome": o.result}, phone=c.phone)


def _completed_event(uow: UnitOfWork, c: QCall, campaign: CampaignView, o: Outcome) -> None:
    uow.emit("call.completed", {
        "call_id": c.id, "campaign_id": c.campaign_id, "external_id": c.external_id,
        "purpose": campaign.purpose, "channel": campaign.channel, "result": o.result,
        "attempts": c.attempts, "agent_id": o.agent_id,
        "ended_at": o.ended_at.isoformat() if o.ended_at else None,
    }, phone=c.phone)


def _apply_late_outcome(
    rt: Runtime, uow: UnitOfWork, w: Writes, c: QCall, attempt_id: str,
    campaign: CampaignView, o: Outcome, flags: list[str],
) -> None:
    """The outcome of a lease that ended before it (expired and swept, or withdrawn): the
    attempt gets its result and identification, flagged; it was counted when leased and is
    not counted again. The call has moved on and keeps its state -- a withdrawn, refused,
    expired or completed call is never put back in the queue, a re-leased one stays its new
    lease's -- except that a call waiting in the queue is completed by a late ``connected``
    or ``voicemail`` (it must not be dialled again). An opt-out or a wrong number revokes as
    on time, withdrawing every pending call of the number, this one included."""
    _report_attempt(rt, uow, w, c, attempt_id, campaign, o, flags)
    now = uow.now
    completes = o.result in COMPLETE and c.status == "queued"
    if completes:
        w.call(c, {"status": "completed", "lease_id": None, "lease_expires_at": None,
                   "next_eligible_at": None, "parked": False, "updated_at": now})
        _completed_event(uow, c, campaign, o)
    if o.result in REVOKING:
        w.send(uow.session)
        source = ("wrong_number" if o.result == "wrong_number" else
                  "ivr_keypress" if campaign.channel == "prerecorded_voice" else "agent")
        revoke_in_session(uow, c.phone, source, now, call_id=c.id,
                          withdraw_call=not completes)
        if not completes and c.status in ("queued", "leased"):
            c.apply({"status": "withdrawn"})
