"""The policy file: TOML, loaded with tomllib into pydantic models.

A bad file is refused at start with a message naming the key and the problem.
``policy_version`` is the file's ``version`` plus a short hash of its bytes, and is
recorded with every decision.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import unicodedata
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
from dateutil.rrule import rrulestr
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CHANNELS = ("autodialed_voice", "prerecorded_voice", "sms")
ChannelName = Literal["autodialed_voice", "prerecorded_voice", "sms"]
_ALL_CHANNELS: tuple[ChannelName, ...] = ("autodialed_voice", "prerecorded_voice", "sms")
FEDERAL_START = 8 * 60
FEDERAL_END = 21 * 60
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")

# What an agent may verify a caller's identity with (API.md "Recording and identity
# verification"); a purpose's identity_identifiers counts distinct ones, so at most these many.
IDENTIFIER_KINDS = ("date_of_birth", "address", "last_service_date", "member_id", "invoice_number")
# Purposes whose calls usually disclose health information: two identifiers before disclosing
# (45 CFR 164.514(h)). Applies by purpose code, in the shipped catalogue and in a custom one that
# leaves identity_identifiers out; any other purpose defaults to 0.
IDENTITY_IDENTIFIERS_DEFAULT: dict[str, int] = {
    "test_results": 2,
    "prescription_notification": 2,
    "discharge_followup": 2,
}

# Billing, payment, fundraising and marketing wording refused in a template (whole words or
# phrases, any case; FCC 15-72 paras 147-148). Chosen not to fire on ordinary reminder wording:
# no bare "free" ("toll-free", "feel free"), "due"/"overdue"/"past due" ("due for a check-up"),
# "balance" ("balance exercises"), "collection" ("specimen collection") or "insurance" ("bring
# your insurance card"); their billing senses are covered by phrases instead.
DEFAULT_PROHIBITED_WORDS: tuple[str, ...] = (
    # billing and payment
    "pay", "payment", "payments", "paid", "bill", "bills", "billing", "billed",
    "invoice", "invoices", "statement balance", "account balance", "outstanding balance",
    "balance due", "amount due", "copay", "co-pay", "copayment", "deductible", "refund",
    "credit card", "debit card", "collections", "collection agency", "debt", "owe", "owed",
    "financing", "loan",
    # marketing and solicitation
    "sale", "sales", "discount", "discounts", "offer", "offers", "promo", "promotion",
    "promotional", "coupon", "coupons", "free gift", "free trial", "buy", "purchase", "price",
    "prices", "limited time",
    # fundraising
    "donate", "donation", "donations", "fundraiser", "fundraising",
)
# Plain-language opt-outs without a STOP keyword (47 CFR 64.1200(a)(10): words a reasonable
# person would understand as a revocation). A heuristic for humans: an inbound text containing
# one of these phrases (whole words, any case, apostrophes ignored) goes to review, where a
# compliance user decides; it never revokes by itself.
DEFAULT_REVIEW_PHRASES: tuple[str, ...] = (
    "don't text", "do not text", "don't call", "do not call", "don't contact", "do not contact",
    "don't message", "do not message", "never text", "never call", "never contact",
    "no more texts", "no more text", "no more messages", "no more calls",
    "leave me alone", "remove me", "remove my number", "take me off", "take my number off",
    "delete my number", "lose my number", "opt me out", "not interested", "wrong number",
)


class PolicyError(Exception):
    """A policy file that must not be used; ``problems`` are ``(key, problem)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "; ".join(f"{key}: {problem}" for key, problem in problems)
        super().__init__(f"invalid policy file {source}: {lines}")


def parse_hhmm(value: str) -> int:
    """``"HH:MM"`` to minutes after midnight; ``"24:00"`` is 1440 (an end meaning midnight)."""
    m = _HHMM.match(value)
    if not m:
        raise ValueError(f"must be a time as HH:MM (24-hour), got {value!r}")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 24 * 60:
        raise ValueError("must not be later than 24:00")
    return minutes


