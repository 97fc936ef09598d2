"""Consent registry and do-not-call operations: load, decide, write with the audit entry in
one unit of work. Revocations and do-not-call additions withdraw the number's pending calls
in the same transaction (PRODUCT.md 2 and 6: honoured immediately)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from config.errors import Forbidden, Invalid, NotFound
from config.reasons import Code
from consent import phones, store
from consent.rules import WRITTEN_METHODS
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
from core.keys import Identity, Role
from core.models import Consent, DncEntry, Revocation
from core.numbers import lock_numbers, withdraw_number
from core.runtime import Runtime
from core.uow import UnitOfWork


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
        recording=bool(c.recording),
        status=status,
    )


def _revocation_out(
    r: Revocation, consents: Sequence[Consent], revs: Sequence[Revocation], withdrawn: int = 0,
    newest: bool = False,
) -> RevocationOut:
    """``consents`` and ``revs``: the number's. ``r`` revoked the consents obtained at or
    before it took effect that no other revocation had ended before it (the first one
    effective after a consent ends it; on a tie, the one recorded first, or any other when
    ``r`` was just recorded); it left active the consents obtained after it."""
    eff = _effective(r)

    def before_r(o: Revocation) -> bool:
        e = _effective(o)
        if e != eff:
            return e < eff
        return newest or (o.recorded_at, o.id) < (r.recorded_at, r.id)

    others = [_effective(o) for o in revs if o.id != r.id and before_r(o)]
    revoked = [c.id for c in consents if c.obtained_at <= eff
               and not any(c.obtained_at <= e for e in others)]
    later = [c.id for c in consents if c.obtained_at > eff]
    return RevocationOut(
        id=r.id,
        phone=r.phone,
        source=r.source,
        received_at=r.received_at,
        recorded_at=r.recorded_at,
        recorded_by=r.recorded_by,
        withdrawn_calls=withdrawn,
        revoked_consents=revoked,
        consents_left_active=later,
    )


# How far back a revocation's received_at may go: records older than the retention period
# are gone, and an older date is a typo (year 1 was accepted, issue 16). Ahead of the clock,
# only this much skew (a received_at within it is taken as now).
CLOCK_SKEW = timedelta(minutes=5)


def check_received_at(rt: Runtime, received_at: datetime | None, now: datetime) -> datetime:
    """A revocation's received_at: refused in the future (beyond CLOCK_SKEW) or before the
    retention period; None is now."""
    if received_at is None:
        return now
    if received_at > now + CLOCK_SKEW:
        raise Invalid("VALIDATION_ERROR", "received_at is in the future",
                      [{"field": "body.received_at", "message": "must not be in the future"}])
    oldest = now - timedelta(days=rt.settings.retention_days)
    if received_at < oldest:
        raise Invalid(
            "VALIDATION_ERROR",
            f"received_at is more than {rt.settings.retention_days} days ago (the retention "
            "period): check the date",
            [{"field": "body.received_at", "message": "before the retention period"}],
        )
    return min(received_at, now)


def _check_consent(rt: Runtime, data: ConsentIn) -> None:
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


def record_consent(rt: Runtime, who: Identity, data: ConsentIn) -> ConsentOut:
    phone = normalise_phone(rt, data.phone)
    _check_consent(rt, data)
    with rt.write(who) as uow:
        s, now = uow.session, uow.now
        if data.obtained_at > now:
            raise Invalid(
                "VALIDATION_ERROR",
                "obtained_at is in the future",
                [{"field": "body.obtained_at", "message": "must not be in the future"}],
            )
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
        re_consent = store.revoked_by(s, phone, data.obtained_at)
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
            recording=data.recording,
        )
        s.add(row)
        uow.audit("consent.recorded", f"consent:{row.id}", {
            "method": row.method,
            "channels": row.channels,
            "purposes": row.purposes,
            "obtained_at": row.obtained_at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "re_consent_after_revocation": re_consent,
            "supersedes": row.supersedes_id,
            "recording": row.recording,
        })
        uow.emit("consent.created", _consent_event(row.id, phone, data), phone=phone)
        return _consent_out(row, _status(row, store.revocations_of(s, phone), now))


def _consent_event(consent_id: str, phone: str, data: ConsentIn) -> dict[str, object]:
    """A ``consent.created`` event's data: no patient reference, the number masked (API.md
    lets only revocation and do-not-call events carry it)."""
    return {
        "consent_id": consent_id, "phone_masked": phones.mask(phone),
        "channels": list(data.channels), "purposes": list(data.purposes),
        "method": data.method, "obtained_at": data.obtained_at.isoformat(),
        "expires_at": data.expires_at.isoformat() if data.expires_at else None,
        "recording": data.recording,
    }


def import_consents(
    rt: Runtime, who: Identity, items: Sequence[ConsentIn],
    progress: Callable[[int], None] | None = None, batch: int = 1000,
) -> int:
    """Load consents an organisation already holds, in bulk: each checked as
    :func:`record_consent` checks it and recorded with its ``consent.recorded`` audit entry
    (marked ``imported``), ``batch`` per unit of work. Returns how many."""
    for data in items:
        _check_consent(rt, data)
    phone_of = [normalise_phone(rt, d.phone) for d in items]
    for i in range(0, len(items), batch):
        part = list(zip(items[i:i + batch], phone_of[i:i + batch], strict=True))
        with rt.write(who) as uow:
            rows = []
            for data, phone in part:
                if data.obtained_at > uow.now:
                    raise Invalid(
                        "VALIDATION_ERROR", "obtained_at is in the future",
                        [{"field": "body.obtained_at", "message": "must not be in the future"}],
                    )
                row = {
                    "id": str(uuid.uuid4()), "phone": phone,
                    "patient_ref": data.patient_ref, "channels": list(data.channels),
                    "purposes": list(data.purposes), "method": data.method,
                    "obtained_at": data.obtained_at, "evidence_ref": data.evidence_ref,
                    "expires_at": data.expires_at, "recorded_by": who.key_id,
                    "recorded_at": uow.now, "supersedes_id": None,
                    "recording": data.recording,
                }
                rows.append(row)
                uow.audit("consent.recorded", f"consent:{row['id']}", {
                    "method": data.method, "channels": row["channels"],
                    "purposes": row["purposes"], "obtained_at": data.obtained_at.isoformat(),
                    "expires_at": data.expires_at.isoformat() if data.expires_at else None,
                    "re_consent_after_revocation": False, "supersedes": None,
                    "recording": data.recording, "imported": True,
                })
                uow.emit("consent.created", _consent_event(str(row["id"]), phone, data),
                         phone=phone)
            store.add_consents(uow.session, rows)
        if progress is not None:
            progress(len(part))
    return len(items)


def revoke(rt: Runtime, who: Identity, data: RevocationIn) -> RevocationOut:
    """Revoke every consent for the number, put it on do-not-call, withdraw its calls."""
    phone = normalise_phone(rt, data.phone)
    with rt.write(who) as uow:
        received_at = check_received_at(rt, data.received_at, uow.now)
        return _revoke(uow, phone, data.source, received_at, None)


def revoke_in_session(
    uow: UnitOfWork, phone: str, source: str, received_at: datetime, call_id: str | None = None,
    withdraw_call: bool = False,
) -> RevocationOut:
    """A revocation taken on a call (opt-out, wrong number), inside the outcome's unit of
    work; the call itself is left to the outcome (unless ``withdraw_call``: a late outcome
    does not decide its call's state), every other pending call is withdrawn."""
    return _revoke(uow, phone, source, received_at, call_id,
                   except_call=None if withdraw_call else call_id)


def _revoke(
    uow: UnitOfWork,
    phone: str,
    source: str,
    received_at: datetime | None,
    call_id: str | None,
    except_call: str | None = None,
) -> RevocationOut:
    s, now = uow.session, uow.now
    lock_numbers(s, [phone], skip_locked=False)  # first: see core.numbers
    row = Revocation(
        id=str(uuid.uuid4()),
        phone=phone,
        source=source,
        received_at=received_at or now,
        recorded_at=now,
        recorded_by=uow.key_id,
        call_id=call_id,
    )
    s.add(row)
    s.flush()
    out = _revocation_out(row, store.consents_of(s, phone), store.revocations_of(s, phone),
                          newest=True)
    uow.audit("consent.revoked", f"revocation:{row.id}", {
        "source": source, "received_at": row.received_at.isoformat(), "call": call_id,
        "revoked_consents": out.revoked_consents,
        "consents_left_active": out.consents_left_active,
    })
    _add_dnc(uow, phone, f"consent revoked ({source})", source)
    out.withdrawn_calls = withdraw_number(uow, phone, Code.CONSENT_REVOKED,
                                          except_call=except_call)
    # Every revocation path comes here (API, opt-out or wrong number on a call, texts).
    uow.emit("consent.revoked", {
        "revocation_id": row.id, "phone": phone, "source": source,
        "received_at": row.received_at.isoformat(), "recorded_at": now.isoformat(),
        "call_id": call_id, "revoked_consents": out.revoked_consents,
        "withdrawn_calls": out.withdrawn_calls,
    }, phone=phone)
    return out


def history(rt: Runtime, who: Identity, raw_phone: str, via: str = "GET /v1/consents"
            ) -> ConsentHistory:
    """A number's consents and revocations (patient data: the read is audited, naming the
    number by pseudonym, found or not)."""
    phone = normalise_phone(rt, raw_phone)
    with rt.write(who) as uow:
        s, now = uow.session, uow.now
        consents = store.consents_of(s, phone)
        revs = store.revocations_of(s, phone)
        superseded = {c.supersedes_id for c in consents if c.supersedes_id}
        out = ConsentHistory(
            phone=phone,
            consents=[
                _consent_out(c, "superseded" if c.id in superseded else _status(c, revs, now))
                for c in consents
            ],
            revocations=[_revocation_out(r, consents, revs) for r in revs],
        )
        uow.audit("patient_data.read", "consents", {
            "via": via,
            "consents": [c.id for c in consents],
            "revocations": [r.id for r in revs],
        }, phones=[phone])
        return out


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


def _add_dnc(uow: UnitOfWork, phone: str, reason_: str, source: str) -> DncEntry:
    entry = DncEntry(
        id=str(uuid.uuid4()),
        phone=phone,
        reason=reason_,
        source=source,
        added_by=uow.key_id,
        added_at=uow.now,
    )
    uow.session.add(entry)
    uow.audit("dnc.added", f"dnc:{entry.id}", {"source": source})
    # The reason is free text (it may name anything): the event carries the source only.
    uow.emit("dnc.added", {"dnc_id": entry.id, "phone": phone, "source": source,
                           "added_at": uow.now.isoformat()}, phone=phone)
    return entry


def add_dnc(rt: Runtime, who: Identity, data: DncIn) -> DncOut:
    phone = normalise_phone(rt, data.phone)
    with rt.write(who) as uow:
        lock_numbers(uow.session, [phone], skip_locked=False)  # first: see core.numbers
        entry = _add_dnc(uow, phone, data.reason, "manual")
        withdrawn = withdraw_number(uow, phone, Code.DO_NOT_CALL, except_call=None)
        return _dnc_out(entry, withdrawn)


def dnc_status(rt: Runtime, who: Identity, raw_phone: str, via: str = "GET /v1/dnc/{phone}"
               ) -> DncStatus:
    """Whether a number is on the do-not-call list. The read is audited whether or not it
    is (that a number is not on the list is patient data too)."""
    phone = normalise_phone(rt, raw_phone)
    with rt.write(who) as uow:
        entries = store.dnc_entries_of(uow.session, phone)
        uow.audit("patient_data.read", "dnc", {
            "via": via, "dnc": [e.id for e in entries],
            "on_list": any(e.lifted_at is None for e in entries),
        }, phones=[phone])
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
    with rt.write(who) as uow:
        active = [e for e in store.dnc_entries_of(uow.session, phone) if e.lifted_at is None]
        if not active:
            raise NotFound("NOT_FOUND", "the number is not on the do-not-call list")
        for e in active:
            e.lifted_at, e.lifted_by, e.lift_reason = uow.now, who.key_id, lift_reason
            uow.audit("dnc.lifted", f"dnc:{e.id}", {"reason": lift_reason})
            uow.emit("dnc.lifted", {"dnc_id": e.id, "phone": phone,
                                    "lifted_at": uow.now.isoformat()}, phone=phone)
        entries = store.dnc_entries_of(uow.session, phone)
        return DncStatus(phone=phone, on_list=False, entries=[_dnc_out(e) for e in entries])
