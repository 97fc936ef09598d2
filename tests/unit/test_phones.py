"""consent.phones: E.164 normalisation; messages say what failed, never the digits."""

from __future__ import annotations

import pytest

from config.reasons import Code
from consent import phones

US = ("US",)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+1 314 555 0100", "+13145550100"),
        ("3145550100", "+13145550100"),
        ("(314) 555-0199", "+13145550199"),
        ("  314.555.0100 ", "+13145550100"),
        ("+1 800 555 0100", "+18005550100"),  # toll-free: a callback line may be one
    ],
)
def test_valid_numbers_normalise_to_e164(raw: str, e164: str) -> None:
    assert phones.normalise(raw, "US", US) == e164
    assert phones.check(raw, "US", US) == (e164, None)


@pytest.mark.parametrize(
    ("raw", "failed"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("call me maybe", "is not a phone number"),
        ("+1 314 555 01", "is not a valid number"),
        ("+1 555 555 5555", "is not a valid number"),
        ("3" * 41, "is too long"),
        ("+1 900 200 1234", "premium-rate"),
        ("+44 20 7946 0958", "is not in an allowed region"),
        ("+1 416 555 0100", "is not in an allowed region"),  # Canada shares +1
    ],
)
def test_invalid_numbers_say_what_failed_without_the_digits(raw: str, failed: str) -> None:
    e164, why = phones.check(raw, "US", US, "callback_number")
    assert e164 is None and why is not None
    assert why.code is Code.INVALID_PHONE
    assert why.message.startswith("callback_number: ")
    assert failed in why.message
    assert why.details is not None and why.details["field"] == "callback_number"
    digits = "".join(ch for ch in raw if ch.isdigit())
    for text in (why.message, str(why.details), why.rule):
        if len(digits) >= 4:
            assert digits[-4:] not in text
    with pytest.raises(phones.InvalidPhone) as info:
        phones.normalise(raw, "US", US, "callback_number")
    assert info.value.reason == why
    if len(digits) >= 4:
        assert digits[-4:] not in str(info.value)


def test_other_region_allowed_when_policy_allows_it() -> None:
    assert phones.normalise("+44 20 7946 0958", "US", ("US", "GB")) == "+442079460958"
    assert phones.normalise("020 7946 0958", "GB", ("GB",)) == "+442079460958"


def test_mask_hides_the_last_four_digits() -> None:
    assert phones.mask("+13145550100") == "+1314555****"
    assert phones.mask("+1") == "**"


def test_region_and_type_agrees_with_the_public_calls() -> None:
    """The fused check gives exactly what region_code_for_number, is_valid_number and
    number_type give, over valid, invalid and odd numbers of many calling codes."""
    import random

    import phonenumbers

    from consent.phones import region_and_type

    rng = random.Random(7)
    codes = [1, 1, 1, 1, 7, 33, 44, 49, 61, 64, 81, 86, 91, 262, 290, 599, 800, 808, 870, 882]
    seen_types: set[int] = set()
    checked = 0
    for _ in range(6000):
        cc = rng.choice(codes)
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 12)))
        try:
            num = phonenumbers.parse(f"+{cc}{digits}", None)
        except phonenumbers.NumberParseException:
            continue
        region, ntype = region_and_type(num)
        assert region == phonenumbers.region_code_for_number(num)
        assert ntype == phonenumbers.number_type(num)
        assert (ntype != phonenumbers.PhoneNumberType.UNKNOWN) == phonenumbers.is_valid_number(num)
        seen_types.add(ntype)
        checked += 1
    for region in ("US", "CA", "JM", "PR", "GB", "GG", "FR", "RE", "AU", "CX"):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                assert region_and_type(ex) == (phonenumbers.region_code_for_number(ex),
                                               phonenumbers.number_type(ex))
    assert checked > 5000
    assert len(seen_types) >= 4  # unknown plus several real types were exercised



def test_e164_and_zones_agree_with_the_public_calls() -> None:
    """The E.164 form and the zones remembered by the validating parse are what
    format_number(E164) and timezone.time_zones_for_number give, for valid numbers of many
    regions (geographic and not)."""
    import random

    import phonenumbers
    from phonenumbers import timezone

    rng = random.Random(5)
    regions = ("US", "CA", "PR", "JM", "GB", "FR", "DE", "IT", "AU", "BR", "IN", "MX", "RU")
    allowed = tuple(regions)
    checked = 0
    for region in regions:
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.VOIP):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is None:
                continue
            base = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
            for _ in range(40):
                raw = base[:-3] + f"{rng.randint(0, 999):03d}"
                num = phonenumbers.parse(raw, None)
                if not phonenumbers.is_valid_number(num):
                    continue
                e164, bad = phones.check(raw, "US", allowed)
                if bad is not None:  # not dialable (e.g. a premium type): nothing remembered
                    continue
                assert e164 == phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
                assert phones.known_zones(e164) == tuple(
                    str(z) for z in timezone.time_zones_for_number(num))
                checked += 1
    assert checked > 500


def test_nanp_fast_path_parses_exactly_as_phonenumbers() -> None:
    """phones.nanp, where it answers at all, answers what phonenumbers.parse does (the same
    PhoneNumber, every field), for the everyday North American ways of writing a number and
    for near misses, under default regions that dial +1 and ones that do not."""
    import random

    import phonenumbers

    rng = random.Random(11)
    seps = ("", " ", "-", ".", "  ", "/", "--")
    regions = ("US", "CA", "PR", "AG", "JM", "GB", "DE", "FR")
    answered = compared = 0
    for _ in range(30000):
        area = f"{rng.randint(0, 999):03d}"
        exch = f"{rng.randint(0, 999):03d}"
        line = f"{rng.randint(0, 9999):04d}"
        a = rng.choice((area, f"({area})", f"({area}) "))
        lead = rng.choice(("", "+1", "1", "+", "+1 ", "1 ", "1-", "+1-", "+1.", "11", "0"))
        s1, s2 = rng.choice(seps), rng.choice(seps)
        raw = f"{lead}{a}{s1}{exch}{s2}{line}"
        if rng.random() < 0.05:
            raw = raw[: rng.randint(0, len(raw))]  # truncated
        region = rng.choice(regions)
        fast = phones.nanp(raw, region)
        if fast is None:
            continue
        answered += 1
        try:
            slow = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            pytest.fail(f"fast path answered where parse fails (case {answered})")
        assert fast == slow
        compared += 1
    assert compared > 2000  # the fast path is taken for the common shapes


@pytest.mark.parametrize(
    "raw",
    ["+1 314 555 0123", "(314) 555-0123", "314.555.0123", "3145550123", "1-314-555-0123",
     "+13145550123", "1 (314) 555-0123"],
)
def test_nanp_fast_path_takes_the_everyday_shapes(raw: str) -> None:
    import phonenumbers

    assert phones.nanp(raw, "US") == phonenumbers.parse(raw, "US")


@pytest.mark.parametrize(
    "raw",
    ["314-555-0123 x12", "1-800-FLOWERS", "+44 20 7946 0958", "(314)-555-0123", "+1 (314 555 0123",
     "0314 555 0123", "314 555 01234"],
)
def test_nanp_fast_path_leaves_other_shapes_to_phonenumbers(raw: str) -> None:
    assert phones.nanp(raw, "US") is None
