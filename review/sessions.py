"""Browser sessions for the compliance dashboard (``/ui``).

HIPAA's technical safeguards ask for unique user identification (45 CFR 164.312(a)(2)(i)),
audit controls (164.312(b)) and automatic logoff (164.312(a)(2)(iii)). Here that means:

* A reviewer signs in with their own API key; only ``compliance`` and ``admin`` keys may. A
  refused sign-in is audited (``ui.login_refused``), naming the key when it is a known one.
* The session id is 256 random bits, handed to the browser once in a cookie and stored only
  as its SHA-256 (like API keys): a copy of the table lets nobody resume a session.
* A session ends after ``ui_idle_minutes`` without a request (automatic logoff) and after
  ``ui_max_hours`` in any case; ending it is audited (``ui.logoff`` with the reason). A
  revoked key ends its sessions at their next request.
* Each session has its own CSRF token, checked (in constant time) on every form POST. The
  sign-in form, which has no session yet, uses a double-submit token instead.
* Sign-in attempts are throttled per client address (``ui_login_attempts_per_minute``; an
  IPv6 address counts by its /64), and refused attempts cost bounded audit space: the first
  refusal from an address in a minute is audited at once (``ui.login_refused``), the rest of
  that minute's are counted and written as one entry with the count
  (``ui.login_refused_more``) -- 300 refusals in 1.5 s were 300 chained entries (issue 16).
  The counts live in this process (:class:`LoginGuard`): with several API processes each
  throttles on its own, so a client gets at most the limit times the processes. API keys
  are 256 random bits: throttling bounds load and log volume, not guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from core.keys import Identity, Role, authenticate
from core.models import ApiKey, UiSession
from core.runtime import Runtime
from core.uow import UnitOfWork

COOKIE = "callgate_ui"
LOGIN_CSRF_COOKIE = "callgate_ui_login"
UI_ROLES = frozenset({Role.compliance, Role.admin})

# Why a session ended (``UiSession.end_reason``, and the login page's notice).
LOGOUT = "logout"
IDLE = "idle_timeout"
ABSOLUTE = "absolute_timeout"
KEY_REVOKED = "key_revoked"
END_REASONS = (LOGOUT, IDLE, ABSOLUTE, KEY_REVOKED)
SESSIONS = "system:ui-sessions"  # the unit of work that reads a cookie before it knows whose


class LoginRefused(Exception):
    """A sign-in that may not proceed; ``message`` is safe to show on the page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class UiUser:
    """The signed-in reviewer behind a live session."""

    identity: Identity
    session_hash: str
    csrf_token: str
    created_at: datetime
    idle_expires_at: datetime
    expires_at: datetime

    @property
    def actor(self) -> str:
        return self.identity.actor


@dataclass(frozen=True, slots=True)
class Resumed:
    """The outcome of presenting a cookie: a live user, or why there is none."""

    user: UiUser | None
    ended: str | None = None  # one of END_REASONS when a session just ended or had ended


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def idle_limit(rt: Runtime) -> timedelta:
    return timedelta(minutes=rt.settings.ui_idle_minutes)


def absolute_limit(rt: Runtime) -> timedelta:
    return timedelta(hours=rt.settings.ui_max_hours)


def _subject(id_hash: str) -> str:
    return f"ui_session:{id_hash[:32]}"


# --- sign-in throttling and refusal counts -------------------------------------------------

MAX_SOURCES = 20_000  # addresses tracked per minute; past it, all count as one ("*")
MAX_KEYS_LISTED = 10  # key ids named in one aggregated entry


@dataclass
class _Bucket:
    attempts: int = 0
    audited: bool = False  # this minute's first refusal was audited in full
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count, after the first
    keys: list[str] = field(default_factory=list)


@dataclass
class LoginGuard:
    """This process's sign-in counts for the current minute (``rt.state(LoginGuard)``)."""

    minute: datetime | None = None
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def source_of(host: str | None) -> str:
    """The throttled source of a client address: the address, an IPv6 one's /64."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def _roll(rt: Runtime, guard: LoginGuard, now: datetime) -> list[tuple[str, datetime, _Bucket]]:
    """Under the guard's lock: start the minute of ``now``; returns the past minute's
    buckets that have counts to write."""
    minute = _minute(now)
    if guard.minute == minute:
        return []
    done = [(src, guard.minute, b) for src, b in guard.buckets.items() if b.refused]
    guard.minute, guard.buckets = minute, {}
    return [(src, m, b) for src, m, b in done if m is not None]


def _write_counts(rt: Runtime, done: list[tuple[str, datetime, _Bucket]]) -> None:
    if not done:
        return
    with rt.write("anonymous") as uow:
        for src, minute, b in done:
            uow.audit("ui.login_refused_more", "ui", {
                "source": src, "minute": minute.isoformat(), "count": sum(b.refused.values()),
                "reasons": dict(sorted(b.refused.items())), "keys": b.keys,
            })


def flush_login_counts(rt: Runtime) -> None:
    """Write the counts of the minute under way (at shutdown, and for tests)."""
    guard = rt.state(LoginGuard)
    with guard.lock:
        done = [(src, guard.minute, b) for src, b in guard.buckets.items() if b.refused]
        for _, _, b in done:
            b.refused, b.keys = {}, []
    _write_counts(rt, [(s_, m, b) for s_, m, b in done if m is not None])


def throttle(rt: Runtime, source: str) -> int | None:
    """Count a sign-in attempt from ``source``: None if it may proceed, else the seconds
    until it may (the attempt is counted as refused, ``throttled``)."""
    guard = rt.state(LoginGuard)
    now = rt.clock.now()
    with guard.lock:
        done = _roll(rt, guard, now)
        if source not in guard.buckets and len(guard.buckets) >= MAX_SOURCES:
            source = "*"
        b = guard.buckets.setdefault(source, _Bucket())
        b.attempts += 1
        over = b.attempts > rt.settings.ui_login_attempts_per_minute
        if over:
            b.refused["throttled"] = b.refused.get("throttled", 0) + 1
    _write_counts(rt, done)
    if not over:
        return None
    return max(1, 60 - now.second)


def _refusal(rt: Runtime, source: str, reason: str, identity: Identity | None) -> bool:
    """Count a refused sign-in; True if it is the source's first this minute (to be audited
    in full now), False if it joins the minute's count."""
    guard = rt.state(LoginGuard)
    now = rt.clock.now()
    with guard.lock:
        done = _roll(rt, guard, now)
        b = guard.buckets.get(source) or guard.buckets.get("*")
        if b is None:
            b = guard.buckets.setdefault(source, _Bucket())
        first = not b.audited
        if first:
            b.audited = True
        else:
            b.refused[reason] = b.refused.get(reason, 0) + 1
            if identity is not None and identity.key_id not in b.keys \
                    and len(b.keys) < MAX_KEYS_LISTED:
                b.keys.append(identity.key_id)
    _write_counts(rt, done)
    return first


