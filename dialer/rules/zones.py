"""Where the callee may be: candidate time zones and the states whose rules apply
(PRODUCT.md rule 5; API.md "the policy file").

Pure: plain data in, answers out; no database, no clock. The zones come from the phone
number (area code) and from the patient's address; the states from the address and the
area code (state laws presume an in-state area code is an in-state resident).

The area-code table (prefix -> state) is reference data derived from phonenumbers'
geocoder, the same for every runtime of a process: built once, lazily, or handed over at
start by ``callgate serve`` (api/asgi.py builds it in a short-lived helper process so that
the geocoder's ~100 MB never enter the server) through :func:`use_area_table`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import zipcodes
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import national_significant_number

from consent import phones

__all__ = [
    "STATE_ZONES",
    "CandidateZone",
    "applicable_states",
    "area_table",
    "candidate_zone_tuple",
    "candidate_zones",
    "region_zones",
    "state_for_area_code",
    "tz",
    "use_area_table",
]


# US states, DC and territories -> every IANA zone used in some part of it (primary zone
# first). "All zones of the given state" is the conservative reading of rule 5: a state-only
# address must be callable in each of them.
STATE_ZONES: Final[dict[str, tuple[str, ...]]] = {
    "AL": ("America/Chicago",),
    "AK": ("America/Anchorage", "America/Adak"),
    "AZ": ("America/Phoenix",),
    "AR": ("America/Chicago",),
    "CA": ("America/Los_Angeles",),
    "CO": ("America/Denver",),
    "CT": ("America/New_York",),
    "DE": ("America/New_York",),
    "DC": ("America/New_York",),
    "FL": ("America/New_York", "America/Chicago"),
    "GA": ("America/New_York",),
    "HI": ("Pacific/Honolulu",),
    "ID": ("America/Boise", "America/Los_Angeles"),
    "IL": ("America/Chicago",),
    "IN": ("America/Indiana/Indianapolis", "America/Chicago"),
    "IA": ("America/Chicago",),
    "KS": ("America/Chicago", "America/Denver"),
    "KY": ("America/New_York", "America/Chicago"),
    "LA": ("America/Chicago",),
    "ME": ("America/New_York",),
    "MD": ("America/New_York",),
    "MA": ("America/New_York",),
    "MI": ("America/Detroit", "America/Chicago"),
    "MN": ("America/Chicago",),
    "MS": ("America/Chicago",),
    "MO": ("America/Chicago",),
    "MT": ("America/Denver",),
    "NE": ("America/Chicago", "America/Denver"),
    "NV": ("America/Los_Angeles", "America/Denver"),
    "NH": ("America/New_York",),
    "NJ": ("America/New_York",),
    "NM": ("America/Denver",),
    "NY": ("America/New_York",),
    "NC": ("America/New_York",),
    "ND": ("America/Chicago", "America/Denver"),
    "OH": ("America/New_York",),
    "OK": ("America/Chicago",),
    "OR": ("America/Los_Angeles", "America/Boise"),
    "PA": ("America/New_York",),
    "RI": ("America/New_York",),
    "SC": ("America/New_York",),
    "SD": ("America/Chicago", "America/Denver"),
    "TN": ("America/Chicago", "America/New_York"),
    "TX": ("America/Chicago", "America/Denver"),
    "UT": ("America/Denver",),
    "VT": ("America/New_York",),
    "VA": ("America/New_York",),
    "WA": ("America/Los_Angeles",),
    "WV": ("America/New_York",),
    "WI": ("America/Chicago",),
    "WY": ("America/Denver",),
    "PR": ("America/Puerto_Rico",),
    "GU": ("Pacific/Guam",),
    "VI": ("America/St_Thomas",),
    "AS": ("Pacific/Pago_Pago",),
    "MP": ("Pacific/Saipan",),
}
_TERRITORIES: Final = frozenset({"PR", "GU", "VI", "AS", "MP"})

# Names the phonenumbers geocoder (and people) use for them, lower-case.
_STATE_NAMES: Final[dict[str, str]] = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "florida": "FL", "georgia": "GA",
    "hawaii": "HI", "idaho": "ID", "illinois": "IL", "indiana": "IN", "iowa": "IA",
    "kansas": "KS", "kentucky": "KY", "louisiana": "LA", "maine": "ME", "maryland": "MD",
    "massachusetts": "MA", "michigan": "MI", "minnesota": "MN", "mississippi": "MS",
    "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV",
    "new hampshire": "NH", "new jersey": "NJ", "new mexico": "NM", "new york": "NY",
    "north carolina": "NC", "north dakota": "ND", "ohio": "OH", "oklahoma": "OK",
    "oregon": "OR", "pennsylvania": "PA", "rhode island": "RI", "south carolina": "SC",
    "south dakota": "SD", "tennessee": "TN", "texas": "TX", "utah": "UT", "vermont": "VT",
    "virginia": "VA", "washington": "WA", "washington state": "WA", "west virginia": "WV",
    "wisconsin": "WI", "wyoming": "WY",
    "district of columbia": "DC", "washington d.c.": "DC", "washington dc": "DC",
    "puerto rico": "PR", "guam": "GU", "u.s. virgin islands": "VI", "us virgin islands": "VI",
    "virgin islands": "VI", "american samoa": "AS", "northern mariana islands": "MP",
}  # fmt: skip
# zipcodes.matching is only partly annotated.
_zip_matching = cast(Callable[[str], list[dict[str, Any]]], zipcodes.matching)
_CITY_STATE = re.compile(r",\s*([A-Z]{2})$")
_ZIP = re.compile(r"^\s*([0-9]{5})(?:[-\s]?[0-9]{4})?\s*$")


# --------------------------------------------------------------------------------------------
# Candidate zones and applicable states
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CandidateZone:
    """One zone the callee may be in, and where that came from."""

    zone: str  # IANA name, e.g. "America/Chicago"
    source: str  # "area_code" | "postal_code" | "state" | "region"

    def as_dict(self) -> dict[str, str]:
        return {"zone": self.zone, "source": self.source}


@lru_cache(maxsize=512)
def tz(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=512)
def _zone_usable(name: str) -> bool:
    try:
        tz(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=4096)
def _postal(postal_code: str) -> tuple[tuple[str, str], ...]:
    """``(state, zone)`` pairs for a US ZIP (ZIP+4 accepted); zone is "" when unusable."""
    m = _ZIP.match(postal_code)
    if m is None:
        return ()
    try:
        rows = _zip_matching(m.group(1))
    except (ValueError, TypeError):
        return ()
    out: list[tuple[str, str]] = []
    for row in rows:
        zone = str(row.get("timezone") or "")
        # The zipcodes data has a few rows with "" or a town name as the zone.
        out.append((str(row.get("state") or ""), zone if _zone_usable(zone) else ""))
    return tuple(out)


def _state_code(value: str | None) -> str | None:
    """A 2-letter code from ``"mo"``, ``"MO"`` or ``"Missouri"``; None when unknown/empty."""
    if value is None:
        return None
    text = value.strip()
    if len(text) == 2 and text.isalpha():
        return text.upper()
    return _STATE_NAMES.get(text.lower())


@lru_cache(maxsize=64)
def region_zones(region: str) -> tuple[str, ...]:
    """All zones of a region: the fallback when nothing else says where the callee is."""
    if region == "US":
        seen: dict[str, None] = {}
        for code, zones in STATE_ZONES.items():
            if code not in _TERRITORIES:
                seen.update(dict.fromkeys(zones))
        return tuple(seen)
    if region in STATE_ZONES:  # PR, GU, VI, AS, MP are regions of their own in phonenumbers
        return STATE_ZONES[region]
    from phonenumbers.tzdata import TIMEZONE_DATA

    cc = str(phonenumbers.country_code_for_region(region))
    if cc == "0":
        return ()
    # Every zone of the country calling code; for shared codes (+1, +7) a superset, which
    # is the stricter answer.
    names = {z for prefix, zs in TIMEZONE_DATA.items() if prefix.startswith(cc) for z in zs}
    return tuple(sorted(z for z in names if z != pn_timezone.UNKNOWN_TIMEZONE and _zone_usable(z)))


@lru_cache(maxsize=8192)  # per number: the answer itself is shared (_zones_for)
def _candidate_zones(
    phone_e164: str, state: str | None, postal_code: str | None, default_region: str
) -> tuple[CandidateZone, ...]:
    known = phones.known_zones(phone_e164)  # validated in this process: no second parse
    if known is None:
        number = phones.parse(phone_e164, default_region)
        known = (
            tuple(str(z) for z in pn_timezone.time_zones_for_number(number))
            if number is not None else ()
        )
    return _zones_for(known, state, postal_code, default_region)


@lru_cache(maxsize=8192)
def _zones_for(
    number_zones: tuple[str, ...], state: str | None, postal_code: str | None,
    default_region: str,
) -> tuple[CandidateZone, ...]:
    """The candidate zones from the number's own zones and the address: keyed by the zones,
    not the number, so that the numbers of one area share one answer (intake decides
    100,000 distinct numbers in a handful of zone lists)."""
    found: dict[str, str] = {}  # zone -> first source, in order

    def add(zones: Sequence[str], source: str) -> None:
        for z in zones:
            if z and z != pn_timezone.UNKNOWN_TIMEZONE and _zone_usable(z):
                found.setdefault(z, source)

    add(number_zones, "area_code")
    postal_zones = [z for _, z in _postal(postal_code)] if postal_code else []
    if any(postal_zones):
        add(postal_zones, "postal_code")
    else:
        code = _state_code(state)
        if code is not None:
            add(STATE_ZONES.get(code, ()), "state")
    if not found:
        add(region_zones(default_region), "region")
    return tuple(CandidateZone(z, s) for z, s in found.items())


def candidate_zone_tuple(
    phone_e164: str, state: str | None, postal_code: str | None, default_region: str = "US"
) -> tuple[CandidateZone, ...]:
    """:func:`candidate_zones` as one shared, cached tuple (intake: no list per row)."""
    return _candidate_zones(phone_e164, state, postal_code, default_region)


def candidate_zones(
    phone_e164: str,
    state: str | None,
    postal_code: str | None,
    default_region: str = "US",
) -> list[CandidateZone]:
    """The zones the callee may be in (API.md, "the policy file").

    The number's zones, plus the postal code's zone where given (else every zone of the
    given state); with none of these usable, every zone of ``default_region``.
    Deduplicated, first source kept; equivalent zones (Detroit, New_York) are kept apart.
    """
    return list(_candidate_zones(phone_e164, state, postal_code, default_region))


def state_for_area_code(phone_e164: str) -> str | None:
    """The US state / territory a NANP number's area code belongs to, or None."""
    m = _NANP_E164.fullmatch(phone_e164)
    if m is not None and not _territory_npa().match(m.group(1)):
        # "+1" and ten digits outside the territories' area codes: the region cannot be a
        # territory (phonenumbers gives a +1 territory only to numbers that start with its
        # leading digits), so the answer is the table's for the digits: no parse, no
        # pattern walk (a lease decides numbers it has not seen for a day: caches miss).
        return _table_state(phone_e164[1:])
    return _state_parsed(phone_e164)


