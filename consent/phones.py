"""Phone numbers: parsed and normalised to E.164 with ``phonenumbers``, once per distinct
input (cached). Used by every package. Messages name the field, never the value."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import phonenumbers
from phonenumbers import REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata, PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    _number_type_helper,
    country_code_for_region,
    country_code_for_valid_region,
    is_number_type_geographical,
    national_significant_number,
)
from phonenumbers.re_util import re_compile
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from config.reasons import Code, Reason, reason

# Types a patient can be called on, or a provider's callback line can be.
DIALABLE_TYPES = frozenset(
    {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
        PhoneNumberType.TOLL_FREE,
    }
)


class InvalidPhone(ValueError):
    def __init__(self, reason_: Reason) -> None:
        super().__init__(reason_.message)
        self.reason = reason_


def _invalid(field: str, what: str) -> Reason:
    return reason(
        Code.INVALID_PHONE,
        f"{field}: {what}",
        details={"field": field, "failed": what},
    )


# Repeats of a number (within a list, across requests) hit this; 65,536 numbers hold ~20 MB.
@lru_cache(maxsize=65_536)
def _normalise(raw: str, default_region: str, allowed_regions: tuple[str, ...]) -> str:
    """E.164 on success; on failure, a string starting with '!' naming what failed."""
    text = raw.strip()
    if not text:
        return "!is empty"
    if len(text) > 40:
        return "!is too long to be a phone number"
    num = parse(text, default_region)
    if num is None:
        return "!is not a phone number"
    region, ntype, nsn = _classify(num)
    if ntype == PhoneNumberType.UNKNOWN:
        return "!is not a valid number"
    if ntype not in DIALABLE_TYPES:
        return "!is not dialable (premium-rate, shared-cost, pager or unknown type)"
    if region not in allowed_regions:
        return "!is not in an allowed region"
    # format_number(num, E164) of a valid number is exactly this (its own steps).
    e164 = f"+{num.country_code}{nsn}"
    _remember_zones(e164, num, ntype)
    return e164


# A North American number written in one of the everyday ways: "+1 314 555 0123",
# "(314) 555-0123", "314.555.0123", "3145550123", "1-314-555-0123". The area code starts with
# 2-9, so a leading 1 can only be the country code. Nothing else is let through (letters,
# extensions, other separators or groupings go to phonenumbers.parse).
_NANP = re.compile(
    r"(?P<plus>\+)?(?(plus)1[ .-]?|(?P<one>1[ .-]?)?)"
    r"(?:\((?P<a1>[2-9]\d\d)\) ?|(?P<a2>[2-9]\d\d)[ .-]?)(?P<e>\d{3})[ .-]?(?P<l>\d{4})"
)


def nanp(text: str, default_region: str) -> phonenumbers.PhoneNumber | None:
    """``phonenumbers.parse(text, default_region)`` for a number :data:`_NANP` matches, in a
    tenth of its time (it is half of an intake's parsing); None for anything else. Without a
    "+", only where the default region dials +1 itself (elsewhere "1 314 ..." is a national
    number). tests/unit/test_phones.py compares this with ``phonenumbers.parse``."""
    m = _NANP.fullmatch(text)
    if m is None or (m["plus"] is None and country_code_for_region(default_region) != 1):
        return None
    return phonenumbers.PhoneNumber(
        country_code=1, national_number=int(f"{m['a1'] or m['a2']}{m['e']}{m['l']}")
    )


def parse(text: str, default_region: str | None) -> phonenumbers.PhoneNumber | None:
    """``phonenumbers.parse(text, default_region)``, through :func:`nanp` where it answers;
    None where ``parse`` raises."""
    if default_region is not None:
        fast = nanp(text, default_region)
        if fast is not None:
            return fast
    try:
        return phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None


def region_and_type(num: phonenumbers.PhoneNumber) -> tuple[str | None, int]:
    """``(region_code_for_number(num), number_type(num))`` with the type computed once.

    ``is_valid_number`` is ``number_type != UNKNOWN``. The public calls each find the region
    (which, for a shared calling code such as +1, matches the number against each region's
    patterns) and then match the number type again: five pattern walks per number where
    this does one. The steps are phonenumbers' own (``region_code_for_number``,
    ``is_valid_number_for_region``, ``number_type``); tests/unit/test_phones.py checks the
    answers against the public calls.
    """
    region, ntype, _ = _classify(num)
    return region, ntype


def _classify(num: phonenumbers.PhoneNumber) -> tuple[str | None, int, str]:
    """:func:`region_and_type` and the national significant number."""
    cc = num.country_code
    nsn = national_significant_number(num)
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc) if cc is not None else None
    if cc is None or regions is None:
        return None, PhoneNumberType.UNKNOWN, nsn
    region: str | None = None
    if len(regions) == 1:
        region = regions[0]
    else:
        for code in regions:
            md = PhoneMetadata.metadata_for_region(code.upper(), None)
            if md is None:
                continue
            if md.leading_digits is not None:
                if re_compile(md.leading_digits).match(nsn):
                    region = code
                    break
            else:
                ntype = _number_type_helper(nsn, md)
                if ntype != PhoneNumberType.UNKNOWN:
                    return code, int(ntype), nsn
        if region is None:
            return None, PhoneNumberType.UNKNOWN, nsn
    md = PhoneMetadata.metadata_for_region_or_calling_code(cc, region.upper())
    if md is None or (
        region != REGION_CODE_FOR_NON_GEO_ENTITY and cc != country_code_for_valid_region(region)
    ):
        return region, PhoneNumberType.UNKNOWN, nsn
    return region, int(_number_type_helper(nsn, md)), nsn


# The number's own time zones, worked out from the parse above so that the zone lookup at
# intake (dialer.windows) does not parse the number and compute its type again. Same answer
# as ``phonenumbers.timezone.time_zones_for_number``, whose steps these are. Read right
# after the parse that wrote it, so it only needs to be big enough for that; the zone lists
# themselves are shared (a few distinct ones for thousands of numbers).
_ZONES: dict[str, tuple[str, ...]] = {}
_ZONES_MAX = 16_384
_ZONE_LISTS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _remember_zones(e164: str, num: phonenumbers.PhoneNumber, ntype: int) -> None:
    zones: Sequence[str] | None = None
    if num.country_code is not None and is_number_type_geographical(ntype, num.country_code):
        # time_zones_for_geographical_number's own lookup, on the E.164 we already have
        # (it would format the number again): the longest prefix in its data.
        for n in range(min(len(e164) - 1, TIMEZONE_LONGEST_PREFIX), 0, -1):
            zones = TIMEZONE_DATA.get(e164[1 : 1 + n])
            if zones is not None:
                break
        if zones is None:
            zones = (pn_timezone.UNKNOWN_TIMEZONE,)
    else:
        zones = pn_timezone.time_zones_for_number(num)
    if len(_ZONES) >= _ZONES_MAX:
        _ZONES.clear()
    found = tuple(str(z) for z in zones)
    _ZONES[e164] = _ZONE_LISTS.setdefault(found, found)


def known_zones(e164: str) -> tuple[str, ...] | None:
    """The number's zones if this process has validated it, else None."""
    return _ZONES.get(e164)


def normalise(
    raw: str, default_region: str, allowed_regions: tuple[str, ...], field: str = "phone"
) -> str:
    """The number in E.164, or :class:`InvalidPhone` saying which check failed."""
    out = _normalise(raw, default_region, allowed_regions)
    if out.startswith("!"):
        raise InvalidPhone(_invalid(field, out[1:]))
    return out


def check(
    raw: str, default_region: str, allowed_regions: tuple[str, ...], field: str = "phone"
) -> tuple[str | None, Reason | None]:
    """Like :func:`normalise` but returns ``(e164, None)`` or ``(None, reason)``."""
    out = _normalise(raw, default_region, allowed_regions)
    if out.startswith("!"):
        return None, _invalid(field, out[1:])
    return out, None


def mask(e164: str) -> str:
    """``+13145550100`` → ``+1314555****``: enough for a reviewer to tell numbers apart."""
    if len(e164) <= 4:
        return "*" * len(e164)
    return e164[:-4] + "****"
