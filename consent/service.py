"""Consent registry and do-not-call operations: load, decide, write with the audit entry in
one transaction. Revocations and do-not-call additions withdraw the number's pending calls
in the same transaction (PRODUCT.md 2 and 6: honoured immediately)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Text, or_, select, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from config.errors import Forbidden, Invalid, NotFound
from config.reasons import Code
from consent import phones
from consent.rules import WRITTEN_METHODS, ConsentFact, RevocationFact
from consent.schemas import (
    ConsentHistory,
    ConsentIn,
    ConsentOut,
    DncIn,
    DncOut,
    DncStatus,
    RevocationIn,
    RevocationOut,
)
from core import audit
from core.db import one_of_param, one_of_value
from core.keys import Identity, Role
from core.models import Consent, DncEntry, Revocation
from core.numbers import lock_numbers, withdraw_number
from core.runtime import Runtime


def normalise_phone(rt: Runtime, raw: str, field: str = "phone") -> str:
    try:
        return phones.normalise(
            raw, rt.policy.default_region, tuple(rt.policy.allowed_regions), field
        )
    except phones.InvalidPhone as exc:
        raise Invalid(Code.INVALID_PHONE.value, exc.reason.message, {"field": field}) from None


def _status(c: Consent, revs: list[Revocation], now: datetime) -> str:
    if c.obtained_at > now:
        return "not_yet_valid"
    if any(c.obtained_at <= _effective(r) for r in revs if _effective(r) <= now):
        return "revoked"
    if c.expires_at is not None and c.expires_at <= now:
        return "expired"
    return "active"


def _effective(r: Revocation) -> datetime:
    # A revocation is effective from when it was received, and never later than when it
    # was recorded: a future received_at must not delay it.
    return min(r.received_at, r.recorded_at)


def _consent_out(c: Consent, status: str) -> ConsentOut:
    return ConsentOut(
        id=c.id,
        patient_ref=c.patient_ref,
        phone=c.phone,
        channels=list(c.channels),
        purposes=list(c.purposes),
        method=c.method,
        obtained_at=c.obtained_at,
        evidence_ref=c.evidence_ref,
        expires_at=c.expires_at,
        recorded_at=c.recorded_at,
        recorded_by=c.recorded_by,
        supersedes_id=c.supersedes_id,
        status=status,
    )


def _revocation_out(r: Revocation, withdrawn: int = 0) -> RevocationOut:
    return RevocationOut(
        id=r.id,
        phone=r.phone,
        source=r.source,
        received_at=r.received_at,
        recorded_at=r.recorded_at,
        recorded_by=r.recorded_by,
        withdrawn_calls=withdrawn,
    )


def record_consent(rt: Runtime, who: Identity, data: ConsentIn) -> ConsentOut:
    now = rt.clock.now()
    phone = normalise_phone(rt, data.phone)
    for p in data.purposes:
        if p != "*" and p not in rt.policy.purposes:
            raise Invalid(
                Code.PURPOSE_UNKNOWN.value,
                "purposes: a purpose code is not in the catalogue",
                {"field": "purposes"},
            )
    if data.method in WRITTEN_METHODS and not data.evidence_ref.strip():
        raise Invalid(
            "VALIDATION_ERROR",
            "evidence_ref is required for written or e-signed consent",
            [{"field": "body.evidence_ref", "message": "required"}],
        )
    if data.expires_at is not None and data.expires_at <= data.obtained_at:
        raise Invalid(
            "VALIDATION_ERROR",
            "expires_at must be later than obtained_at",
            [{"field": "body.expires_at", "message": "must be later than obtained_at"}],
        )
    if data.obtained_at > now:
        raise Invalid(
            "VALIDATION_ERROR",
            "obtained_at is in the future",
            [{"field": "body.obtained_at", "message": "must not be in the future"}],
        )
    with rt.db.write() as s:
        if data.supersedes_id is not None:
            old = s.get(Consent, data.supersedes_id)
            if old is None or old.phone != phone:
                raise Invalid(
                    "VALIDATION_ERROR",
                    "supersedes_id does not name a consent for this number",
                    [{"field": "body.supersedes_id", "message": "unknown consent"}],
                )
        # A re-consent is one obtained after a revocation took effect; a consent back-dated
        # to before every revocation is not one (it is revoked from the start).
        prior_revocation = s.scalars(
            select(Revocation.id)
            .where(
                Revocation.phone == phone,
                or_(
                    Revocation.received_at <= data.obtained_at,
                    Revocation.recorded_at <= data.obtained_at,
                ),
            )
            .limit(1)
        ).first()
        row = Consent(
            id=str(uuid.uuid4()),
            phone=phone,
            patient_ref=data.patient_ref,
            channels=list(data.channels),
            purposes=list(data.purposes),
            method=data.method,
            obtained_at=data.obtained_at,
            evidence_ref=data.evidence_ref,
            expires_at=data.expires_at,
            recorded_by=who.key_id,
            recorded_at=now,
            supersedes_id=data.supersedes_id,
        )
        s.add(row)
        audit.record(
            s,
            at=now,
            actor=who.actor,
            kind="consent.recorded",
            subject=f"consent:{row.id}",
            policy_version=rt.policy_version,
            payload={
                "method": row.method,
                "channels": row.channels,
                "purposes": row.purposes,
                "obtained_at": row.obtained_at.isoformat(),
                "expires_at": row.expires_at.isoformat() if row.expires_at else None,
                "re_consent_after_revocation": prior_revocation is not None,
                "supersedes": row.supersedes_id,
            },
        )
        revs = list(s.scalars(select(Revocation).where(Revocation.phone == phone)))
        return _consent_out(row, _status(row, revs, now))


def revoke(
    rt: Runtime,
    who: Identity,
    data: RevocationIn,
    *,
    call_id: str | None = None,
    session: Session | None = None,
) -> RevocationOut:
    """Revoke every consent for the number, put it on do-not-call, withdraw its calls."""
    phone = normalise_phone(rt, data.phone)
    if session is not None:
        return _revoke(rt, who, session, phone, data.source, data.received_at, call_id)
    with rt.db.write() as s:
        return _revoke(rt, who, s, phone, data.source, data.received_at, call_id)


def _revoke(
    rt: Runtime,
    who: Identity,
    s: Session,
    phone: str,
    source: str,
    received_at: datetime | None,
    call_id: str | None,
    except_call: str | None = None,
) -> RevocationOut:
    now = rt.clock.now()
    lock_numbers(s, [phone], skip_locked=False)  # first: see dialer.withdraw
    row = Revocation(
        id=str(uuid.uuid4()),
        phone=phone,
        source=source,
        received_at=received_at or now,
        recorded_at=now,
        recorded_by=who.key_id,
        call_id=call_id,
    )
    s.add(row)
    audit.record(
        s,
        at=now,
        actor=who.actor,
        kind="consent.revoked",
        subject=f"revocation:{row.id}",
        policy_version=rt.policy_version,
        payload={"source": source, "received_at": row.received_at.isoformat(), "call": call_id},
    )
    _add_dnc(rt, who, s, phone, f"consent revoked ({source})", source, now)
    withdrawn = withdraw_number(
        s, phone, now, Code.CONSENT_REVOKED, who.actor, rt.policy_version,
        except_call=except_call,
    )
    return _revocation_out(row, withdrawn)


def revoke_in_session(
    rt: Runtime,
    who: Identity,
    s: Session,
    phone: str,
    source: str,
    received_at: datetime,
    call_id: str | None = None,
) -> RevocationOut:
    """A revocation taken on a call (opt-out, wrong number), inside the outcome's unit of
    work; the call itself is left to the outcome, every other pending call is withdrawn."""
    return _revoke(rt, who, s, phone, source, received_at, call_id, except_call=call_id)


def history(rt: Runtime, who: Identity, raw_phone: str) -> ConsentHistory:
    """A number's consents and revocations (patient data: the read is audited)."""
    phone = normalise_phone(rt, raw_phone)
    now = rt.clock.now()
    with rt.db.write() as s:
        consents = list(
            s.scalars(select(Consent).where(Consent.phone == phone).order_by(Consent.obtained_at))
        )
        revs = list(
            s.scalars(
                select(Revocation).where(Revocation.phone == phone).order_by(Revocation.received_at)
            )
        )
        superseded = {c.supersedes_id for c in consents if c.supersedes_id}
        out = ConsentHistory(
            phone=phone,
            consents=[
                _consent_out(c, "superseded" if c.id in superseded else _status(c, revs, now))
                for c in consents
            ],
            revocations=[_revocation_out(r) for r in revs],
        )
        audit.record(
            s,
            at=now,
            actor=who.actor,
            kind="patient_data.read",
            subject="consents",
            policy_version=rt.policy_version,
            payload={
                "consents": [c.id for c in consents],
                "revocations": [r.id for r in revs],
            },
        )
        return out