_NANP_E164 = re.compile(r"\+1(\d{10})")


@lru_cache(maxsize=1)
def _territory_npa() -> re.Pattern[str]:
    """The territories' area codes, as phonenumbers' metadata gives them ("787|939")."""
    leading = []
    for region in sorted(_TERRITORIES):
        md = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert md is not None and md.leading_digits, region
        leading.append(f"(?:{md.leading_digits})")
    return re.compile("|".join(leading))


@lru_cache(maxsize=65_536)
def _state_parsed(phone_e164: str) -> str | None:
    number = phones.parse(phone_e164, "US")
    if number is None or number.country_code != 1:
        return None
    # region_code_for_number's answer, its pattern walk done once (consent.phones).
    region, _ = phones.region_and_type(number)
    if region in _TERRITORIES:
        return str(region)
    # The digits are format_number(number, E164) without its "+" (for E.164, format_number
    # only joins them).
    return _table_state(f"{number.country_code}{national_significant_number(number)}")


def _table_state(digits: str) -> str | None:
    """The state named by the geocoder's English description of the longest +1 prefix of
    ``digits`` that has one ("St. Louis, MO", "Missouri"), read from area_table(): the same
    answer as geocoder.description_for_valid_number(number, "en") (tests/unit/
    test_windows.py checks every prefix), without holding all of the geocoder's data."""
    table = _area_states()
    for n in range(min(len(digits), _AREA_LONGEST), 0, -1):
        code = table.get(digits[:n])
        if code is not None:
            return code or None
    return None


