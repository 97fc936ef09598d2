"""dialer.rules.dispatch, the central decision, on its own: every reason code it can give,
the order of the reasons, ``next_eligible_at`` to the microsecond, at each decision point
(intake: ``refusal_reasons``; the lease: ``decide``; the dial check: ``permanent_reasons``
then ``blocks_now`` without the lease margin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.policy import Window, load_policy, parse_policy
from config.reasons import Code
from consent.rules import ConsentFact, RevocationFact
from dialer.rules.dispatch import (
    MIN_LEASE,
    CallFacts,
    blocks_now,
    decide,
    earliest_clear,
    permanent_reasons,
    refusal_reasons,
)
from dialer.rules.zones import CandidateZone
from purpose_rules import rules as purpose_rules

POLICY = load_policy()
CHI = ZoneInfo("America/Chicago")
CHICAGO = (CandidateZone("America/Chicago", "area_code"),)
# Tuesday 24 November 2026, 11:00 in Chicago (17:00 UTC): inside 08:00-21:00.
NOON = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
EVER = frozenset({"autodialed_voice", "prerecorded_voice", "sms"})
WRITTEN = ConsentFact("c1", "written", EVER, frozenset({"*"}), NOON - timedelta(days=30))


def at_chicago(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=CHI).astimezone(UTC)


def facts(**over: object) -> CallFacts:
    base: dict[str, object] = {
        "phone": "+13125550100", "purpose": "discharge_followup",
        "channel": "autodialed_voice", "zones": CHICAGO, "states": ("IL",),
        "campaign_window": None, "not_before": None, "not_after": None,
        "consents": (WRITTEN,), "revocations": (), "on_dnc": False, "attempt_times": (),
    }
    base.update(over)
    return CallFacts(**base)  # type: ignore[arg-type]


def codes(reasons: object) -> list[Code]:
    return [r.code for r in reasons]  # type: ignore[attr-defined]


# --- the lease: go ---------------------------------------------------------------------


def test_go_now_with_the_window_close() -> None:
    d = decide(facts(), POLICY, NOON)
    assert (d.outcome, d.reasons, d.next_eligible_at) == ("go", [], NOON)
    assert d.window_closes_at == at_chicago(2026, 11, 24, 21)


# --- permanent reasons: refused, in their order -------------------------------------------


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"on_dnc": True}, Code.DO_NOT_CALL),
        ({"purpose": "no_such_purpose"}, Code.PURPOSE_UNKNOWN),
        ({"purpose": "billing"}, Code.PURPOSE_NOT_ALLOWED),
        ({"consents": ()}, Code.NO_CONSENT),
        ({"consents": (WRITTEN._replace(method="oral"),)}, Code.CONSENT_NOT_WRITTEN),
        ({"revocations": (RevocationFact(NOON - timedelta(days=1)),)}, Code.CONSENT_REVOKED),
        ({"consents": (WRITTEN._replace(expires_at=NOON),)}, Code.CONSENT_EXPIRED),
        ({"consents": (WRITTEN._replace(channels=frozenset({"sms"})),)},
         Code.CONSENT_CHANNEL_MISMATCH),
        ({"consents": (WRITTEN._replace(purposes=frozenset({"test_results"})),)},
         Code.CONSENT_PURPOSE_MISMATCH),
    ],
)
def test_each_permanent_reason_refuses(over: dict[str, object], code: Code) -> None:
    d = decide(facts(**over), POLICY, NOON)
    assert d.outcome == "refuse"
    assert codes(d.reasons) == [code]
    assert d.next_eligible_at is None


def test_a_channel_the_purpose_does_not_allow_refuses() -> None:
    policy = parse_policy(
        b'version = "t"\n[purposes.reminder]\nallowed = true\nlabel = "R"\nrule = "r"\n'
        b'channels = ["sms"]\n'
    )
    d = decide(facts(purpose="reminder"), policy, NOON)
    assert (d.outcome, codes(d.reasons)) == ("refuse", [Code.CHANNEL_NOT_ALLOWED])


def test_permanent_reasons_come_in_order_do_not_call_purpose_consent() -> None:
    f = facts(on_dnc=True, purpose="billing", consents=())
    d = decide(f, POLICY, NOON)
    assert codes(d.reasons) == [Code.DO_NOT_CALL, Code.PURPOSE_NOT_ALLOWED, Code.NO_CONSENT]
    # Refused even where it would also be outside the window, past not_after and capped:
    # what no waiting cures is said first, and alone.
    late = facts(on_dnc=True, not_after=NOON - timedelta(hours=1), attempt_times=(NOON,))
    assert codes(decide(late, POLICY, at_chicago(2026, 11, 24, 22)).reasons) == [
        Code.DO_NOT_CALL]


def test_a_revocation_before_a_newer_consent_does_not_refuse() -> None:
    f = facts(revocations=(RevocationFact(WRITTEN.obtained_at - timedelta(days=1)),))
    assert decide(f, POLICY, NOON).outcome == "go"


# --- the deadline -------------------------------------------------------------------------


def test_past_not_after_expires() -> None:
    d = decide(facts(not_after=NOON), POLICY, NOON)
    assert (d.outcome, codes(d.reasons)) == ("expire", [Code.DEADLINE_PASSED])


def test_blocked_until_after_not_after_expires_with_the_blocking_reason() -> None:
    evening = at_chicago(2026, 11, 24, 21, 30)  # closed until 08:00 tomorrow
    d = decide(facts(not_after=at_chicago(2026, 11, 25, 7)), POLICY, evening)
    assert d.outcome == "expire"
    assert codes(d.reasons) == [Code.DEADLINE_PASSED, Code.OUTSIDE_CALLING_WINDOW]
    assert d.reasons[0].details == {"blocked_by": ["OUTSIDE_CALLING_WINDOW"]}


def test_eligible_exactly_at_not_after_still_expires() -> None:
    evening = at_chicago(2026, 11, 24, 21, 30)
    d = decide(facts(not_after=at_chicago(2026, 11, 25, 8)), POLICY, evening)
    assert d.outcome == "expire"  # eligible_at >= not_after: never callable in time


# --- temporary blocks: deferred, to the exact instant ----------------------------------


def test_before_the_window_defers_to_its_opening() -> None:
    early = at_chicago(2026, 11, 24, 7, 15)
    d = decide(facts(), POLICY, early)
    assert (d.outcome, codes(d.reasons)) == ("defer", [Code.OUTSIDE_CALLING_WINDOW])
    assert d.next_eligible_at == at_chicago(2026, 11, 24, 8)


def test_after_the_window_defers_to_tomorrow_morning() -> None:
    d = decide(facts(), POLICY, at_chicago(2026, 11, 24, 21))
    assert d.next_eligible_at == at_chicago(2026, 11, 25, 8)


def test_a_window_closing_within_the_minimum_lease_defers_to_the_next_one() -> None:
    almost = at_chicago(2026, 11, 24, 21) - MIN_LEASE + timedelta(microseconds=1)
    d = decide(facts(), POLICY, almost)
    assert d.outcome == "defer"
    assert codes(d.reasons) == [Code.OUTSIDE_CALLING_WINDOW]
    assert d.next_eligible_at == at_chicago(2026, 11, 25, 8)
    # Exactly MIN_LEASE before the close is still a lease.
    assert decide(facts(), POLICY, at_chicago(2026, 11, 24, 21) - MIN_LEASE).outcome == "go"


def test_a_quiet_day_defers_to_the_next_ordinary_morning() -> None:
    thanksgiving = at_chicago(2026, 11, 26, 11)
    d = decide(facts(), POLICY, thanksgiving)
    assert (d.outcome, codes(d.reasons)) == ("defer", [Code.QUIET_DAY])
    assert d.next_eligible_at == at_chicago(2026, 11, 27, 8)


def test_not_before_ahead_defers_to_it_exactly() -> None:
    later = NOON + timedelta(hours=2, microseconds=7)
    d = decide(facts(not_before=later), POLICY, NOON)
    assert (d.outcome, codes(d.reasons)) == ("defer", [Code.OUTSIDE_CALLING_WINDOW])
    assert d.reasons[0].details == {"field": "not_before"}
    assert d.next_eligible_at == later


def test_the_daily_cap_defers_24_hours_after_the_last_attempt() -> None:
    last = NOON - timedelta(hours=1, minutes=10, microseconds=3)  # 09:49:59.999997 local
    d = decide(facts(attempt_times=(last,)), POLICY, NOON)
    assert (d.outcome, codes(d.reasons)) == ("defer", [Code.DAILY_CAP])
    assert d.next_eligible_at == last + timedelta(hours=24)


def test_the_weekly_cap_defers_until_the_oldest_of_three_leaves_the_week() -> None:
    times = (NOON - timedelta(days=6, hours=1), NOON - timedelta(days=4),
             NOON - timedelta(days=2))
    d = decide(facts(attempt_times=times), POLICY, NOON)
    assert (d.outcome, codes(d.reasons)) == ("defer", [Code.WEEKLY_CAP])
    assert d.next_eligible_at == times[0] + timedelta(days=7)


def test_a_cap_that_frees_at_night_waits_for_the_window_too() -> None:
    last = at_chicago(2026, 11, 23, 20, 30)  # free again at 20:30 today: 30 min of window
    d = decide(facts(attempt_times=(last,)), POLICY, NOON)
    assert d.next_eligible_at == last + timedelta(hours=24)
    late = at_chicago(2026, 11, 23, 20, 59, 59)  # frees inside the last lease margin
    d = decide(facts(attempt_times=(late,)), POLICY, NOON)
    assert d.next_eligible_at == at_chicago(2026, 11, 25, 8)


def test_several_temporary_blocks_are_all_listed() -> None:
    early = at_chicago(2026, 11, 24, 7)
    d = decide(facts(attempt_times=(early - timedelta(hours=1),)), POLICY, early)
    assert codes(d.reasons) == [Code.OUTSIDE_CALLING_WINDOW, Code.DAILY_CAP]
    # The cap frees at 06:00 tomorrow, before the window: 08:00 tomorrow.
    assert d.next_eligible_at == at_chicago(2026, 11, 25, 8)


def test_a_campaign_window_narrows_the_day() -> None:
    f = facts(campaign_window=Window(start="13:00", end="15:00"))
    d = decide(f, POLICY, NOON)
    assert d.next_eligible_at == at_chicago(2026, 11, 24, 13)
    assert decide(f, POLICY, at_chicago(2026, 11, 24, 14)).window_closes_at == at_chicago(
        2026, 11, 24, 15)


def test_every_candidate_zone_must_be_open() -> None:
    both = (*CHICAGO, CandidateZone("America/Los_Angeles", "postal_code"))
    d = decide(facts(zones=both), POLICY, at_chicago(2026, 11, 24, 9))  # 07:00 in LA
    assert d.outcome == "defer"
    assert d.next_eligible_at == datetime(2026, 11, 24, 8, tzinfo=ZoneInfo(
        "America/Los_Angeles")).astimezone(UTC)


def test_earliest_clear_is_the_decisions_next_eligible_at() -> None:
    f = facts(attempt_times=(NOON - timedelta(hours=1),))
    assert earliest_clear(f, POLICY, NOON) == decide(f, POLICY, NOON).next_eligible_at


# --- the dial check: permanent reasons, then the window without the lease margin ----------


def test_dial_check_ignores_the_lease_margin_but_not_the_close() -> None:
    almost = at_chicago(2026, 11, 24, 21) - timedelta(seconds=5)
    f = facts()
    assert permanent_reasons(f, POLICY, almost) == []
    assert blocks_now(f, POLICY, almost, lease_margin=False) == ([], at_chicago(2026, 11, 24, 21))
    blocked, _ = blocks_now(f, POLICY, almost)  # a new lease would not be handed out
    assert codes(blocked) == [Code.OUTSIDE_CALLING_WINDOW]
    closed, _ = blocks_now(f, POLICY, at_chicago(2026, 11, 24, 21), lease_margin=False)
    assert codes(closed) == [Code.OUTSIDE_CALLING_WINDOW]


def test_dial_check_sees_a_revocation_since_the_lease() -> None:
    f = facts(revocations=(RevocationFact(NOON - timedelta(seconds=1)),))
    assert codes(permanent_reasons(f, POLICY, NOON)) == [Code.CONSENT_REVOKED]


# --- intake: the same rule, with the purpose decided once per list -----------------------


consent_st = st.builds(
    ConsentFact,
    id=st.just("c"),
    method=st.sampled_from(["written", "electronic_signature", "oral"]),
    channels=st.frozensets(st.sampled_from(sorted(EVER)), min_size=1),
    purposes=st.frozensets(st.sampled_from(["*", "discharge_followup", "test_results"]),
                           min_size=1),
    obtained_at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31),
                             timezones=st.just(UTC)),
    expires_at=st.none() | st.datetimes(min_value=datetime(2026, 1, 1),
                                        max_value=datetime(2027, 12, 31),
                                        timezones=st.just(UTC)),
)


@settings(max_examples=300, deadline=None)
@given(
    on_dnc=st.booleans(),
    purpose=st.sampled_from(["discharge_followup", "test_results", "billing", "nope"]),
    channel=st.sampled_from(sorted(EVER)),
    consents=st.lists(consent_st, max_size=3),
    revoked=st.lists(st.datetimes(min_value=datetime(2026, 1, 1),
                                  max_value=datetime(2026, 12, 31), timezones=st.just(UTC)),
                     max_size=2),
)
def test_intake_and_dispatch_give_the_same_permanent_reasons(
    on_dnc: bool, purpose: str, channel: str, consents: list[ConsentFact],
    revoked: list[datetime],
) -> None:
    revs = [RevocationFact(r) for r in revoked]
    f = facts(on_dnc=on_dnc, purpose=purpose, channel=channel, consents=consents,
              revocations=revs)
    decided_once = purpose_rules.decide(POLICY, purpose, channel)
    at_intake = refusal_reasons(on_dnc, decided_once, consents, revs, channel, purpose, NOON)
    assert at_intake == permanent_reasons(f, POLICY, NOON)
    assert (decide(f, POLICY, NOON).outcome == "refuse") == bool(at_intake)