def read_conn(s: Session) -> Connection:
    """The session's connection for a plain column read, after flushing pending ORM changes
    (as ``Session.execute`` would autoflush): the read sees this unit of work's writes."""
    if s.new or s.dirty or s.deleted:
        s.flush()
    return s.connection()


_SETS: dict[object, frozenset[str]] = {}


def _frozen(value: str | list[str]) -> frozenset[str]:
    """A consent's channels or purposes as a frozenset, shared between consents with the
    same list (there are few distinct lists; intake reads thousands of consents)."""
    key: object = value if isinstance(value, str) else tuple(value)
    out = _SETS.get(key)
    if out is None:
        items: list[str] = json.loads(value) if isinstance(value, str) else value
        out = frozenset(str(v) for v in items)
        if len(_SETS) < 4096:
            _SETS[key] = out
    return out


_FACTS_QUERIES: dict[str, tuple[Any, Any]] = {}


def _facts_queries(dialect: str) -> tuple[Any, Any]:
    """:func:`facts_for`'s two statements for this dialect, built once: the JSON lists as
    stored (text on SQLite; PostgreSQL's driver decodes them), decoded once per distinct list
    by _frozen rather than once per row; SQLite's datetimes as stored too, for _when."""
    out = _FACTS_QUERIES.get(dialect)
    if out is None:
        as_text = dialect == "sqlite"
        obtained, expires, received, recorded = (
            type_coerce(c, Text) if as_text else c
            for c in (Consent.obtained_at, Consent.expires_at, Revocation.received_at,
                      Revocation.recorded_at)
        )
        out = (
            select(
                Consent.id,
                Consent.phone,
                Consent.method,
                type_coerce(Consent.channels, Text),
                type_coerce(Consent.purposes, Text),
                obtained,
                expires,
                Consent.supersedes_id,
            ).where(one_of_param(dialect, Consent.phone, "phones")),
            select(Revocation.phone, received, recorded).where(
                one_of_param(dialect, Revocation.phone, "phones")
            ),
        )
        _FACTS_QUERIES[dialect] = out
    return out


