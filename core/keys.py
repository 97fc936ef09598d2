"""API keys: random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import audit
from core.db import Database
from core.models import ApiKey

KEY_PREFIX = "cg_"


class Role(StrEnum):
    admin = "admin"
    campaign_manager = "campaign_manager"
    dialer = "dialer"
    compliance = "compliance"


class KeyError_(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a key's unique id, its name and role. Audit entries name ``actor``."""

    key_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_key(
    db: Database, role: Role, name: str, now: datetime, *, by: str = "system:keys",
    policy_version: str = "-",
) -> tuple[ApiKey, str]:
    """A new key (its hash stored); the creation is audited (``key.created``, by ``by``)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=str(uuid.uuid4()),
        name=name,
        role=role.value,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:10],
        created_at=now,
    )
    try:
        with db.write() as s:
            s.add(row)
            audit.record(s, at=now, actor=by, kind="key.created", subject=f"key:{row.id}",
                         policy_version=policy_version, payload={"name": name, "role": role.value})
    except IntegrityError:
        raise KeyError_(f"a key named {name!r} already exists") from None
    return row, plaintext


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(
    db: Database, name: str, now: datetime, *, by: str = "system:keys",
    policy_version: str = "-",
) -> ApiKey:
    """Revoke a key by name (audited as ``key.revoked`` when it was live)."""
    with db.write() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.name == name)).one_or_none()
        if row is None:
            raise KeyError_(f"no key named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = now
            audit.record(s, at=now, actor=by, kind="key.revoked", subject=f"key:{row.id}",
                         policy_version=policy_version, payload={"name": name, "role": row.role})
        return row


_BY_HASH = "SELECT id, name, role FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL"


_BY_HASH_PG = "SELECT id, name, role FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL"


async def authenticate_async(db: Database, plaintext: str) -> Identity | None:
    """:func:`authenticate` on the event loop, for PostgreSQL through psycopg
    (``Database.alookup``: the loop's own connection, a prepared statement)."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    rows = await db.alookup(_BY_HASH_PG, (hash_key(plaintext),))
    return Identity(rows[0][0], rows[0][1], Role(rows[0][2])) if rows else None


def authenticate(db: Database, plaintext: str) -> Identity | None:
    """The key's identity, or None for an unknown or revoked key. Read from the database on
    every call (a revoked key stops working at once, in every process). On a SQLite file,
    an indexed read on the thread's own connection (``Database.lookup``): quick enough for
    the event loop's thread, see ``api.deps.current_key``."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    digest = hash_key(plaintext)
    if db.has_lookup:
        rows = db.lookup(_BY_HASH, (digest,))
        return Identity(rows[0][0], rows[0][1], Role(rows[0][2])) if rows else None
    with db.read() as s:
        found = s.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.role)
            .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
        ).one_or_none()
        return None if found is None else Identity(found[0], found[1], Role(found[2]))