def format_hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """A daily calling window in callee-local time, end exclusive."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        parse_hhmm(v)
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start_min >= self.end_min:
            raise ValueError("start must be earlier than end")
        if self.start_min >= 24 * 60:
            raise ValueError("start must be before 24:00")
        return self

    @property
    def start_min(self) -> int:
        return parse_hhmm(self.start)

    @property
    def end_min(self) -> int:
        return parse_hhmm(self.end)

    def within(self, other: Window) -> bool:
        return self.start_min >= other.start_min and self.end_min <= other.end_min


class DayWindows(_Strict):
    """A window with optional per-weekday overrides (``sun = {start=..., end=...}``)."""

    start: str | None = None
    end: str | None = None
    mon: Window | None = None
    tue: Window | None = None
    wed: Window | None = None
    thu: Window | None = None
    fri: Window | None = None
    sat: Window | None = None
    sun: Window | None = None

    @model_validator(mode="after")
    def _pair(self) -> DayWindows:
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        if self.start is not None and self.end is not None:
            Window(start=self.start, end=self.end)
        return self

    def base(self) -> Window | None:
        if self.start is None or self.end is None:
            return None
        return Window(start=self.start, end=self.end)

    def for_weekday(self, weekday: int) -> Window | None:
        """The window for ``weekday`` (0 = Monday), or None when this level says nothing."""
        override: Window | None = getattr(self, WEEKDAYS[weekday])
        return override if override is not None else self.base()


class CallingHours(DayWindows):
    start: str | None = "08:00"
    end: str | None = "21:00"
    states: dict[str, DayWindows] = Field(default_factory=dict)

    @field_validator("states")
    @classmethod
    def _state_codes(cls, v: dict[str, DayWindows]) -> dict[str, DayWindows]:
        for code in v:
            if not re.fullmatch(r"[A-Z]{2}", code):
                raise ValueError(f"state keys are two upper-case letters, got {code!r}")
        return v

    @model_validator(mode="after")
    def _has_default(self) -> CallingHours:
        if self.base() is None:
            raise ValueError("calling_hours needs start and end")
        return self


class Caps(_Strict):
    per_day: int = Field(default=1, ge=0)
    per_week: int = Field(default=3, ge=0)
    period: Literal["rolling", "calendar"] = "rolling"


class QuietDays(_Strict):
    holidays: str = "US"
    rules: list[str] = Field(default_factory=list)

    @field_validator("holidays")
    @classmethod
    def _country(cls, v: str) -> str:
        if v == "":
            return v
        import holidays as holidays_lib

        if v not in holidays_lib.list_supported_countries():
            raise ValueError(f"{v!r} is not a country known to the holidays package")
        return v

    @field_validator("rules")
    @classmethod
    def _rrules(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            try:
                rrulestr(text, dtstart=None)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"rule {i} is not an RFC 5545 recurrence rule: {exc}") from None
        return v


class PurposeSpec(_Strict):
    allowed: bool
    label: str = ""
    rule: str = ""
    channels: list[ChannelName] = Field(default_factory=lambda: list(_ALL_CHANNELS))
    # Prerecorded voice: one minute at most for exempt calls (FCC 15-72 para 147).
    max_duration_seconds: int = Field(default=60, gt=0)
    sms_max_chars: int = Field(default=160, gt=0, le=1600)
    calling_window: Window | None = None
    # Distinct identifiers an agent verifies before disclosing health information
    # (45 CFR 164.514(h)). Left out of the file: IDENTITY_IDENTIFIERS_DEFAULT by purpose code.
    identity_identifiers: int = Field(default=0, ge=0, le=len(IDENTIFIER_KINDS), strict=True)

    @model_validator(mode="after")
    def _cite(self) -> PurposeSpec:
        if not self.rule:
            raise ValueError("every purpose needs a rule citation (rule = ...)")
        return self


_APOSTROPHES = str.maketrans("", "", "'\u2018\u2019\u02bc")


def phrase_words(text: str) -> tuple[str, ...]:
    """Case-folded words of ``text`` (NFKC): runs of letters and digits, apostrophes dropped
    (``"Don't"`` is ``dont``), any other character a separator. Word lists are matched word by
    word, so a phrase matches whatever the spacing, case or punctuation around it."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    return tuple(re.findall(r"[^\W_]+", folded))