def facts_for(
    s: Session, phone_list: Iterable[str]
) -> dict[str, tuple[list[ConsentFact], list[RevocationFact]]]:
    """Consent history for many numbers in two queries (set-based, for intake and dispatch)."""
    wanted = sorted(set(phone_list))
    out: dict[str, tuple[list[ConsentFact], list[RevocationFact]]] = {}
    if not wanted:
        return out
    # Through the session's connection: a plain column select needs none of the ORM's result
    # machinery (a third of this function's time at intake); the list is one parameter, and
    # the statements are built once per dialect.
    conn = read_conn(s)
    dialect = conn.dialect.name
    consents_q, revocations_q = _facts_queries(dialect)
    wanted_value = one_of_value(dialect, wanted)
    rows = conn.execute(consents_q, {"phones": wanted_value}).all()
    superseded = {r[7] for r in rows if r[7]}
    for cid, phone, method, chans, purps, at, until, _ in rows:
        if cid not in superseded:
            _history(out, phone)[0].append(ConsentFact(
                cid, method, _frozen(chans), _frozen(purps), _when(at),
                None if until is None else _when(until),
            ))
    for phone, rec_at, rec_by in conn.execute(revocations_q, {"phones": wanted_value}):
        _history(out, phone)[1].append(RevocationFact(min(_when(rec_at), _when(rec_by))))
    return out


def _history(
    out: dict[str, tuple[list[ConsentFact], list[RevocationFact]]], phone: str
) -> tuple[list[ConsentFact], list[RevocationFact]]:
    """``out[phone]``, made on first use (setdefault would build an empty pair per row)."""
    hist = out.get(phone)
    if hist is None:
        hist = out[phone] = ([], [])
    return hist


