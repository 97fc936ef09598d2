"""purpose_rules.decide: unknown, not allowed (citing the purpose's own rule), channel."""

from __future__ import annotations

import pytest

from config.policy import load_policy, parse_policy
from config.reasons import REASONS, Code
from purpose_rules.rules import catalogue, decide

POLICY = load_policy()


def test_allowed_purpose() -> None:
    d = decide(POLICY, "discharge_followup", "autodialed_voice")
    assert d.allowed and d.reasons == []
    assert d.spec is POLICY.purposes["discharge_followup"]


def test_unknown_purpose() -> None:
    d = decide(POLICY, "debt_reminder", "sms")
    assert not d.allowed and d.spec is None
    assert [r.code for r in d.reasons] == [Code.PURPOSE_UNKNOWN]
    assert d.reasons[0].rule == REASONS[Code.PURPOSE_UNKNOWN].rule


NOT_ALLOWED = ["billing", "collections", "marketing", "fundraising", "survey"]


@pytest.mark.parametrize("purpose", NOT_ALLOWED)
def test_not_allowed_purpose_cites_its_own_rule(purpose: str) -> None:
    d = decide(POLICY, purpose)
    assert not d.allowed
    assert [r.code for r in d.reasons] == [Code.PURPOSE_NOT_ALLOWED]
    assert d.reasons[0].rule == POLICY.purposes[purpose].rule
    assert "para 14" in d.reasons[0].rule


def test_channel_not_allowed_for_purpose() -> None:
    policy = parse_policy(
        b'version = "x"\n[purposes.test_results]\nallowed = true\nrule = "R-1"\n'
        b'channels = ["autodialed_voice"]\n'
    )
    assert decide(policy, "test_results", "autodialed_voice").allowed
    assert decide(policy, "test_results").allowed  # no channel given: the purpose alone
    d = decide(policy, "test_results", "sms")
    assert not d.allowed
    assert [r.code for r in d.reasons] == [Code.CHANNEL_NOT_ALLOWED]
    assert d.reasons[0].rule == "R-1"
    assert "sms" in d.reasons[0].message


def test_not_allowed_wins_over_channel() -> None:
    d = decide(POLICY, "marketing", "not-a-channel")
    assert [r.code for r in d.reasons] == [Code.PURPOSE_NOT_ALLOWED]


def test_catalogue_lists_every_purpose() -> None:
    rows = catalogue(POLICY)
    assert [r["code"] for r in rows] == sorted(POLICY.purposes)
    assert sum(1 for r in rows if r["allowed"]) == 9
