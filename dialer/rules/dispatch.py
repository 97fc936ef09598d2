"""The dispatch decision for one call at one instant: pure, everything as parameters.

Consent, do-not-call, purpose, deadline, quiet day, calling window and caps, checked in
that order of finality: a call whose consent is gone or whose purpose was withdrawn leaves
the queue (refused); one that is only blocked for now (window, quiet day, caps, not_before)
is deferred to the earliest instant it could become eligible; one that cannot become
eligible before ``not_after`` expires with DEADLINE_PASSED and the last blocking reason.

On the call itself (API.md "Recording and identity verification", "Reassigned numbers"): a
``go`` says whether the call may be recorded (a covering consent with ``recording``), from
the same consent decision. A number found reassigned since its consent is a consent failure
(NUMBER_REASSIGNED, permanent). With ``[reassigned] require_answer_within_days``, a number
whose covering consent has no recent enough ``no`` answer is blocked for now
(REASSIGNED_CHECK_STALE): waiting does not cure it, an answer does, so the call is parked
for STALE_RECHECK at a time (and an import of answers returns it to the queue at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from config.policy import Policy, Window
from config.reasons import Code, Reason, reason
from consent import rules as consent_rules
from dialer.rules.caps import check_caps
from dialer.rules.windows import check_window
from dialer.rules.zones import CandidateZone
from purpose_rules import rules as purpose_rules

# A lease shorter than this is not worth handing out: defer to the next window instead.
MIN_LEASE = timedelta(seconds=15)
# A call blocked by REASSIGNED_CHECK_STALE is decided again after this long (an import of
# answers for its number returns it to the queue sooner: consent.rnd_service).
STALE_RECHECK = timedelta(hours=1)
_MAX_SETTLE = 8


@dataclass(frozen=True, slots=True)
class CallFacts:
    phone: str
    purpose: str
    channel: str
    zones: Sequence[CandidateZone]
    states: Sequence[str]
    campaign_window: Window | None
    not_before: datetime | None
    not_after: datetime | None
    consents: Sequence[consent_rules.ConsentFact]
    revocations: Sequence[consent_rules.RevocationFact]
    on_dnc: bool
    attempt_times: Sequence[datetime]


@dataclass(frozen=True, slots=True)
class DispatchDecision:
    outcome: str  # go | defer | refuse | expire
    reasons: list[Reason] = field(default_factory=list)
    next_eligible_at: datetime | None = None
    window_closes_at: datetime | None = None
    # A "go": whether a covering consent allows recording the call.
    recording: bool = False


def permanent_reasons(f: CallFacts, policy: Policy, now: datetime) -> list[Reason]:
    """Reasons that no amount of waiting cures: do-not-call, purpose, consent."""
    return _permanent(f, policy, now)[0]


def _permanent(
    f: CallFacts, policy: Policy, now: datetime
) -> tuple[list[Reason], consent_rules.ConsentDecision]:
    return consent_terms(
        f.on_dnc, purpose_rules.decide(policy, f.purpose, f.channel), f.consents,
        f.revocations, f.channel, f.purpose, now,
    )


_DO_NOT_CALL = reason(Code.DO_NOT_CALL)
_STALE = reason(Code.REASSIGNED_CHECK_STALE)


def reassigned_stale(
    consent: consent_rules.ConsentDecision, policy: Policy, now: datetime
) -> bool:
    """Whether the policy requires a recent Reassigned Numbers Database ``no`` for the
    covering consent and there is none (queried within require_answer_within_days)."""
    days = policy.reassigned.require_answer_within_days
    if days is None or not consent.allowed:
        return False
    checked = consent.reassigned_checked_at
    return checked is None or checked < now - timedelta(days=days)


def stale_recheck_at(
    start: datetime, now: datetime, not_after: datetime | None
) -> datetime | None:
    """When to decide again a call blocked by REASSIGNED_CHECK_STALE whose other blocks clear
    at ``start``: STALE_RECHECK from now at the earliest, before ``not_after`` (a queued call
    is never deferred to its deadline); None when that leaves no time."""
    t = max(start, now + STALE_RECHECK)
    if not_after is not None:
        t = min(t, not_after - MIN_LEASE)
    return t if t > now else None


def refusal_reasons(
    on_dnc: bool,
    purpose: purpose_rules.PurposeDecision,
    consents: Sequence[consent_rules.ConsentFact],
    revocations: Sequence[consent_rules.RevocationFact],
    channel: str,
    purpose_code: str,
    now: datetime,
) -> list[Reason]:
    """The permanent reasons, in their order (do-not-call always wins, then the purpose,
    then the consent): the one rule that intake (with the purpose decided once per list)
    and dispatch (per call, through :func:`permanent_reasons`) both apply."""
    return consent_terms(on_dnc, purpose, consents, revocations, channel, purpose_code, now)[0]


def consent_terms(
    on_dnc: bool,
    purpose: purpose_rules.PurposeDecision,
    consents: Sequence[consent_rules.ConsentFact],
    revocations: Sequence[consent_rules.RevocationFact],
    channel: str,
    purpose_code: str,
    now: datetime,
) -> tuple[list[Reason], consent_rules.ConsentDecision]:
    """:func:`refusal_reasons` with the consent decision they came from (whether the call
    may be recorded, when the number was last found not reassigned)."""
    out: list[Reason] = []
    if on_dnc:
        out.append(_DO_NOT_CALL)
    if not purpose.allowed:
        out.extend(purpose.reasons)
    c = consent_rules.decide(consents, revocations, channel, purpose_code, now)
    if not c.allowed:
        out.extend(c.reasons)
    return out, c


def _purpose_window(policy: Policy, purpose: str) -> Window | None:
    spec = policy.purposes.get(purpose)
    return spec.calling_window if spec is not None else None


def earliest_clear(f: CallFacts, policy: Policy, start: datetime) -> datetime | None:
    """The earliest instant >= ``start`` at which not_before, caps and the window all clear
    (and the window stays open at least MIN_LEASE); None if never within the horizon."""
    pw = _purpose_window(policy, f.purpose)
    t = start
    for _ in range(_MAX_SETTLE):
        moved = False
        if f.not_before is not None and f.not_before > t:
            t, moved = f.not_before, True
        cd = check_caps(f.attempt_times, t, policy.caps, f.zones)
        if not cd.allowed:
            if cd.next_free_at is None:
                return None
            if cd.next_free_at > t:
                t, moved = cd.next_free_at, True
        wd = check_window(t, f.zones, f.states, policy, f.campaign_window, pw)
        if not wd.allowed:
            if wd.next_open is None:
                return None
            if wd.next_open > t:
                t, moved = wd.next_open, True
        elif wd.closes_at is not None and wd.closes_at - t < MIN_LEASE:
            t, moved = wd.closes_at, True
        if not moved:
            return t
    return t


def blocks_now(
    f: CallFacts, policy: Policy, now: datetime, *, lease_margin: bool = True,
    consent: consent_rules.ConsentDecision | None = None,
) -> tuple[list[Reason], datetime | None]:
    """Temporary blocks at ``now`` and, when there are none, when the window closes.
    ``lease_margin``: a window closing within MIN_LEASE counts as closed (for a new lease;
    not for a dial check on a lease already held). ``consent``: the call's consent decision
    at ``now`` when already made (else made here when the policy needs it). A stale
    reassigned-number check comes first (an import of answers looks for it, see decide)."""
    pw = _purpose_window(policy, f.purpose)
    reasons: list[Reason] = []
    if policy.reassigned.require_answer_within_days is not None:
        if consent is None:
            consent = _permanent(f, policy, now)[1]
        if reassigned_stale(consent, policy, now):
            reasons.append(_STALE)
    if f.not_before is not None and f.not_before > now:
        reasons.append(
            reason(Code.OUTSIDE_CALLING_WINDOW, "not_before has not been reached yet",
                   details={"field": "not_before"})
        )
    w = check_window(now, f.zones, f.states, policy, f.campaign_window, pw)
    if not w.allowed:
        reasons.extend(w.reasons)
    elif lease_margin and w.closes_at is not None and w.closes_at - now < MIN_LEASE:
        reasons.append(
            reason(Code.OUTSIDE_CALLING_WINDOW, "the calling window closes too soon for a lease")
        )
    caps = check_caps(f.attempt_times, now, policy.caps, f.zones)
    if not caps.allowed:
        reasons.extend(caps.reasons)
    return reasons, w.closes_at if not reasons else None


def decide(f: CallFacts, policy: Policy, now: datetime) -> DispatchDecision:
    permanent, consent = _permanent(f, policy, now)
    if permanent:
        return DispatchDecision("refuse", permanent)
    if f.not_after is not None and f.not_after <= now:
        return DispatchDecision("expire", [reason(Code.DEADLINE_PASSED)])
    blocks, closes_at = blocks_now(f, policy, now, consent=consent)
    if not blocks:
        return DispatchDecision("go", [], now, closes_at, recording=consent.recording)
    eligible_at = earliest_clear(f, policy, now)
    if eligible_at is not None and blocks[0] is _STALE:
        # Waiting does not cure it: decided again after STALE_RECHECK, or sooner when
        # answers for the number arrive.
        eligible_at = stale_recheck_at(eligible_at, now, f.not_after)
    if eligible_at is None or (f.not_after is not None and eligible_at >= f.not_after):
        return DispatchDecision(
            "expire",
            [
                reason(
                    Code.DEADLINE_PASSED,
                    f"the call cannot be made before not_after (blocked by {blocks[0].code.value})",
                    details={"blocked_by": [b.code.value for b in blocks]},
                ),
                *blocks,
            ],
        )
    return DispatchDecision("defer", blocks, eligible_at)
