"""Phone numbers: parsed and normalised to E.164 with ``phonenumbers``, once per distinct
input (cached). Used by every package. Messages name the field, never the value."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import is_number_type_geographical

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


@lru_cache(maxsize=262_144)
def _normalise(raw: str, default_region: str, allowed_regions: tuple[str, ...]) -> str:
    """E.164 on success; on failure, a string starting with '!' naming what failed."""
    text = raw.strip()
    if not text:
        return "!is empty"
    if len(text) > 40:
        return "!is too long to be a phone number"
    try:
        num = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return "!is not a phone number"
    if not phonenumbers.is_valid_number(num):
        return "!is not a valid number"
    ntype = phonenumbers.number_type(num)
    if ntype not in DIALABLE_TYPES:
        return "!is not dialable (premium-rate, shared-cost, pager or unknown type)"
    region = phonenumbers.region_code_for_number(num)
    if region not in allowed_regions:
        return "!is not in an allowed region"
    e164: str = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    _remember_zones(e164, num, ntype)
    return e164


# The number's own time zones, worked out from the parse above so that the zone lookup at
# intake (dialer.windows) does not parse the number and compute its type again. Same answer
# as ``phonenumbers.timezone.time_zones_for_number``, whose steps these are.
_ZONES: dict[str, tuple[str, ...]] = {}
_ZONES_MAX = 262_144


def _remember_zones(e164: str, num: phonenumbers.PhoneNumber, ntype: int) -> None:
    if num.country_code is not None and is_number_type_geographical(ntype, num.country_code):
        zones = pn_timezone.time_zones_for_geographical_number(num)
    else:
        zones = pn_timezone.time_zones_for_number(num)
    if len(_ZONES) >= _ZONES_MAX:
        _ZONES.clear()
    _ZONES[e164] = tuple(str(z) for z in zones)


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
