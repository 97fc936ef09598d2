"""Purpose decisions: pure. Unknown purpose = refused (PRODUCT.md 3; FCC 15-72 paras 146-148)."""

from __future__ import annotations

from dataclasses import dataclass

from config.policy import Policy, PurposeSpec
from config.reasons import Code, Reason, reason


@dataclass(frozen=True, slots=True)
class PurposeDecision:
    allowed: bool
    reasons: list[Reason]
    spec: PurposeSpec | None


def decide(policy: Policy, purpose: str, channel: str | None = None) -> PurposeDecision:
    """Is ``purpose`` (on ``channel``, when given) permitted by the policy's catalogue?"""
    spec = policy.purposes.get(purpose)
    if spec is None:
        return PurposeDecision(
            False, [reason(Code.PURPOSE_UNKNOWN, details={"field": "purpose"})], None
        )
    if not spec.allowed:
        return PurposeDecision(
            False,
            [
                reason(
                    Code.PURPOSE_NOT_ALLOWED,
                    f"the purpose '{purpose}' is not an exempt healthcare purpose",
                    spec.rule,
                )
            ],
            spec,
        )
    if channel is not None and channel not in spec.channels:
        return PurposeDecision(
            False,
            [
                reason(
                    Code.CHANNEL_NOT_ALLOWED,
                    f"the channel '{channel}' is not allowed for the purpose '{purpose}'",
                    spec.rule,
                )
            ],
            spec,
        )
    return PurposeDecision(True, [], spec)


def catalogue(policy: Policy) -> list[dict[str, object]]:
    """The catalogue as plain data, for the API and `callgate policy check`."""
    return [
        {
            "code": code,
            "label": spec.label,
            "allowed": spec.allowed,
            "rule": spec.rule,
            "channels": list(spec.channels),
            "max_duration_seconds": spec.max_duration_seconds,
            "sms_max_chars": spec.sms_max_chars,
        }
        for code, spec in sorted(policy.purposes.items())
    ]
