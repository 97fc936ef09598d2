"""Texts (SMS) and message templates: pure rules (API.md "Templates and texts").

Plain data in, a decision with reasons out: no session, no clock, no I/O.

Length. A text is sent in one SMS segment: 160 septets in the GSM 7-bit default alphabet
(3GPP TS 23.038 6.2.1), where a character of the default extension table (6.2.1.1: form feed and
``^ { } \\ [ ~ ] | €``) costs two (the escape and the character); 70 UTF-16 code units in UCS-2,
used as soon as one character is outside GSM-7 (an emoji outside the Basic Multilingual Plane is
two code units). 47 CFR 64.1200(a)(9)(iv)(E) allows a healthcare text of 160 characters or less.

Template syntax. ``{provider_name}``, ``{callback_number}``, ``{appointment_date}`` and
``{appointment_time}`` are the only placeholders; any other ``{...}`` is an identifier placeholder
and refused (TEMPLATE_IDENTIFIER: names, dates of birth, record numbers have no place in a
text, 45 CFR 164.502(b)). A literal brace is written doubled, as in Python's ``str.format``:
``{{`` renders ``{`` and ``}}`` renders ``}`` (each a GSM-7 extension character, counting 2). A
single brace that opens or closes no placeholder is refused (TEMPLATE_SYNTAX), so that a
mistyped placeholder is never sent as text.

Worst case. ``max_length`` counts each placeholder at its longest rendering (API.md): provider
name 30 (an SMS campaign's provider name is GSM-7 and at most 30, counted as the SMS counts:
extension characters 2; see ``provider_name_problem``), callback number 14 (``(314) 555-0199``),
appointment date 11 (``Wed, Sep 30``), appointment time 8 (``10:30 AM``). Every rendering is
GSM-7, so rendering never changes a template's encoding: an accepted SMS template rendered with a
provider name that passes ``provider_name_problem`` always fits its ``limit`` (a property test
holds this).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from config.policy import CHANNELS, DEFAULT_REVIEW_PHRASES, Policy, phrase_words
from config.reasons import Code, Reason, reason

Encoding = Literal["GSM-7", "UCS-2"]
InboundAction = Literal["revoke", "review", "help", "none"]

# --- the GSM 7-bit default alphabet (3GPP TS 23.038 6.2.1) -----------------------------------

# Positions 0x00-0x7F in order. 0x1B is the escape to the extension table, not a character;
# 0x09 is U+00C7 (capital C cedilla), as in the Unicode mapping of the table, so a small c
# cedilla makes a text UCS-2.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The default extension table (6.2.1.1): sent as 0x1B and the character, two septets each.
GSM7_EXTENSION = "\f^{}\\[~]|€"
_GSM7_ESCAPE = "\x1b"
_SINGLE = frozenset(GSM7_BASIC) - {_GSM7_ESCAPE}
_DOUBLE = frozenset(GSM7_EXTENSION)

# One segment; a longer message is sent in parts of 153 / 67 (a 6-byte concatenation header).
SEGMENT_LIMIT: dict[Encoding, int] = {"GSM-7": 160, "UCS-2": 70}
CONCATENATED_LIMIT: dict[Encoding, int] = {"GSM-7": 153, "UCS-2": 67}

# The placeholders and their longest renderings (API.md).
PLACEHOLDERS: dict[str, int] = {
    "provider_name": 30,
    "callback_number": 14,
    "appointment_date": 11,
    "appointment_time": 8,
}
PROVIDER_NAME_MAX = PLACEHOLDERS["provider_name"]
APPOINTMENT_PLACEHOLDERS = frozenset({"appointment_date", "appointment_time"})
SMS = "sms"


def is_gsm7(text: str) -> bool:
    """Every character of ``text`` is in the GSM-7 default alphabet or its extension table."""
    return all(c in _SINGLE or c in _DOUBLE for c in text)


def encoding(text: str) -> Encoding:
    """``"GSM-7"`` when every character is GSM-7 (basic or extension), else ``"UCS-2"``."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def length(text: str, enc: Encoding) -> int:
    """The length as an SMS counts it: GSM-7 septets (extension characters 2), or UTF-16 code
    units in UCS-2 (a character outside the Basic Multilingual Plane, such as most emoji, 2).
    Raises ValueError for GSM-7 when a character is not in the alphabet."""
    if enc == "UCS-2":
        return len(text.encode("utf-16-le")) // 2
    n = 0
    for i, c in enumerate(text):
        if c in _SINGLE:
            n += 1
        elif c in _DOUBLE:
            n += 2
        else:
            raise ValueError(f"the character at {i + 1} (U+{ord(c):04X}) is not GSM-7")
    return n