def login(rt: Runtime, api_key: str, source: str = "unknown") -> tuple[str, UiUser]:
    """Start a session for ``api_key``; returns the cookie value (shown once) and the user.

    Raises :class:`LoginRefused` for an unknown or revoked key or a role without access;
    the refusal is audited either way (the key is never recorded, only its id if known): the
    source's first refusal in a minute at once, the others as that minute's count."""
    identity = authenticate(rt.db, api_key.strip()) if len(api_key) <= 512 else None
    if identity is None or identity.role not in UI_ROLES:
        why = "role" if identity else "unknown_key"
        if _refusal(rt, source, why, identity):
            with rt.write(identity or "anonymous") as uow:
                payload: dict[str, Any] = {"reason": why, "source": source}
                if identity:
                    payload["role"] = identity.role.value
                uow.audit("ui.login_refused",
                          f"key:{identity.key_id}" if identity else "ui", payload)
        if identity is None:
            raise LoginRefused("That key is unknown or has been revoked.")
        raise LoginRefused(
            f"A {identity.role.value} key cannot sign in to the compliance dashboard: "
            "it is for compliance and admin keys only. The attempt has been recorded."
        )
    token = new_token()
    id_hash = _hash(token)
    csrf = new_token()
    with rt.write(identity) as uow:
        now = uow.now
        uow.session.add(
            UiSession(
                id_hash=id_hash, key_id=identity.key_id, csrf_token=csrf, created_at=now,
                last_seen_at=now,
            )
        )
        uow.audit("ui.login", _subject(id_hash), {
            "idle_minutes": rt.settings.ui_idle_minutes, "max_hours": rt.settings.ui_max_hours,
        })
    user = UiUser(identity, id_hash, csrf, now, now + idle_limit(rt), now + absolute_limit(rt))
    return token, user


def resume(rt: Runtime, token: str | None, *, touch: bool = True) -> Resumed:
    """The live session behind a cookie value, its idle clock restarted (``touch``).

    A session past its idle or absolute limit, or whose key was revoked, is ended here, at
    its first request after the limit, and the logoff audited."""
    if not token or len(token) > 200:
        return Resumed(None)
    id_hash = _hash(token)
    with rt.write(SESSIONS) as uow:
        s, now = uow.session, uow.now
        row = s.get(UiSession, id_hash, with_for_update=True)
        if row is None:
            return Resumed(None)
        if row.ended_at is not None:
            return Resumed(None, row.end_reason)
        key = s.get(ApiKey, row.key_id)
        ended: str | None = None
        if key is None or key.revoked_at is not None or Role(key.role) not in UI_ROLES:
            ended = KEY_REVOKED
        elif now - row.created_at >= absolute_limit(rt):
            ended = ABSOLUTE
        elif now - row.last_seen_at >= idle_limit(rt):
            ended = IDLE
        if ended is not None:
            _end(uow, row, ended)
            return Resumed(None, ended)
        assert key is not None
        if touch:
            row.last_seen_at = now
        identity = Identity(key.id, key.name, Role(key.role))
        idle_at = min(row.last_seen_at + idle_limit(rt), row.created_at + absolute_limit(rt))
        return Resumed(
            UiUser(identity, id_hash, row.csrf_token, row.created_at, idle_at,
                   row.created_at + absolute_limit(rt))
        )


def _end(uow: UnitOfWork, row: UiSession, reason: str) -> None:
    row.ended_at = uow.now
    row.end_reason = reason
    payload: dict[str, object] = {"reason": reason}
    if reason == IDLE:
        # When the inactivity limit ran out, which may be well before this request.
        payload["idle_since"] = row.last_seen_at.isoformat()
    uow.acting(f"key:{row.key_id}").audit(
        "ui.logout" if reason == LOGOUT else "ui.logoff", _subject(row.id_hash), payload)


def logout(rt: Runtime, user: UiUser) -> None:
    with rt.write(user.identity) as uow:
        row = uow.session.get(UiSession, user.session_hash, with_for_update=True)
        if row is not None and row.ended_at is None:
            _end(uow, row, LOGOUT)


def live_sessions(rt: Runtime, key_id: str) -> int:
    """How many unended sessions a key has (for tests and operators)."""
    with rt.read(SESSIONS) as uow:
        s = uow.session
        return len(
            list(
                s.scalars(
                    select(UiSession.id_hash).where(
                        UiSession.key_id == key_id, UiSession.ended_at.is_(None)
                    )
                )
            )
        )
