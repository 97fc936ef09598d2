"""consent.rules.decide against an independent reference model (property-based), plus the
worked examples the product brief names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from config.reasons import REASONS, Code
from consent.rules import ConsentFact, RevocationFact, decide

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CHANNELS = ("autodialed_voice", "prerecorded_voice", "sms")
PURPOSES = ("test_results", "appointment_reminder", "billing")


def at(minutes: int) -> datetime:
    return BASE + timedelta(minutes=minutes)


# --- the reference model, re-derived from the rule text --------------------------------------
#
# Allowed iff some consent was obtained at or before the instant, no revocation received in
# [obtained_at, instant] revoked it, it is written or e-signed, it has not expired, and it
# covers the channel and the purpose ("*" covers every purpose). Otherwise the reason is that
# of the consent that got furthest through the checks in the order
# revoked -> not written -> expired -> channel -> purpose; NO_CONSENT when no consent was
# obtained by the instant.

ORDER = [
    Code.CONSENT_REVOKED,
    Code.CONSENT_NOT_WRITTEN,
    Code.CONSENT_EXPIRED,
    Code.CONSENT_CHANNEL_MISMATCH,
    Code.CONSENT_PURPOSE_MISMATCH,
]


@dataclass(frozen=True)
class Expected:
    allowed: bool
    code: Code | None
    satisfying: frozenset[str]


def reference(
    consents: list[ConsentFact],
    revocations: list[RevocationFact],
    channel: str,
    purpose: str,
    instant: datetime,
) -> Expected:
    checks_passed: dict[str, int] = {}
    for c in consents:
        if c.obtained_at > instant:
            continue
        ok = [
            not any(c.obtained_at <= r.received_at <= instant for r in revocations),
            c.method in ("written", "electronic_signature"),
            c.expires_at is None or instant < c.expires_at,
            channel in c.channels,
            "*" in c.purposes or purpose in c.purposes,
        ]
        passed = 0
        while passed < len(ok) and ok[passed]:
            passed += 1
        checks_passed[c.id] = passed
    if not checks_passed:
        return Expected(False, Code.NO_CONSENT, frozenset())
    satisfying = frozenset(cid for cid, n in checks_passed.items() if n == len(ORDER))
    if satisfying:
        return Expected(True, None, satisfying)
    return Expected(False, ORDER[max(checks_passed.values())], frozenset())


# --- strategies ----------------------------------------------------------------------------
# Instants come from a small range of whole minutes so that ties (revocation at the very
# minute of consent, expiry at the instant) are common.

minutes = st.integers(min_value=0, max_value=30)


@st.composite
def consent_facts(draw: st.DrawFn, index: int) -> ConsentFact:
    obtained = draw(minutes)
    expires = draw(st.none() | st.integers(min_value=0, max_value=40))
    return ConsentFact(
        id=f"c{index}",
        method=draw(st.sampled_from(["written", "electronic_signature", "oral"])),
        channels=frozenset(draw(st.sets(st.sampled_from(CHANNELS), max_size=3))),
        purposes=frozenset(draw(st.sets(st.sampled_from([*PURPOSES, "*"]), max_size=3))),
        obtained_at=at(obtained),
        expires_at=None if expires is None else at(expires),
    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ConsentFact], list[RevocationFact]]:
    n = draw(st.integers(min_value=0, max_value=4))
    consents = [draw(consent_facts(i)) for i in range(n)]
    revocations = [
        RevocationFact(at(m)) for m in draw(st.lists(minutes, max_size=3))
    ]
    return consents, revocations


@settings(max_examples=300, deadline=None, database=None)
@given(
    history=histories(),
    channel=st.sampled_from(CHANNELS),
    purpose=st.sampled_from(PURPOSES),
    instant=minutes,
)
def test_decide_matches_reference_model(
    history: tuple[list[ConsentFact], list[RevocationFact]],
    channel: str,
    purpose: str,
    instant: int,
) -> None:
    consents, revocations = history
    when = at(instant)
    got = decide(consents, revocations, channel, purpose, when)
    want = reference(consents, revocations, channel, purpose, when)
    assert got.allowed is want.allowed
    if want.allowed:
        assert got.reasons == []
        assert got.consent_id in want.satisfying
        return
    assert got.consent_id is None
    assert [r.code for r in got.reasons] == [want.code]
    r = got.reasons[0]
    assert want.code is not None
    assert (r.message, r.rule) == (REASONS[want.code].message, REASONS[want.code].rule)


@settings(max_examples=100, deadline=None, database=None)
@given(history=histories(), instant=minutes)
def test_decision_does_not_depend_on_history_order(
    history: tuple[list[ConsentFact], list[RevocationFact]], instant: int
) -> None:
    consents, revocations = history
    a = decide(consents, revocations, "sms", "test_results", at(instant))
    b = decide(consents[::-1], revocations[::-1], "sms", "test_results", at(instant))
    assert (a.allowed, [r.code for r in a.reasons]) == (b.allowed, [r.code for r in b.reasons])


# --- worked examples -----------------------------------------------------------------------


def written(cid: str, obtained: int, **kw: object) -> ConsentFact:
    return ConsentFact(
        id=cid,
        method=str(kw.get("method", "written")),
        channels=frozenset(kw.get("channels", CHANNELS)),  # type: ignore[arg-type]
        purposes=frozenset(kw.get("purposes", ["*"])),  # type: ignore[arg-type]
        obtained_at=at(obtained),
        expires_at=kw.get("expires_at"),  # type: ignore[arg-type]
    )


def test_oral_consent_never_allows_an_autodialed_call() -> None:
    d = decide([written("c1", 0, method="oral")], [], "autodialed_voice", "test_results", at(5))
    assert not d.allowed
    assert d.reasons[0].code is Code.CONSENT_NOT_WRITTEN


def test_re_consent_after_revocation_allows_again() -> None:
    consents = [written("old", 0), written("new", 20)]
    revs = [RevocationFact(at(10))]
    assert decide(consents, revs, "sms", "test_results", at(15)).reasons[0].code is (
        Code.CONSENT_REVOKED
    )
    d = decide(consents, revs, "sms", "test_results", at(25))
    assert d.allowed and d.consent_id == "new"


def test_revocation_at_the_instant_of_consent_revokes_it() -> None:
    d = decide([written("c", 10)], [RevocationFact(at(10))], "sms", "test_results", at(10))
    assert d.reasons[0].code is Code.CONSENT_REVOKED


def test_future_revocation_does_not_count_yet() -> None:
    d = decide([written("c", 0)], [RevocationFact(at(30))], "sms", "test_results", at(10))
    assert d.allowed


def test_expiry_is_exclusive() -> None:
    c = written("c", 0, expires_at=at(10))
    assert decide([c], [], "sms", "test_results", at(9)).allowed
    assert decide([c], [], "sms", "test_results", at(10)).reasons[0].code is Code.CONSENT_EXPIRED


def test_mismatch_details_name_channel_and_purpose() -> None:
    c = written("c", 0, channels=["sms"], purposes=["billing"])
    d = decide([c], [], "autodialed_voice", "test_results", at(1))
    assert d.reasons[0].code is Code.CONSENT_CHANNEL_MISMATCH
    assert d.reasons[0].details == {"channel": "autodialed_voice"}
    d = decide([c], [], "sms", "test_results", at(1))
    assert d.reasons[0].code is Code.CONSENT_PURPOSE_MISMATCH
    assert d.reasons[0].details == {"purpose": "test_results"}


def test_consent_obtained_later_is_no_consent_yet() -> None:
    d = decide([written("c", 20)], [], "sms", "test_results", at(10))
    assert d.reasons[0].code is Code.NO_CONSENT
