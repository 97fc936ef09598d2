"""The policy file: the shipped default, policy_version, every kind of bad file, warnings,
and CALLGATE_POLICY_FILE."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest

from config.policy import (
    DEFAULT_PROHIBITED_WORDS,
    DEFAULT_REVIEW_PHRASES,
    IDENTIFIER_KINDS,
    PolicyError,
    load_policy,
    parse_policy,
)
from config.settings import Settings, get_settings
from core.runtime import build_runtime

ALLOWED = {
    "discharge_followup",
    "prescription_notification",
    "home_healthcare_instructions",
    "preregistration_instructions",
    "treatment",
    "wellness_checkup",
    "appointment_reminder",
    "test_results",
    "preoperative_instructions",
}
NOT_ALLOWED = {"billing", "collections", "marketing", "fundraising", "survey"}


def _window(level, weekday: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    w = level.for_weekday(weekday)
    assert w is not None
    return (w.start, w.end)


def test_shipped_default_purposes() -> None:
    p = load_policy()
    assert len(p.purposes) == 14
    assert {c for c, s in p.purposes.items() if s.allowed} == ALLOWED
    assert {c for c, s in p.purposes.items() if not s.allowed} == NOT_ALLOWED
    for code, spec in p.purposes.items():
        assert spec.rule.strip(), code
        if spec.allowed:
            assert "FCC 15-72" in spec.rule
    assert "para 148" in p.purposes["billing"].rule


def test_shipped_default_caps_hours_and_states() -> None:
    p = load_policy()
    assert (p.caps.per_day, p.caps.per_week, p.caps.period) == (1, 3, "rolling")
    ch = p.calling_hours
    assert all(_window(ch, d) == ("08:00", "21:00") for d in range(7))
    for state in ("FL", "OK", "MD"):
        assert all(_window(ch.states[state], d) == ("08:00", "20:00") for d in range(7)), state
    tx = ch.states["TX"]
    assert [_window(tx, d) for d in range(6)] == [("09:00", "21:00")] * 6
    assert _window(tx, 6) == ("12:00", "21:00")
    assert p.quiet_days.holidays == "US"
    assert p.default_region == "US" and p.allowed_regions == ["US"]
    assert p.warnings() == []


def test_policy_version_is_version_plus_content_hash() -> None:
    content = resources.files("config").joinpath("policy.toml").read_bytes()
    p = load_policy()
    digest = hashlib.sha256(content).hexdigest()[:12]
    assert p.policy_version == f"2026-11-01+{digest}"
    assert re.fullmatch(r"2026-11-01\+[0-9a-f]{12}", p.policy_version)


def test_policy_version_changes_with_any_byte(tmp_path: Path) -> None:
    content = resources.files("config").joinpath("policy.toml").read_bytes()
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_bytes(content)
    b.write_bytes(content + b"\n# a comment changes the hash\n")
    pa, pb = load_policy(a), load_policy(b)
    assert pa.policy_version == load_policy().policy_version
    assert pa.version == pb.version
    assert pa.policy_version != pb.policy_version


def test_minimal_file_takes_the_defaults() -> None:
    p = parse_policy(b'version = "v9"\n')
    assert p.version == "v9"
    assert len(p.purposes) == 14
    assert (p.caps.per_day, p.caps.per_week) == (1, 3)
    assert p.policy_version == "v9+" + hashlib.sha256(b'version = "v9"\n').hexdigest()[:12]


def test_purposes_table_is_the_whole_catalogue() -> None:
    p = parse_policy(b'version = "v"\n[purposes.test_results]\nallowed = true\nrule = "r"\n')
    assert set(p.purposes) == {"test_results"}


BAD = [
    pytest.param(b'version = "x"\n[caps\n', "(file)", "not valid TOML", id="bad-toml"),
    pytest.param(b'default_region = "US"\n', "version", "required", id="missing-version"),
    pytest.param(b'version = ""\n', "version", "at least 1", id="empty-version"),
    pytest.param(
        b'version = "x"\n[calling_hours]\nstart = "8:00"\nend = "21:00"\n',
        "calling_hours.start",
        "HH:MM",
        id="bad-hhmm",
    ),
    pytest.param(
        b'version = "x"\n[calling_hours.states.FL]\nstart = "08:00"\nend = "25:00"\n',
        "calling_hours.states.FL.end",
        "HH:MM",
        id="bad-hhmm-state",
    ),
    pytest.param(
        b'version = "x"\n[calling_hours]\nstart = "21:00"\nend = "08:00"\n',
        "calling_hours",
        "start must be earlier than end",
        id="start-after-end",
    ),
    pytest.param(
        b'version = "x"\n[calling_hours.states.TX]\nsun = { start = "12:00", end = "12:00" }\n',
        "calling_hours.states.TX.sun",
        "start must be earlier than end",
        id="start-equals-end-weekday",
    ),
    pytest.param(
        b'version = "x"\n[caps]\nperiod = "monthly"\n',
        "caps.period",
        "'rolling' or 'calendar'",
        id="unknown-cap-period",
    ),
    pytest.param(
        b'version = "x"\n[caps]\nper_week = -1\n',
        "caps.per_week",
        "greater than or equal to 0",
        id="negative-cap",
    ),
    pytest.param(
        b'version = "x"\n[quiet_days]\nrules = ["FREQ=SOMETIMES"]\n',
        "quiet_days.rules",
        "not an RFC 5545 recurrence rule",
        id="bad-rrule",
    ),
    pytest.param(
        b'version = "x"\n[quiet_days]\nholidays = "XX"\n',
        "quiet_days.holidays",
        "not a country",
        id="unknown-holidays-country",
    ),
    pytest.param(
        b'version = "x"\n[purposes.foo]\nallowed = true\n',
        "purposes.foo",
        "rule citation",
        id="purpose-without-rule",
    ),
    pytest.param(
        b'version = "x"\n[caps]\nper_month = 3\n',
        "caps.per_month",
        "Extra inputs are not permitted",
        id="unknown-field",
    ),
    pytest.param(
        b'version = "x"\ncolour = "red"\n',
        "colour",
        "Extra inputs are not permitted",
        id="unknown-top-level-field",
    ),
    pytest.param(
        b'version = "x"\nallowed_regions = ["ZZ"]\n',
        "allowed_regions",
        "not a region",
        id="unknown-region",
    ),
    pytest.param(
        b'version = "x"\ndefault_region = "QQ"\n',
        "default_region",
        "not a region",
        id="unknown-default-region",
    ),
    pytest.param(
        b'version = "x"\ndefault_region = "CA"\nallowed_regions = ["US"]\n',
        "allowed_regions",
        "must include default_region",
        id="default-region-not-allowed",
    ),
    pytest.param(
        b'version = "x"\n[calling_hours.states.ny]\nstart = "09:00"\nend = "20:00"\n',
        "calling_hours.states",
        "two upper-case letters",
        id="bad-state-code",
    ),
    pytest.param(
        b'version = "x"\n[calling_hours.states.NY]\nstart = "09:00"\n',
        "calling_hours.states.NY",
        "start and end go together",
        id="start-without-end",
    ),
    pytest.param(b"version = \"x\"\n\xff\n", "(file)", "UTF-8", id="not-utf8"),
    pytest.param(
        b'version = "x"\n[texts]\nprohibited_words = ["pay", "  "]\n',
        "texts.prohibited_words",
        "entry 1 has no letters or digits",
        id="blank-prohibited-word",
    ),
    pytest.param(
        b'version = "x"\n[texts]\nprohibited_words = ["Pay", "pay"]\n',
        "texts.prohibited_words",
        "entry 1 repeats entry 0",
        id="repeated-prohibited-word",
    ),
    pytest.param(
        b'version = "x"\n[texts]\nprohibited_words = ["reply", "pay"]\n',
        "texts.prohibited_words",
        'would refuse the required opt-out wording "Reply STOP"',
        id="prohibited-word-in-the-opt-out",
    ),
    pytest.param(
        b'version = "x"\n[texts]\nprohibited_words = "pay"\n',
        "texts.prohibited_words",
        "valid list",
        id="prohibited-words-not-a-list",
    ),
    pytest.param(
        b'version = "x"\n[texts]\nreview_phrases = ["leave me alone", 3]\n',
        "texts.review_phrases.1",
        "valid string",
        id="review-phrase-not-a-string",
    ),
    pytest.param(
        b'version = "x"\n[texts]\nreview_phrases = ["--"]\n',
        "texts.review_phrases",
        "entry 0 has no letters or digits",
        id="review-phrase-without-words",
    ),
    pytest.param(
        b'version = "x"\n[texts]\nstop_words = []\n',
        "texts.stop_words",
        "Extra inputs are not permitted",
        id="unknown-texts-key",
    ),
    pytest.param(
        b'version = "x"\n[reassigned]\nrequire_answer_within_days = 0\n',
        "reassigned.require_answer_within_days",
        "greater than or equal to 1",
        id="reassigned-days-zero",
    ),
    pytest.param(
        b'version = "x"\n[reassigned]\nrequire_answer_within_days = "31"\n',
        "reassigned.require_answer_within_days",
        "valid integer",
        id="reassigned-days-string",
    ),
    pytest.param(
        b'version = "x"\n[reassigned]\nrequire_answer_within_days = true\n',
        "reassigned.require_answer_within_days",
        "valid integer",
        id="reassigned-days-bool",
    ),
    pytest.param(
        b'version = "x"\n[reassigned]\nrequire_answer_within_days = 30.5\n',
        "reassigned.require_answer_within_days",
        "valid integer",
        id="reassigned-days-float",
    ),
    pytest.param(
        b'version = "x"\n[reassigned]\nrequire_answer_after_days = 30\n',
        "reassigned.require_answer_after_days",
        "Extra inputs are not permitted",
        id="unknown-reassigned-key",
    ),
    pytest.param(
        b'version = "x"\n[purposes.test_results]\nallowed = true\nrule = "r"\n'
        b"identity_identifiers = -1\n",
        "purposes.test_results.identity_identifiers",
        "greater than or equal to 0",
        id="identity-identifiers-negative",
    ),
    pytest.param(
        b'version = "x"\n[purposes.test_results]\nallowed = true\nrule = "r"\n'
        b"identity_identifiers = 6\n",
        "purposes.test_results.identity_identifiers",
        "less than or equal to 5",
        id="identity-identifiers-more-than-the-kinds",
    ),
    pytest.param(
        b'version = "x"\n[purposes.test_results]\nallowed = true\nrule = "r"\n'
        b'identity_identifiers = "2"\n',
        "purposes.test_results.identity_identifiers",
        "valid integer",
        id="identity-identifiers-string",
    ),
    pytest.param(
        b'version = "x"\n[purposes.test_results]\nallowed = true\nrule = "r"\n'
        b"identity_identifiers = true\n",
        "purposes.test_results.identity_identifiers",
        "valid integer",
        id="identity-identifiers-bool",
    ),
]


@pytest.mark.parametrize(("content", "key", "problem"), BAD)
def test_bad_policy_names_key_and_problem(content: bytes, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(content, "bad.toml")
    err = info.value
    assert any(k == key and problem in msg for k, msg in err.problems), err.problems
    text = str(err)
    assert "bad.toml" in text
    assert f"{key}: " in text
    assert problem in text


def test_unreadable_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.toml")
    assert "missing.toml" in str(info.value)
    assert "cannot be read" in str(info.value)


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b'version = "x"\n[calling_hours]\nstart = "07:00"\nend = "21:00"\n', "calling_hours"),
        (b'version = "x"\n[calling_hours]\nstart = "08:00"\nend = "24:00"\n', "calling_hours"),
        (
            b'version = "x"\n[calling_hours.states.NY]\nsat = { start = "08:00", end = "22:00" }\n',
            "calling_hours.states.NY",
        ),
        (
            b'version = "x"\n[purposes.test_results]\nallowed = true\nrule = "r"\n'
            b'calling_window = { start = "07:30", end = "20:00" }\n',
            "purposes.test_results",
        ),
    ],
)
def test_window_wider_than_federal_warns(content: bytes, key: str) -> None:
    p = parse_policy(content)
    warnings = p.warnings()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{key}:")
    assert "08:00-21:00" in warnings[0]


def test_narrower_windows_do_not_warn() -> None:
    p = parse_policy(
        b'version = "x"\n[calling_hours]\nstart = "09:00"\nend = "20:00"\n'
        b'[calling_hours.states.NY]\nsun = { start = "12:00", end = "17:00" }\n'
    )
    assert p.warnings() == []


def _write_policy(tmp_path: Path, version: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(
        f'version = "{version}"\n[caps]\nper_day = 1\nper_week = 2\nperiod = "calendar"\n'
        '[purposes.test_results]\nallowed = true\nrule = "FCC 15-72 para 146"\n'
    )
    return path


def test_policy_file_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_policy(tmp_path, "custom-1")
    monkeypatch.setenv("CALLGATE_POLICY_FILE", str(path))
    monkeypatch.setenv("CALLGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cg.db'}")
    settings = Settings()
    assert settings.policy_file == path
    rt = build_runtime(settings=settings)
    try:
        assert rt.policy.version == "custom-1"
        assert (rt.policy.caps.per_week, rt.policy.caps.period) == (2, "calendar")
        assert set(rt.policy.purposes) == {"test_results"}
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        assert rt.policy_version == f"custom-1+{digest}"
    finally:
        rt.db.dispose()

    # Through the process-wide settings too (cached: cleared around the test).
    get_settings.cache_clear()
    try:
        rt2 = build_runtime()
        try:
            assert rt2.policy.version == "custom-1"
            assert rt2.db.url.endswith("cg.db")
        finally:
            rt2.db.dispose()
    finally:
        get_settings.cache_clear()


def test_bad_policy_file_env_refuses_to_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('version = "x"\n[caps]\nper_day = -3\n')
    monkeypatch.setenv("CALLGATE_POLICY_FILE", str(path))
    with pytest.raises(PolicyError, match=r"caps\.per_day"):
        build_runtime(settings=Settings())


def test_wide_policy_warns_loudly_at_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wide.toml"
    path.write_text('version = "x"\n[calling_hours]\nstart = "07:00"\nend = "21:00"\n')
    settings = Settings(policy_file=path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    with caplog.at_level("WARNING", logger="callgate"):
        rt = build_runtime(settings=settings)
    rt.db.dispose()
    assert any("POLICY WARNING" in r.getMessage() for r in caplog.records)


def test_empty_policy_file_env_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_POLICY_FILE", "")
    settings = Settings()
    assert settings.policy_file is None
    assert load_policy(settings.policy_file).policy_version == load_policy().policy_version


# --- texts, reassigned numbers, identity verification ----------------------------------------

IDENTITY_TWO = {"test_results", "prescription_notification", "discharge_followup"}


def test_shipped_default_texts_reassigned_and_identity() -> None:
    p = load_policy()
    # The shipped file states the same lists as the code's defaults.
    assert tuple(p.texts.prohibited_words) == DEFAULT_PROHIBITED_WORDS
    assert tuple(p.texts.review_phrases) == DEFAULT_REVIEW_PHRASES
    assert {"payment", "billing", "invoice", "debt", "discount", "donate"} <= set(
        p.texts.prohibited_words
    )
    assert {"don't text", "do not contact", "leave me alone", "remove me"} <= set(
        p.texts.review_phrases
    )
    assert p.reassigned.require_answer_within_days is None
    assert {c for c, s in p.purposes.items() if s.identity_identifiers == 2} == IDENTITY_TWO
    assert {s.identity_identifiers for c, s in p.purposes.items() if c not in IDENTITY_TWO} == {0}
    assert len(IDENTIFIER_KINDS) == 5


def test_minimal_file_takes_the_texts_and_identity_defaults() -> None:
    p = parse_policy(b'version = "v9"\n')
    assert p.texts == load_policy().texts
    assert p.reassigned.require_answer_within_days is None
    assert {c for c, s in p.purposes.items() if s.identity_identifiers == 2} == IDENTITY_TWO


def test_custom_catalogue_takes_identity_defaults_by_purpose_code() -> None:
    p = parse_policy(
        b'version = "v"\n'
        b'[purposes.test_results]\nallowed = true\nrule = "r"\n'
        b'[purposes.discharge_followup]\nallowed = true\nrule = "r"\nidentity_identifiers = 0\n'
        b'[purposes.appointment_reminder]\nallowed = true\nrule = "r"\n'
        b'[purposes.home_visit]\nallowed = true\nrule = "r"\nidentity_identifiers = 3\n'
    )
    assert {c: s.identity_identifiers for c, s in p.purposes.items()} == {
        "test_results": 2,  # left out: the default by code
        "discharge_followup": 0,  # set: as set
        "appointment_reminder": 0,
        "home_visit": 3,
    }


def test_texts_and_reassigned_overrides() -> None:
    p = parse_policy(
        b'version = "v"\n[texts]\nprohibited_words = ["cash", "wire transfer"]\n'
        b"[reassigned]\nrequire_answer_within_days = 31\n"
    )
    assert p.texts.prohibited_words == ["cash", "wire transfer"]
    assert tuple(p.texts.review_phrases) == DEFAULT_REVIEW_PHRASES  # the other key's default
    assert p.reassigned.require_answer_within_days == 31
    p = parse_policy(b'version = "v"\n[texts]\nreview_phrases = ["go away"]\n[reassigned]\n')
    assert p.texts.review_phrases == ["go away"]
    assert tuple(p.texts.prohibited_words) == DEFAULT_PROHIBITED_WORDS
    assert p.reassigned.require_answer_within_days is None
    assert p.warnings() == []


@pytest.mark.parametrize("key", ["prohibited_words", "review_phrases"])
def test_empty_word_list_warns(key: str) -> None:
    p = parse_policy(f'version = "x"\n[texts]\n{key} = []\n'.encode())
    warnings = p.warnings()
    assert len(warnings) == 1 and warnings[0].startswith(f"texts.{key} is empty")


def test_effective_policy_dump_shows_the_new_settings() -> None:
    # `callgate policy check --json` prints this dump.
    data = load_policy().model_dump(mode="json")
    assert data["texts"]["prohibited_words"] == list(DEFAULT_PROHIBITED_WORDS)
    assert data["reassigned"] == {"require_answer_within_days": None}
    assert data["purposes"]["test_results"]["identity_identifiers"] == 2