class Texts(_Strict):
    """Texts (SMS) and templates: the word lists. Each entry is matched as whole words, any case
    (``texts.rules``)."""

    prohibited_words: list[str] = Field(default_factory=lambda: list(DEFAULT_PROHIBITED_WORDS))
    review_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_REVIEW_PHRASES))

    @field_validator("prohibited_words", "review_phrases")
    @classmethod
    def _phrases(cls, v: list[str]) -> list[str]:
        seen: dict[tuple[str, ...], int] = {}
        for i, phrase in enumerate(v):
            words = phrase_words(phrase)
            if not words:
                raise ValueError(f"entry {i} has no letters or digits")
            if words in seen:
                raise ValueError(f"entry {i} repeats entry {seen[words]}")
            seen[words] = i
        return v

    @field_validator("prohibited_words")
    @classmethod
    def _not_the_opt_out(cls, v: list[str]) -> list[str]:
        # Every SMS template must say "Reply STOP": a prohibited word inside it would refuse
        # every SMS template.
        for i, phrase in enumerate(v):
            words = phrase_words(phrase)
            if set(words) <= {"reply", "stop"}:
                raise ValueError(
                    f"entry {i} would refuse the required opt-out wording \"Reply STOP\""
                )
        return v


class Reassigned(_Strict):
    """FCC Reassigned Numbers Database answers (47 CFR 64.1200(m))."""

    # Refuse a call (REASSIGNED_CHECK_STALE) unless the number has an answer queried within
    # this many days. Absent: no freshness required (off by default).
    require_answer_within_days: int | None = Field(default=None, ge=1, strict=True)


RegionCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class Policy(_Strict):
    version: str = Field(min_length=1)
    default_region: RegionCode = "US"
    allowed_regions: list[RegionCode] = Field(default_factory=lambda: ["US"], min_length=1)
    calling_hours: CallingHours = Field(default_factory=CallingHours)
    caps: Caps = Field(default_factory=Caps)
    quiet_days: QuietDays = Field(default_factory=QuietDays)
    purposes: dict[str, PurposeSpec] = Field(default_factory=dict)
    texts: Texts = Field(default_factory=Texts)
    reassigned: Reassigned = Field(default_factory=Reassigned)
    # Set by the loader, not the file.
    content_hash: str = Field(default="", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _identity_defaults(cls, data: Any) -> Any:
        # identity_identifiers defaults by purpose code, in any catalogue that leaves it out
        # (API.md "Recording and identity verification"); a purpose knows not its own code.
        if not isinstance(data, dict) or not isinstance(data.get("purposes"), dict):
            return data
        purposes = {
            code: (
                {**spec, "identity_identifiers": IDENTITY_IDENTIFIERS_DEFAULT.get(code, 0)}
                if isinstance(spec, dict) and "identity_identifiers" not in spec
                else spec
            )
            for code, spec in data["purposes"].items()
        }
        return {**data, "purposes": purposes}

    @field_validator("default_region", "allowed_regions")
    @classmethod
    def _known_region(cls, v: Any) -> Any:
        regions = [v] if isinstance(v, str) else v
        supported = phonenumbers.SUPPORTED_REGIONS
        for region in regions:
            if region not in supported:
                raise ValueError(f"{region!r} is not a region phonenumbers knows")
        return v

    @field_validator("allowed_regions")
    @classmethod
    def _includes_default(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # Numbers written without a country code are read in default_region; if that region
        # were not allowed, every such number would be refused.
        default = info.data.get("default_region")
        if default is not None and default not in v:
            raise ValueError(f"must include default_region {default!r}")
        return v

    @field_validator("purposes")
    @classmethod
    def _purpose_codes(cls, v: dict[str, PurposeSpec]) -> dict[str, PurposeSpec]:
        for code in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", code):
                raise ValueError(f"purpose codes are lower_snake_case, got {code!r}")
        return v

    @property
    def policy_version(self) -> str:
        return f"{self.version}+{self.content_hash[:12]}" if self.content_hash else self.version

    @cached_property
    def holiday_calendar(self) -> Any:
        if not self.quiet_days.holidays:
            return None
        import holidays as holidays_lib

        return holidays_lib.country_holidays(self.quiet_days.holidays, observed=True)

    def warnings(self) -> list[str]:
        """Loud, non-fatal findings: windows wider than the federal 08:00-21:00."""
        out: list[str] = []
        levels: list[tuple[str, DayWindows]] = [("calling_hours", self.calling_hours)]
        levels += [(f"calling_hours.states.{s}", w) for s, w in self.calling_hours.states.items()]
        for key, level in levels:
            for day in range(7):
                w = level.for_weekday(day)
                if w is not None and (w.start_min < FEDERAL_START or w.end_min > FEDERAL_END):
                    out.append(
                        f"{key}: window {w.start}-{w.end} on {WEEKDAYS[day]} is wider than the "
                        "federal 08:00-21:00 (47 CFR 64.1200(c)(1)); calls may be placed "
                        "at unlawful hours"
                    )
                    break
        for code, spec in self.purposes.items():
            w = spec.calling_window
            if w is not None and (w.start_min < FEDERAL_START or w.end_min > FEDERAL_END):
                out.append(
                    f"purposes.{code}: calling_window {w.start}-{w.end} is wider than the "
                    "federal 08:00-21:00 (47 CFR 64.1200(c)(1)); calls may be placed "
                    "at unlawful hours"
                )
        if not self.texts.prohibited_words:
            out.append(
                "texts.prohibited_words is empty: templates are not checked for billing, "
                "payment or marketing wording (47 CFR 64.1200(a)(9)(iv)(D))"
            )
        if not self.texts.review_phrases:
            out.append(
                "texts.review_phrases is empty: plain-language opt-outs without a STOP keyword "
                "are not held for review (47 CFR 64.1200(a)(10))"
            )
        return out


def _default_policy_bytes() -> bytes:
    return resources.files("config").joinpath("policy.toml").read_bytes()


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(parts) or "(file)"


def parse_policy(content: bytes, source: str = "<policy>") -> Policy:
    try:
        data = tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(source, [("(file)", "is not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [("(file)", f"is not valid TOML: {exc}")]) from None
    if "version" not in data:
        raise PolicyError(source, [("version", "is required (e.g. version = \"2026-11-01\")")])
    if "purposes" not in data:
        defaults = tomllib.loads(_default_policy_bytes().decode("utf-8"))
        data["purposes"] = defaults["purposes"]
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = [(_loc(err["loc"]), err["msg"]) for err in exc.errors()]
        raise PolicyError(source, problems) from None
    return policy.model_copy(update={"content_hash": hashlib.sha256(content).hexdigest()})


def load_policy(path: Path | str | None = None) -> Policy:
    """Load ``path`` or the shipped default (``config/policy.toml`` inside the package)."""
    if path is None:
        return parse_policy(_default_policy_bytes(), "config/policy.toml (shipped default)")
    p = Path(path)
    try:
        content = p.read_bytes()
    except OSError as exc:
        raise PolicyError(str(p), [("(file)", f"cannot be read: {exc.strerror}")]) from None
    return parse_policy(content, str(p))
