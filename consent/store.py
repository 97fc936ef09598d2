"""The consent registry's statements: set-based reads for intake and dispatch (many numbers
in one query each, the list as one parameter), and a number's own records.

Reads only: every write of the registry happens in consent.service's unit of work. Safe
under concurrency because callers read inside their own transaction (SQLite: the write
lock; PostgreSQL: after taking the numbers' locks, core.numbers.lock_numbers), so a
revocation committed before the lock is seen and one committed after waits for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Text, cast, insert, or_, select, type_coerce
from sqlalchemy.orm import Session

from consent.rules import AnswerFact, ConsentFact, RevocationFact, reassigned_terms
from core.bulk import one_of_param, one_of_value, read_conn
from core.models import Consent, DncEntry, ReassignedAnswer, Revocation

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


_FACTS_QUERIES: dict[str, tuple[Any, Any, Any]] = {}


def _facts_queries(dialect: str) -> tuple[Any, Any, Any]:
    """:func:`facts_for`'s three statements for this dialect, built once: the JSON lists as
    text (as stored on SQLite; cast on PostgreSQL, whose driver would decode every row's: a
    tenth of an intake's deciding, issue 21), decoded once per distinct list by _frozen;
    SQLite's datetimes as stored too, for _when."""
    out = _FACTS_QUERIES.get(dialect)
    if out is None:
        as_text = dialect == "sqlite"
        channels, purposes = (
            type_coerce(c, Text) if as_text else cast(c, Text)
            for c in (Consent.channels, Consent.purposes)
        )
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
                channels,
                purposes,
                obtained,
                expires,
                Consent.supersedes_id,
                Consent.recording,
            ).where(one_of_param(dialect, Consent.phone, "phones")),
            select(Revocation.phone, received, recorded).where(
                one_of_param(dialect, Revocation.phone, "phones")
            ),
            # Reassigned Numbers Database answers that decide something (no_data never does).
            select(ReassignedAnswer.phone, ReassignedAnswer.date, ReassignedAnswer.answer,
                   ReassignedAnswer.queried_at).where(
                one_of_param(dialect, ReassignedAnswer.phone, "phones"),
                ReassignedAnswer.answer.in_(("yes", "no")),
            ),
        )
        _FACTS_QUERIES[dialect] = out
    return out


def facts_for(
    s: Session, phone_list: Iterable[str]
) -> dict[str, tuple[list[ConsentFact], list[RevocationFact]]]:
    """Consent history for many numbers in three queries (set-based, for intake and dispatch):
    each consent with what the number's Reassigned Numbers Database answers say about it."""
    wanted = sorted(set(phone_list))
    out: dict[str, tuple[list[ConsentFact], list[RevocationFact]]] = {}
    if not wanted:
        return out
    # Through the session's connection: a plain column select needs none of the ORM's result
    # machinery (a third of this function's time at intake); the list is one parameter, and
    # the statements are built once per dialect.
    conn = read_conn(s)
    dialect = conn.dialect.name
    consents_q, revocations_q, answers_q = _facts_queries(dialect)
    wanted_value = one_of_value(dialect, wanted)
    rows = conn.execute(consents_q, {"phones": wanted_value}).all()
    answers: dict[str, list[AnswerFact]] = {}
    for phone, day, answer, queried_at in conn.execute(answers_q, {"phones": wanted_value}):
        answers.setdefault(phone, []).append(AnswerFact(day, answer, queried_at))
    superseded = {r[7] for r in rows if r[7]}
    for cid, phone, method, chans, purps, at, until, _, recording in rows:
        if cid not in superseded:
            obtained = _when(at)
            reassigned, checked = (
                reassigned_terms(obtained, answers[phone]) if phone in answers else (False, None)
            )
            _history(out, phone)[0].append(ConsentFact(
                cid, method, _frozen(chans), _frozen(purps), obtained,
                None if until is None else _when(until), bool(recording), reassigned, checked,
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


# --- a number's own records ----------------------------------------------------------------


def consents_of(s: Session, phone: str) -> list[Consent]:
    return list(s.scalars(select(Consent).where(Consent.phone == phone)
                          .order_by(Consent.obtained_at)))


def revocations_of(s: Session, phone: str) -> list[Revocation]:
    return list(s.scalars(select(Revocation).where(Revocation.phone == phone)
                          .order_by(Revocation.received_at)))


def dnc_entries_of(s: Session, phone: str) -> list[DncEntry]:
    return list(s.scalars(select(DncEntry).where(DncEntry.phone == phone)
                          .order_by(DncEntry.added_at)))


def revoked_by(s: Session, phone: str, at: datetime) -> bool:
    """Whether a revocation of the number was received or recorded by ``at``."""
    found = s.scalars(
        select(Revocation.id)
        .where(Revocation.phone == phone,
               or_(Revocation.received_at <= at, Revocation.recorded_at <= at))
        .limit(1)
    ).first()
    return found is not None


def add_consents(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Many consents in one executemany (a bulk import)."""
    s.execute(insert(Consent), list(rows))