def state_from_description(text: str) -> str | None:
    """"St. Louis, MO" or "Missouri" → "MO"; None when the text names no state."""
    text = text.strip()
    if not text:
        return None
    m = _CITY_STATE.search(text)
    code = m.group(1) if m else _STATE_NAMES.get(text.lower())
    return code if code in STATE_ZONES else None


def area_table() -> dict[str, str]:
    """Every +1 prefix phonenumbers' geocoder describes in English, mapped to the state the
    description names ("" when it names none: the lookup stops there, as the geocoder's
    does). Importing the geocoder loads its data for every country and language (~100 MB);
    ``callgate serve`` builds this table in a short-lived process instead (api/asgi.py) and
    hands it over with :func:`use_area_table`, so the server never holds that data."""
    from phonenumbers.geodata import GEOCODE_DATA

    out: dict[str, str] = {}
    for prefix, names in GEOCODE_DATA.items():
        if prefix.startswith("1"):
            text = names.get("en")
            if text is not None:
                out[prefix] = state_from_description(str(text)) or ""
    return out


_AREA: dict[str, str] | None = None
_AREA_LONGEST = 11  # digits of a +1 number; the geocoder's +1 prefixes are shorter


def use_area_table(table: dict[str, str]) -> None:
    global _AREA
    _AREA = table
    _state_parsed.cache_clear()
    _applicable_states.cache_clear()


def _area_states() -> dict[str, str]:
    global _AREA
    if _AREA is None:
        _AREA = area_table()  # in this process: loads the geocoder's data
    return _AREA


@lru_cache(maxsize=262_144)
def _applicable_states(
    phone_e164: str, state: str | None, postal_code: str | None
) -> tuple[str, ...]:
    codes: set[str] = set()
    given = _state_code(state)
    if given is not None:
        codes.add(given)
    if postal_code:
        codes.update(s for s, _ in _postal(postal_code) if s)
    by_area = state_for_area_code(phone_e164)
    if by_area is not None:
        codes.add(by_area)
    return tuple(sorted(codes))


def applicable_states(phone_e164: str, state: str | None, postal_code: str | None) -> list[str]:
    """Every state whose calling-hour rules apply: the patient's state, the postal code's
    state, and the area code's state (state laws presume an in-state area code is an
    in-state resident). Sorted, deduplicated."""
    return list(_applicable_states(phone_e164, state, postal_code))