def segment_count(n: int, enc: Encoding) -> int:
    """How many SMS segments a message of ``n`` (``length`` units) takes."""
    if n <= SEGMENT_LIMIT[enc]:
        return 1
    return math.ceil(n / CONCATENATED_LIMIT[enc])


def fits_one_segment(text: str) -> bool:
    """``text``, as it would be sent, fits one SMS segment (160 GSM-7 or 70 UCS-2)."""
    enc = encoding(text)
    return length(text, enc) <= SEGMENT_LIMIT[enc]


def _first_non_gsm7(text: str) -> int | None:
    return next((i for i, c in enumerate(text) if c not in _SINGLE and c not in _DOUBLE), None)


# --- template syntax -------------------------------------------------------------------------


class TemplateError(ValueError):
    """A template that cannot be rendered; the message names the placeholder, never a value."""


@dataclass(frozen=True, slots=True)
class _Part:
    text: str  # literal text, a placeholder's name, or a stray brace
    at: int  # index in the template of the part's first character
    kind: Literal["literal", "placeholder", "stray"] = "literal"


# ``{{`` and ``}}`` first (literal braces), then ``{name}``, then any other single brace.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _parse(text: str) -> list[_Part]:
    parts: list[_Part] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            parts.append(_Part(text[pos : m.start()], pos))
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(_Part(token[0], m.start()))
        elif m.group(1) is not None:
            parts.append(_Part(m.group(1), m.start(), "placeholder"))
        else:
            parts.append(_Part(token, m.start(), "stray"))
        pos = m.end()
    if pos < len(text):
        parts.append(_Part(text[pos:], pos))
    return parts


def _runs(parts: Sequence[_Part]) -> list[tuple[str, int]]:
    """Runs of literal text between placeholders (and stray braces), with the template index of
    each run's first character: wording is looked for within a run, never across a placeholder."""
    runs: list[tuple[str, int]] = []
    current: list[str] = []
    start = 0
    for p in parts:
        if p.kind == "literal":
            if not current:
                start = p.at
            current.append(p.text)
        elif current:
            runs.append(("".join(current), start))
            current = []
    if current:
        runs.append(("".join(current), start))
    return runs


# A name shown in a message only when it reads like a field name (letters and underscores): a
# number or a person's name typed between braces is not repeated into logs.
_SHOWABLE_NAME = re.compile(r"[A-Za-z][A-Za-z_]{0,39}")
_OPT_OUT = re.compile(r"\breply\s+stop\b", re.IGNORECASE)
_PLACEHOLDER_LIST = "{provider_name}, {callback_number}, {appointment_date}, {appointment_time}"


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(tuple(words[i : i + n]) == tuple(phrase) for i in range(len(words) - n + 1))


