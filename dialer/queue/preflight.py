"""Preflight for manual dials and callbacks (API.md ``POST /v1/check``): the same decision
as a lease, for a number and purpose rather than a queued call; with ``reserve``, the
attempt is counted against the caps at once and logged in the call log."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from config.errors import Invalid, NotFound
from config.ids import new_id
from config.reasons import Code
from consent import phones
from consent.store import dnc_numbers, facts_for
from core.keys import Identity
from core.models import Campaign
from core.numbers import lock_numbers
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.campaigns import campaign_window
from dialer.queue import store
from dialer.rules.dispatch import CallFacts, DispatchDecision, decide
from dialer.rules.zones import applicable_states, candidate_zones

CHECK_RANGE = timedelta(days=366)  # how far from now a preflight may ask about


@dataclass(frozen=True, slots=True)
class CheckRequest:
    phone: str
    purpose: str
    channel: str
    state: str | None = None
    postal_code: str | None = None
    at: datetime | None = None
    reserve: bool = False
    agent_id: str | None = None
    agent_name: str | None = None
    campaign_id: str | None = None


def _validate(req: CheckRequest, now: datetime) -> None:
    at = req.at or now
    if abs(at - now) > CHECK_RANGE:
        # A preflight is about a real call; the window arithmetic of year 1 or 9999 would
        # overflow (a 500) rather than answer.
        raise Invalid("VALIDATION_ERROR", "at must be within a year of now",
                      [{"field": "body.at", "message": "out of range"}])
    if req.reserve:
        missing = [f for f, v in (("agent_id", req.agent_id), ("agent_name", req.agent_name),
                                  ("campaign_id", req.campaign_id)) if not v]
        if missing:
            raise Invalid("AGENT_ID_MISSING" if "campaign_id" not in missing or len(missing) > 1
                          else "VALIDATION_ERROR",
                          "a reservation needs " + ", ".join(missing),
                          [{"field": f"body.{f}", "message": "required"} for f in missing])
        if req.at is not None and abs((req.at - now).total_seconds()) > 60:
            raise Invalid("VALIDATION_ERROR", "a reservation is for now: leave at empty",
                          [{"field": "body.at", "message": "must be empty with reserve"}])


def check(rt: Runtime, who: Identity, req: CheckRequest, via: str = "POST /v1/check"
          ) -> dict[str, Any]:
    """The decision for a number now (or at ``req.at``). Telling a caller whether a number
    may be called reads its consents, revocations and do-not-call entries: the check is
    audited (``patient_data.read``, the number by pseudonym); one of a number that does not
    parse reads nothing and is not."""
    _validate(req, rt.clock.now())
    e164, bad = phones.check(req.phone, rt.policy.default_region, tuple(rt.policy.allowed_regions))
    if e164 is None:
        assert bad is not None
        return {"allowed": False, "reasons": [bad.as_dict()], "next_eligible_at": None,
                "candidate_zones": [], "reservation_id": None}
    state = req.state.upper() if req.state else None
    zones = candidate_zones(e164, state, req.postal_code, rt.policy.default_region)
    unit: AbstractContextManager[UnitOfWork] = rt.write(who) if req.reserve else rt.read(who)
    with unit as uow:
        s = uow.session
        at = uow.now if req.reserve else (req.at or uow.now)
        campaign: Campaign | None = None
        if req.campaign_id:
            campaign = store.campaign(s, req.campaign_id)
            if campaign is None:
                raise NotFound("NOT_FOUND", "no such campaign")
            if req.reserve and campaign.purpose != req.purpose:
                # The attempt is logged under this campaign: its purpose is what was checked.
                # (The channel may differ: an agent may call back on a prerecorded campaign.)
                raise Invalid(
                    "VALIDATION_ERROR",
                    "purpose must be the reservation campaign's purpose",
                    [{"field": "body.purpose", "message": "differs from the campaign's"}],
                )
        if req.reserve:
            lock_numbers(s, [e164], skip_locked=False)  # PostgreSQL: before counting
        consents, revs = facts_for(s, [e164]).get(e164, ([], []))
        facts = CallFacts(
            phone=e164, purpose=req.purpose, channel=req.channel, zones=zones,
            states=applicable_states(e164, state, req.postal_code),
            campaign_window=campaign_window(campaign) if campaign else None,
            not_before=None, not_after=None, consents=consents, revocations=revs,
            on_dnc=bool(dnc_numbers(s, [e164])),
            attempt_times=store.attempt_times(s, [e164], at).get(e164, []),
        )
        d = decide(facts, rt.policy, at)
        allowed = d.outcome == "go"
        out: dict[str, Any] = {
            "allowed": allowed,
            "reasons": [r.as_dict() for r in d.reasons],
            "next_eligible_at": at if allowed else _next_eligible(d),
            "candidate_zones": [z.as_dict() for z in zones],
            "reservation_id": None,
            # On the call itself, as a task would say (API.md "Recording and identity
            # verification"): a manual call is a call too.
            "recording": "allowed" if d.recording else "forbidden",
            "identity_identifiers": _identifiers(rt, req.purpose),
        }
        if req.reserve and allowed:
            assert campaign is not None
            out["reservation_id"] = _reserve(uow, who, req, campaign, e164)
        if req.reserve:
            _audit_check(uow, req, e164, allowed, via)
    if not req.reserve:
        with rt.write(who) as uow:  # the decision was read; the read is audited here
            _audit_check(uow, req, e164, allowed, via)
    return out


def _audit_check(uow: UnitOfWork, req: CheckRequest, e164: str, allowed: bool, via: str
                 ) -> None:
    uow.audit("patient_data.read", "check", {
        "via": via, "purpose": req.purpose, "channel": req.channel, "allowed": allowed,
        "reserve": req.reserve,
    }, phones=[e164])


def _identifiers(rt: Runtime, purpose: str) -> int:
    spec = rt.policy.purposes.get(purpose)
    return spec.identity_identifiers if spec is not None else 0


def _next_eligible(d: DispatchDecision) -> datetime | None:
    """When the number may be called: unknown (None) while it waits for a Reassigned Numbers
    Database answer (a queued call is only decided again after STALE_RECHECK)."""
    if any(r.code is Code.REASSIGNED_CHECK_STALE for r in d.reasons):
        return None
    return d.next_eligible_at


def _reserve(uow: UnitOfWork, who: Identity, req: CheckRequest, campaign: Campaign,
             e164: str) -> str:
    rid = new_id()
    store.add_manual_attempt(uow.session, {
        "id": rid, "call_id": None, "campaign_id": campaign.id, "phone": e164,
        "kind": "manual", "state": "manual", "counted": True, "at": uow.now,
        "expires_at": None, "dialer_id": None, "key_id": who.key_id,
        "agent_id": req.agent_id, "agent_name": req.agent_name,
        "disclosed_callback_number": campaign.callback_number, "started_at": None,
        "ended_at": None, "result": None, "flags": [], "recorded_at": uow.now,
    })
    uow.audit("attempt.reserved", f"attempt:{rid}", {
        "campaign": campaign.id, "agent_id": req.agent_id, "purpose": req.purpose,
        "channel": req.channel,
    })
    return rid
