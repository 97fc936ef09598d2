"""API keys: shown once, stored hashed, authenticate, revoke, unique names."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from config.clock import FakeClock
from core.db import Database
from core.keys import KEY_PREFIX, KeyError_, Role, authenticate, create_key, list_keys, revoke_key


def _all_cells(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).all()
    return [str(v) for row in rows for v in row]


def test_create_stores_only_the_hash(db: Database, clock: FakeClock) -> None:
    row, plaintext = create_key(db, Role.dialer, "acme-dialer-1", clock.now())
    assert plaintext.startswith(KEY_PREFIX)
    assert len(plaintext) >= 40
    cells = _all_cells(db)
    assert hashlib.sha256(plaintext.encode()).hexdigest() in cells
    assert all(plaintext not in cell for cell in cells)
    # The random part (after the visible prefix) appears nowhere either.
    assert all(plaintext[10:] not in cell for cell in cells)
    assert row.role == "dialer" and row.revoked_at is None


def test_keys_are_distinct(db: Database, clock: FakeClock) -> None:
    _, a = create_key(db, Role.admin, "a", clock.now())
    _, b = create_key(db, Role.admin, "b", clock.now())
    assert a != b


def test_authenticate_and_revoke(db: Database, clock: FakeClock) -> None:
    row, plaintext = create_key(db, Role.compliance, "auditor", clock.now())
    who = authenticate(db, plaintext)
    assert who is not None
    assert (who.key_id, who.name, who.role) == (row.id, "auditor", Role.compliance)
    assert who.actor == f"key:{row.id}"
    assert authenticate(db, plaintext + "x") is None
    assert authenticate(db, "cg_" + "a" * 43) is None
    assert authenticate(db, plaintext[len(KEY_PREFIX):]) is None  # without the prefix

    revoked = revoke_key(db, "auditor", clock.now())
    assert revoked.revoked_at == clock.now()
    assert authenticate(db, plaintext) is None
    [listed] = [k for k in list_keys(db) if k.name == "auditor"]
    assert listed.revoked_at is not None


def test_duplicate_name_is_refused(db: Database, clock: FakeClock) -> None:
    create_key(db, Role.dialer, "same", clock.now())
    with pytest.raises(KeyError_, match="already exists"):
        create_key(db, Role.admin, "same", clock.now())
    assert [k.name for k in list_keys(db)] == ["same"]


def test_revoke_unknown_name(db: Database, clock: FakeClock) -> None:
    with pytest.raises(KeyError_, match="no key named"):
        revoke_key(db, "nobody", clock.now())
