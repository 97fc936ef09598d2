"""The Reassigned Numbers Database answers' statements (consent.rnd_service): the answers
appended, what they change in the queue, and the reads of ``callgate rnd export``.

Safe under concurrency: the import's unit of work takes the locks of the numbers found
reassigned (core.numbers.lock_numbers, PostgreSQL) before it locks their pending calls, as a
revocation does, so a lease committed before is seen and withdrawn, and a lease after it
reads the answers. The answers themselves are appended only (a unique index makes a file
loaded twice add nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from config.reasons import Code
from core.bulk import one_of, sqlite_datetime
from core.models import PENDING, Call, Campaign, Consent, ReassignedAnswer

_ADD = (
    "INSERT INTO reassigned_answers (phone, date, answer, queried_at, imported_at, "
    "imported_by) VALUES ({0}, {0}, {0}, {0}, {0}, {0}) ON CONFLICT DO NOTHING"
)
_SQLITE_ADD, _PG_ADD = _ADD.format("?"), _ADD.format("%s")


def add_answers(s: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Append answers, skipping any already stored (same number, date, query time and
    answer); returns how many were new. One executemany of INSERT ... ON CONFLICT DO NOTHING
    straight to the driver (both sum the rows inserted in ``rowcount``; SQLAlchemy's
    multi-row form for psycopg reports -1), each value bound as SQLAlchemy binds it (SQLite: a
    date as YYYY-MM-DD, an instant as core.bulk.sqlite_datetime; psycopg adapts both):
    through the ORM, the insert was 40 % of an import's time."""
    if not rows:
        return 0
    if s.get_bind().dialect.name == "postgresql":
        cur = s.connection().exec_driver_sql(_PG_ADD, [
            (r["phone"], r["date"], r["answer"], r["queried_at"], r["imported_at"],
             r["imported_by"]) for r in rows])
        return int(cur.rowcount)
    cur = s.connection().exec_driver_sql(_SQLITE_ADD, [
        (r["phone"], r["date"].isoformat(), r["answer"], sqlite_datetime(r["queried_at"]),
         sqlite_datetime(r["imported_at"]), r["imported_by"]) for r in rows])
    return int(cur.rowcount)


def pending_calls(s: Session, phone_list: Sequence[str]) -> list[tuple[Call, str, str]]:
    """The numbers' queued and leased calls with their campaign's purpose and channel; on
    PostgreSQL locked FOR UPDATE (the caller holds the numbers' locks)."""
    dialect = s.get_bind().dialect.name
    q = (
        select(Call, Campaign.purpose, Campaign.channel)
        .join(Campaign, Campaign.id == Call.campaign_id)
        .where(one_of(dialect, Call.phone, list(phone_list)), Call.status.in_(PENDING))
        .order_by(Call.id)
    )
    if dialect == "postgresql":
        q = q.with_for_update(of=Call)
    return [(c, purpose, channel) for c, purpose, channel in s.execute(q)]


def requeue_stale(s: Session, phone_list: Sequence[str], now: datetime) -> int:
    """Queued calls of these numbers parked for REASSIGNED_CHECK_STALE become due now: the
    next lease returns them to the queue order (dialer.queue.store.unpark_due) and decides
    them afresh with the new answers."""
    if not phone_list:
        return 0
    dialect = s.get_bind().dialect.name
    result = s.execute(
        update(Call)
        .where(one_of(dialect, Call.phone, list(phone_list)), Call.status == "queued",
               Call.parked.is_(True), Call.last_reason == Code.REASSIGNED_CHECK_STALE.value)
        .values(next_eligible_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- a number's answers, and the export ------------------------------------------------------


def answers_of(s: Session, phone: str) -> list[ReassignedAnswer]:
    return list(s.scalars(
        select(ReassignedAnswer).where(ReassignedAnswer.phone == phone)
        .order_by(ReassignedAnswer.queried_at, ReassignedAnswer.id)))


def consent_phones_after(s: Session, after: str, n: int, pending_only: bool) -> list[str]:
    """Up to ``n`` distinct numbers with a consent on file, in order, after ``after`` (a
    keyset page of the export); ``pending_only``: those with a queued or leased call."""
    q: Select[Any] = select(Consent.phone).where(Consent.phone > after)
    if pending_only:
        q = q.where(select(Call.id).where(Call.phone == Consent.phone,
                                          Call.status.in_(PENDING)).exists())
    q = q.group_by(Consent.phone).order_by(Consent.phone).limit(n)
    return list(s.scalars(q))


def count_consent_phones(s: Session) -> int:
    return int(s.scalar(select(func.count(func.distinct(Consent.phone)))) or 0)
