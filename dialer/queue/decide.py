"""A queued call's facts, and the decisions of dispatch applied to it: refused or expired
(it leaves the queue, with a row in the refusal log and an audit entry), deferred (parked
until it may go), or put back in the queue after an attempt."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from config.reasons import Code, Reason, reason
from consent import rules as consent_rules
from core import refusals
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.queue.store import CampaignView, QCall, Writes
from dialer.rules.dispatch import CallFacts, DispatchDecision
from dialer.rules.zones import CandidateZone, applicable_states, candidate_zones

History = dict[str, tuple[list[consent_rules.ConsentFact], list[consent_rules.RevocationFact]]]


class CallLike(Protocol):
    @property
    def phone(self) -> str: ...
    @property
    def state(self) -> str | None: ...
    @property
    def postal_code(self) -> str | None: ...
    @property
    def not_before(self) -> datetime | None: ...
    @property
    def not_after(self) -> datetime | None: ...
    @property
    def candidate_zones(self) -> str | list[dict[str, str]] | None: ...


_ZONES: dict[str, tuple[CandidateZone, ...]] = {}


def zones_of(c: CallLike, rt: Runtime) -> list[CandidateZone]:
    """The zones recorded on the call at intake (decoded once per distinct JSON text: a
    queue's calls share a few), else worked out now."""
    raw = c.candidate_zones
    got: tuple[CandidateZone, ...] = ()
    if isinstance(raw, str):
        cached = _ZONES.get(raw)
        if cached is None:
            cached = tuple(CandidateZone(z["zone"], z["source"]) for z in json.loads(raw))
            if len(_ZONES) < 4096:
                _ZONES[raw] = cached
        got = cached
    elif raw:
        got = tuple(CandidateZone(z["zone"], z["source"]) for z in raw)
    if got:
        return list(got)
    return candidate_zones(c.phone, c.state, c.postal_code, rt.policy.default_region)


def facts(
    rt: Runtime,
    c: CallLike,
    campaign: CampaignView,
    hist: History,
    dnc: set[str],
    times: dict[str, list[datetime]],
) -> CallFacts:
    consents, revs = hist.get(c.phone, ([], []))
    return CallFacts(
        phone=c.phone,
        purpose=campaign.purpose,
        channel=campaign.channel,
        zones=zones_of(c, rt),
        states=applicable_states(c.phone, c.state, c.postal_code),
        campaign_window=campaign.window,
        not_before=c.not_before,
        not_after=c.not_after,
        consents=consents,
        revocations=revs,
        on_dnc=c.phone in dnc,
        attempt_times=times.get(c.phone, []),
    )


def refuse(uow: UnitOfWork, w: Writes, c: QCall, status: str, why: Sequence[Reason]) -> None:
    """The call leaves the queue (refused or expired at dispatch): its new state, a row in
    the refusal log and an audit entry."""
    now = uow.now
    values: dict[str, Any] = {
        "status": status, "next_eligible_at": None, "lease_id": None, "lease_expires_at": None,
        "last_reason": why[0].code.value, "updated_at": now,
    }
    if status == "refused":
        # Only then: a write that names the column rewrites the call's entry in
        # uq_calls_campaign_external_accepted (migration 0002).
        values["accepted"] = False
    w.call(c, values)
    refusals.write(
        uow.session,
        [
            refusals.refusal_row(
                at=now, stage="dispatch", status=status, reasons=why,
                policy_version=uow.policy_version, call_id=c.id, external_id=c.external_id,
                campaign_id=c.campaign_id, phone=c.phone,
            )
        ],
    )
    uow.audit(f"call.{status}", f"call:{c.id}", {"codes": [r.code.value for r in why]})
    uow.emit("call.refused", {
        "call_id": c.id, "campaign_id": c.campaign_id, "external_id": c.external_id,
        "stage": "dispatch", "status": status, "codes": [r.code.value for r in why],
    }, phone=c.phone)


def apply_not_go(uow: UnitOfWork, w: Writes, c: QCall, d: DispatchDecision) -> None:
    """A decision other than ``go``: refused, expired, or deferred (parked until due)."""
    if d.outcome == "refuse":
        refuse(uow, w, c, "refused", d.reasons)
    elif d.outcome == "expire":
        refuse(uow, w, c, "expired", d.reasons)
    else:
        parked = d.next_eligible_at is not None and d.next_eligible_at > uow.now
        w.call(c, {"next_eligible_at": d.next_eligible_at, "parked": parked,
                   "last_reason": d.reasons[0].code.value, "updated_at": uow.now})
        uow.audit("call.deferred", f"call:{c.id}", {
            "codes": [r.code.value for r in d.reasons],
            "next_eligible_at": d.next_eligible_at.isoformat() if d.next_eligible_at else None,
        })


def requeue(uow: UnitOfWork, w: Writes, c: QCall, campaign: CampaignView) -> None:
    """Back in the queue after an attempt, eligible at once (the next lease decides it
    afresh), unless the campaign's attempts are used up: then MAX_ATTEMPTS."""
    if c.attempts >= campaign.max_attempts:
        refuse(uow, w, c, "expired", [reason(Code.MAX_ATTEMPTS)])
        return
    now = uow.now
    w.call(c, {"status": "queued", "lease_id": None, "lease_expires_at": None,
               "next_eligible_at": now, "parked": False, "updated_at": now})