def _when(value: object) -> datetime:
    """A ``UTCDateTime`` as read: on SQLite the stored naive UTC text ("2026-11-24
    17:00:00.000000") made aware by ``fromisoformat`` in C, where SQLAlchemy's result
    processor runs a regular expression and a TypeDecorator per value (a sixth of an
    intake's reading); on PostgreSQL the driver's aware datetime, as it is."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value


# --- do-not-call -------------------------------------------------------------------------


def _dnc_out(e: DncEntry, withdrawn: int = 0) -> DncOut:
    return DncOut(
        id=e.id,
        phone=e.phone,
        reason=e.reason,
        source=e.source,
        added_by=e.added_by,
        added_at=e.added_at,
        lifted_at=e.lifted_at,
        lifted_by=e.lifted_by,
        lift_reason=e.lift_reason,
        withdrawn_calls=withdrawn,
    )


def _add_dnc(
    rt: Runtime, who: Identity, s: Session, phone: str, reason_: str, source: str, now: datetime
) -> DncEntry:
    entry = DncEntry(
        id=str(uuid.uuid4()),
        phone=phone,
        reason=reason_,
        source=source,
        added_by=who.key_id,
        added_at=now,
    )
    s.add(entry)
    audit.record(
        s,
        at=now,
        actor=who.actor,
        kind="dnc.added",
        subject=f"dnc:{entry.id}",
        policy_version=rt.policy_version,
        payload={"source": source},
    )
    return entry


def add_dnc(rt: Runtime, who: Identity, data: DncIn) -> DncOut:
    phone = normalise_phone(rt, data.phone)
    now = rt.clock.now()
    with rt.db.write() as s:
        lock_numbers(s, [phone], skip_locked=False)  # first: see dialer.withdraw
        entry = _add_dnc(rt, who, s, phone, data.reason, "manual", now)
        withdrawn = withdraw_number(
            s, phone, now, Code.DO_NOT_CALL, who.actor, rt.policy_version, except_call=None
        )
        return _dnc_out(entry, withdrawn)


def dnc_status(rt: Runtime, who: Identity, raw_phone: str) -> DncStatus:
    phone = normalise_phone(rt, raw_phone)
    now = rt.clock.now()
    with rt.db.write() as s:
        entries = list(
            s.scalars(select(DncEntry).where(DncEntry.phone == phone).order_by(DncEntry.added_at))
        )
        if entries:
            audit.record(
                s,
                at=now,
                actor=who.actor,
                kind="patient_data.read",
                subject="dnc",
                policy_version=rt.policy_version,
                payload={"dnc": [e.id for e in entries]},
            )
        return DncStatus(
            phone=phone,
            on_list=any(e.lifted_at is None for e in entries),
            entries=[_dnc_out(e) for e in entries],
        )


def lift_dnc(rt: Runtime, who: Identity, raw_phone: str, lift_reason: str) -> DncStatus:
    """Lift every active entry for the number (admin only); the rows stay, audited."""
    if who.role is not Role.admin:
        raise Forbidden("FORBIDDEN", "only an admin may lift a do-not-call entry")
    phone = normalise_phone(rt, raw_phone)
    now = rt.clock.now()
    with rt.db.write() as s:
        active = list(
            s.scalars(
                select(DncEntry).where(DncEntry.phone == phone, DncEntry.lifted_at.is_(None))
            )
        )
        if not active:
            raise NotFound("NOT_FOUND", "the number is not on the do-not-call list")
        for e in active:
            e.lifted_at, e.lifted_by, e.lift_reason = now, who.key_id, lift_reason
            audit.record(
                s,
                at=now,
                actor=who.actor,
                kind="dnc.lifted",
                subject=f"dnc:{e.id}",
                policy_version=rt.policy_version,
                payload={"reason": lift_reason},
            )
        entries = list(
            s.scalars(select(DncEntry).where(DncEntry.phone == phone).order_by(DncEntry.added_at))
        )
        return DncStatus(phone=phone, on_list=False, entries=[_dnc_out(e) for e in entries])


def dnc_numbers(s: Session, phone_list: Iterable[str]) -> set[str]:
    """Which of these numbers are on the do-not-call list now (set-based)."""
    wanted = sorted(set(phone_list))
    if not wanted:
        return set()
    conn = read_conn(s)
    dialect = conn.dialect.name
    q = _DNC_QUERIES.get(dialect)
    if q is None:
        q = _DNC_QUERIES[dialect] = select(DncEntry.phone).where(
            one_of_param(dialect, DncEntry.phone, "phones"), DncEntry.lifted_at.is_(None)
        )
    return set(conn.execute(q, {"phones": one_of_value(dialect, wanted)}).scalars())


_DNC_QUERIES: dict[str, Select[Any]] = {}