@lru_cache(maxsize=16)
def _phrase_table(phrases: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((p, phrase_words(p)) for p in phrases)


# --- template validation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateCheck:
    """A template's decision: its encoding and worst-case length, and why it is refused (an
    empty ``reasons`` accepts it). ``limit`` and ``segments`` are None for a voice template,
    whose length is in seconds (max_duration_seconds), not characters."""

    channel: str
    encoding: Encoding
    max_length: int
    limit: int | None
    segments: int | None
    placeholders: tuple[str, ...]  # the allowed placeholders used, in order of first use
    reasons: list[Reason]

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def needs_appointment(self) -> bool:
        """Rendering needs an ``appointment_at`` (intake rows without one are invalid)."""
        return any(p in APPOINTMENT_PLACEHOLDERS for p in self.placeholders)

    def refusal(self) -> Reason | None:
        """The envelope of a refused template (API.md: 422 ``TEMPLATE_INVALID`` with
        ``details.reasons`` listing each code), or None when accepted."""
        if not self.reasons:
            return None
        return reason(
            Code.TEMPLATE_INVALID, details={"reasons": [r.as_dict() for r in self.reasons]}
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "encoding": self.encoding,
            "max_length": self.max_length,
            "limit": self.limit,
            "segments": self.segments,
            "placeholders": list(self.placeholders),
            "reasons": [r.as_dict() for r in self.reasons],
        }


def validate_template(text: str, channel: str, purpose: str, policy: Policy) -> TemplateCheck:
    """Check a template for ``channel`` and ``purpose`` against the rules for healthcare
    messages (47 CFR 64.1200(a)(9)(iv)(B)-(E), (G); FCC 15-72 paras 146-148).

    Every template: allowed placeholders only (TEMPLATE_IDENTIFIER), ``{provider_name}`` and
    ``{callback_number}`` present (TEMPLATE_NO_PROVIDER / TEMPLATE_NO_CALLBACK), none of the
    policy's ``texts.prohibited_words`` (TEMPLATE_PROHIBITED_CONTENT), no stray brace
    (TEMPLATE_SYNTAX). An SMS template also: one segment in the worst case, or the purpose's
    ``sms_max_chars`` when narrower (TEMPLATE_TOO_LONG), and "Reply STOP" in any case
    (TEMPLATE_NO_OPT_OUT). Whether the purpose itself is allowed is ``purpose_rules.decide``'s
    answer, not this one's."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    parts = _parse(text)
    literal = "".join(p.text for p in parts if p.kind == "literal")
    enc = encoding(literal)
    used: list[str] = []
    identifiers: list[Reason] = []
    syntax: list[Reason] = []
    max_length = length(literal, enc)
    for p in parts:
        if p.kind == "placeholder" and p.text in PLACEHOLDERS:
            max_length += PLACEHOLDERS[p.text]
            if p.text not in used:
                used.append(p.text)
        elif p.kind == "placeholder":
            identifiers.append(_identifier_reason(p))
        elif p.kind == "stray":
            syntax.append(
                reason(
                    Code.TEMPLATE_SYNTAX,
                    f"the '{p.text}' at character {p.at + 1} opens or closes no placeholder; "
                    "write {{ or }} for a literal brace",
                    details={"at": p.at + 1},
                )
            )

    reasons: list[Reason] = []
    limit: int | None = None
    segments: int | None = None
    sms = channel == SMS
    if sms:
        limit = SEGMENT_LIMIT[enc]
        spec = policy.purposes.get(purpose)
        narrowed = spec is not None and spec.sms_max_chars < limit
        if spec is not None and spec.sms_max_chars < limit:
            limit = spec.sms_max_chars
        segments = segment_count(max_length, enc)
        if max_length > limit:
            reasons.append(_too_long_reason(text, parts, enc, max_length, limit, narrowed))
    reasons += identifiers
    if "provider_name" not in used:
        reasons.append(reason(Code.TEMPLATE_NO_PROVIDER))
    if "callback_number" not in used:
        reasons.append(reason(Code.TEMPLATE_NO_CALLBACK))
    runs = _runs(parts)
    if sms and not any(_OPT_OUT.search(run) for run, _ in runs):
        reasons.append(reason(Code.TEMPLATE_NO_OPT_OUT))
    reasons += _prohibited_reasons(runs, policy)
    reasons += syntax
    return TemplateCheck(channel, enc, max_length, limit, segments, tuple(used), reasons)


def _identifier_reason(p: _Part) -> Reason:
    name = p.text
    if _SHOWABLE_NAME.fullmatch(name):
        what, details = f"the placeholder {{{name}}}", {"placeholder": name, "at": p.at + 1}
    else:
        what, details = "a placeholder", {"at": p.at + 1}
    return reason(
        Code.TEMPLATE_IDENTIFIER,
        f"{what} at character {p.at + 1} is not one of {_PLACEHOLDER_LIST}; no patient "
        "identifier (name, date of birth, record number, diagnosis, medication...) may appear "
        "in a message",
        details=details,
    )


def _too_long_reason(
    text: str, parts: Sequence[_Part], enc: Encoding, max_length: int, limit: int, narrowed: bool
) -> Reason:
    unit = "GSM-7 characters" if enc == "GSM-7" else "UTF-16 code units"
    what = "the purpose's sms_max_chars" if narrowed else f"one {enc} segment"
    message = (
        f"the text is {max_length} {unit} long with each placeholder at its longest rendering; "
        f"{what} holds {limit}"
    )
    details: dict[str, Any] = {"max_length": max_length, "limit": limit, "encoding": enc}
    if enc == "UCS-2":
        for p in parts:
            i = _first_non_gsm7(p.text) if p.kind == "literal" else None
            if i is not None:
                at = p.at + i + 1
                message += (
                    f"; it is UCS-2 (70, not 160) because of U+{ord(text[at - 1]):04X} at "
                    f"character {at}, outside the GSM-7 alphabet"
                )
                details["ucs2_at"] = at
                break
    return reason(Code.TEMPLATE_TOO_LONG, message, details=details)


def _prohibited_reasons(runs: Sequence[tuple[str, int]], policy: Policy) -> list[Reason]:
    run_words = [phrase_words(run) for run, _ in runs]
    out: list[Reason] = []
    for phrase, words in _phrase_table(tuple(policy.texts.prohibited_words)):
        if any(_contains(rw, words) for rw in run_words):
            out.append(
                reason(
                    Code.TEMPLATE_PROHIBITED_CONTENT,
                    f"the text has '{phrase}' (texts.prohibited_words): billing, payment or "
                    "marketing wording may not appear in a healthcare message",
                    details={"word": phrase},
                )
            )
    return out


# --- rendering -------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NANP = re.compile(r"\+1([2-9]\d\d)([2-9]\d\d)(\d{4})")


def national_form(e164: str) -> str:
    """``+13145550199`` → ``(314) 555-0199`` (14 characters): a North American (+1) number in
    E.164 form. Raises ValueError otherwise (naming the field, not the value)."""
    m = _NANP.fullmatch(e164)
    if m is None:
        raise ValueError("callback_number is not a North American (+1) number in E.164 form")
    return f"({m.group(1)}) {m.group(2)}-{m.group(3)}"


def _local(at: datetime, zone: tzinfo | str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("appointment_at must carry a UTC offset")
    return at.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone)


def appointment_date(at: datetime, zone: tzinfo | str) -> str:
    """The date of ``at`` in the callee's ``zone``, English whatever the locale: ``Wed, Sep 30``,
    ``Sat, Sep 5`` (at most 11 characters)."""
    local = _local(at, zone)
    return f"{_DAYS[local.weekday()]}, {_MONTHS[local.month - 1]} {local.day}"


def appointment_time(at: datetime, zone: tzinfo | str) -> str:
    """The time of ``at`` in the callee's ``zone``, 12-hour English: ``10:30 AM``, ``9:05 AM``,
    ``12:00 PM`` for noon, ``12:15 AM`` after midnight (at most 8 characters)."""
    local = _local(at, zone)
    hour = local.hour % 12 or 12
    return f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


def template_values(
    provider_name: str,
    callback_number: str,
    appointment_at: datetime | None = None,
    zone: tzinfo | str | None = None,
) -> dict[str, str]:
    """The placeholder values of one message: the campaign's provider name and E.164 callback
    number, and the appointment (``appointment_at`` rendered in the callee's ``zone``) when
    given."""
    values = {"provider_name": provider_name, "callback_number": national_form(callback_number)}
    if appointment_at is not None:
        if zone is None:
            raise ValueError("appointment_at needs the callee's zone")
        values["appointment_date"] = appointment_date(appointment_at, zone)
        values["appointment_time"] = appointment_time(appointment_at, zone)
    return values


def render(template_text: str, values: Mapping[str, str]) -> str:
    """The template with each placeholder replaced by its value and ``{{`` / ``}}`` by a brace.

    Raises TemplateError (naming the placeholder, never the value) for a stray brace, a
    placeholder other than the four, a missing value, or a value longer than its placeholder's
    longest rendering (counted as the SMS counts it): the worst case a template was accepted
    with stays true. A sender still checks ``fits_one_segment`` on the result before sending."""
    out: list[str] = []
    for p in _parse(template_text):
        if p.kind == "literal":
            out.append(p.text)
        elif p.kind == "stray":
            raise TemplateError(f"the '{p.text}' at character {p.at + 1} opens no placeholder")
        elif p.text not in PLACEHOLDERS:
            raise TemplateError(f"the placeholder at character {p.at + 1} is not allowed")
        else:
            value = values.get(p.text)
            if value is None:
                raise TemplateError(f"no value for {{{p.text}}}")
            if length(value, encoding(value)) > PLACEHOLDERS[p.text]:
                raise TemplateError(
                    f"the value for {{{p.text}}} is longer than {PLACEHOLDERS[p.text]} characters"
                )
            out.append(value)
    return "".join(out)


def provider_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an SMS campaign's provider name, or None: it must be GSM-7, on
    one line, and at most 30 characters counted as the SMS counts them (``^ { } \\ [ ~ ] | €``
    count 2), so that ``{provider_name}`` never renders longer than a template was checked
    with."""
    if not name.strip():
        return "provider_name is empty"
    i = _first_non_gsm7(name)
    if i is not None:
        return (
            f"provider_name has a character outside the GSM-7 alphabet (U+{ord(name[i]):04X} "
            f"at character {i + 1}); an SMS campaign's provider name must be GSM-7"
        )
    for i, c in enumerate(name):
        if c in "\n\r\f":
            return f"provider_name must be one line (a line break at character {i + 1})"
    n = length(name, "GSM-7")
    if n > PROVIDER_NAME_MAX:
        return (
            f"provider_name is {n} GSM-7 characters long (^ {{ }} \\ [ ~ ] | and the euro sign "
            f"count 2); at most {PROVIDER_NAME_MAX}"
        )
    return None


# --- inbound texts ---------------------------------------------------------------------------

# API.md: these keywords alone revoke at once; among other words they send the message to review.
REVOKE_KEYWORDS = (
    "STOP", "STOPALL", "QUIT", "END", "REVOKE", "OPT OUT", "OPTOUT", "CANCEL", "UNSUBSCRIBE",
)
HELP_KEYWORDS = ("HELP", "INFO")
_REVOKE = frozenset(phrase_words(k) for k in REVOKE_KEYWORDS)
_HELP = frozenset(phrase_words(k) for k in HELP_KEYWORDS)


def classify_inbound(body: str, policy: Policy | None = None) -> InboundAction:
    """What an inbound text asks for (API.md ``POST /v1/sms/inbound``):

    - ``revoke``: the body is exactly one of STOP, STOPALL, QUIT, END, REVOKE, OPT OUT, OPTOUT,
      CANCEL, UNSUBSCRIBE, in any case, whatever whitespace, punctuation or symbols surround it;
      between OPT and OUT any run of spaces or punctuation counts as one space ("opt   out",
      "Opt-Out");
    - ``help``: the body is exactly HELP or INFO, likewise;
    - ``review``: a revoke keyword among other words ("please stop texting me", "STOP!!! now",
      "I need to cancel my appointment"), or one of the policy's ``texts.review_phrases``
      (plain-language opt-outs such as "don't text me", "leave me alone"): a human decides;
    - ``none``: anything else.

    Words are compared whole and case-folded (NFKC, apostrophes dropped): "stopped" is not
    STOP, "Don't" matches "dont"."""
    words = phrase_words(body)
    if not words:
        return "none"
    if words in _REVOKE:
        return "revoke"
    if words in _HELP:
        return "help"
    if any(_contains(words, k) for k in _REVOKE):
        return "review"
    phrases = policy.texts.review_phrases if policy is not None else DEFAULT_REVIEW_PHRASES
    if any(_contains(words, w) for _, w in _phrase_table(tuple(phrases))):
        return "review"
    return "none"
