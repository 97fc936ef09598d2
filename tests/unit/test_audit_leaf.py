"""A leaf's bytes are the canonical JSON API.md defines: the sequencer assembles them around
the stored payload (already canonical) instead of parsing and encoding it again; the result
is the same bytes as encoding the whole entry, whatever the strings and the payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from core.audit import canonical_json, iso, leaf_text

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    index=st.integers(0, 2**62), actor=st.text(), kind=st.text(), subject=st.text(),
    policy_version=st.text(), payload=st.dictionaries(st.text(), _json, max_size=5),
    micros=st.integers(0, 10**15), offset=st.integers(-14 * 60, 14 * 60),
)
def test_assembled_leaf_is_the_canonical_json_of_the_entry(
    index: int, actor: str, kind: str, subject: str, policy_version: str,
    payload: dict[str, object], micros: int, offset: int,
) -> None:
    tz = timezone(timedelta(minutes=offset))
    at = (datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).astimezone(tz)
    leaf = leaf_text(index, at, actor, kind, subject, canonical_json(payload), policy_version)
    assert leaf == canonical_json({
        "index": index, "at": iso(at), "actor": actor, "kind": kind, "subject": subject,
        "payload": payload, "policy_version": policy_version,
    })
    assert json.loads(leaf)["payload"] == json.loads(canonical_json(payload))


def test_the_time_is_utc_with_microseconds() -> None:
    at = datetime(2026, 11, 24, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
    leaf = json.loads(leaf_text(0, at, "a", "k", "s", "{}", "v"))
    assert leaf["at"] == "2026-11-24T17:00:00.000000+00:00"


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    import pytest

    for bad in ("", "[]", "null", "{"):
        with pytest.raises(ValueError):
            leaf_text(0, datetime(2026, 1, 1, tzinfo=UTC), "a", "k", "s", bad, "v")


def test_the_time_from_sqlite_text_is_the_same() -> None:
    from core.bulk import sqlite_datetime

    for at in (datetime(2026, 11, 24, 17, 0, tzinfo=UTC),
               datetime(2026, 11, 24, 17, 0, 1, 123456, tzinfo=UTC),
               datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=3)))):
        assert iso(sqlite_datetime(at)) == iso(at)
    assert iso("2026-11-24 17:00:00") == "2026-11-24T17:00:00.000000+00:00"
    assert iso("2026-11-24T12:00:00-05:00") == "2026-11-24T17:00:00.000000+00:00"
