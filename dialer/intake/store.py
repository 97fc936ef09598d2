"""Intake's statements: what a chunk of a list must know about the campaign's calls, and
the insert of its calls (SQLite straight to the driver, PostgreSQL through Core).

Safe under concurrency: on SQLite each chunk's transaction holds the write lock from its
first read, so no call can appear between the reads and the insert; on PostgreSQL two
concurrent submissions may both read "not there", and then the partial unique indexes (one
accepted call per external_id per campaign, one pending call per number per campaign)
reject the loser's insert, whose chunk is decided again against the winner's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import String, Table, TextClause, bindparam, select
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from core.bulk import TextArray, insert_rows, one_of, read_conn, sqlite_datetime
from core.models import ACCEPTED_SQL, PENDING_SQL, Call

CALLS = cast(Table, Call.__table__)


def custom_plans(s: Session) -> None:
    """PostgreSQL: psycopg prepares a statement on its fifth use, and PostgreSQL may then
    settle on a generic plan. Planned without the id list's size and with a campaign that
    was nearly empty at the last ANALYZE, the "already pending?" read became a nested loop
    re-reading the list for every call of the campaign: 20 s per chunk, measured. Custom
    plans cost well under a millisecond here. SET LOCAL ends with the chunk's transaction.

    And no sequential scans: a list's own chunks fill the calls table faster than autovacuum
    analyses it, and planned with the statistics of a nearly empty table, the "already
    pending?" read scanned every call (100 ms a chunk at 100,000 rows, growing with each
    chunk: pg_stat_statements, issue 21). Each read here has its index (the partial unique
    indexes on calls, the phone indexes of consents, revocations, do-not-call)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(sql_text("SET LOCAL plan_cache_mode = force_custom_plan; "
                           "SET LOCAL enable_seqscan = off"))


def existing(
    s: Session, campaign_id: str, ext_ids: Sequence[str], phone_list: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Which external ids already have an accepted call in the campaign, and which numbers
    a pending one: each with that call's id (a duplicate's answer names it)."""
    dialect = s.get_bind().dialect.name
    ext: dict[str, str] = {}
    pend: dict[str, str] = {}
    if dialect == "postgresql":
        if ext_ids:
            ext.update((e, i) for e, i in read_conn(s).execute(
                _PG_ACCEPTED, {"c": campaign_id, "l": ext_ids}))
        if phone_list:
            pend.update((p, i) for p, i in read_conn(s).execute(
                _PG_PENDING, {"c": campaign_id, "l": phone_list}))
        return ext, pend
    if ext_ids:
        ext.update(
            (e, i) for e, i in read_conn(s).execute(
                select(Call.external_id, Call.id).where(
                    Call.campaign_id == campaign_id,
                    sql_text(f"calls.{ACCEPTED_SQL}"),  # literal: see below
                    one_of(dialect, Call.external_id, ext_ids),
                )
            )
        )
    if phone_list:
        pend.update(
            (p, i) for p, i in read_conn(s).execute(
                select(Call.phone, Call.id).where(
                    Call.campaign_id == campaign_id,
                    # As SQL text, not bound parameters: only then can a planner match the
                    # partial index uq_calls_campaign_phone_pending (SQLite otherwise walked
                    # every call of the campaign through ix_calls_campaign_id, per chunk).
                    sql_text(f"calls.{PENDING_SQL}"),
                    one_of(dialect, Call.phone, phone_list),
                )
            )
        )
    return ext, pend


def pending_probe(table: str = "calls") -> TextClause:
    """PostgreSQL: for each number of the list, its calls through the phone index (a
    number has few calls, whatever the campaign's size), the campaign and the status
    compared after. ``OFFSET 0`` keeps those conditions out of the probe: the phone index
    is then the only index the probe can use, whatever the statistics say. Measured
    otherwise (issue 21): with the campaign inside, on a table not yet analysed the planner
    probed ``ix_calls_campaign_id`` and read every call of the campaign for each number
    (345 ms for 2,000 numbers against 1,000 calls); with the status inside, on statistics
    from the list's first chunk it walked the whole pending-calls index for each number
    (8.5 s for one chunk). ``table``: a test's copy of calls."""
    return sql_text(
        f"SELECT c.phone, c.id FROM unnest(CAST(:l AS TEXT[])) AS v(x) CROSS JOIN LATERAL ("
        f"SELECT t.phone, t.id, t.campaign_id, t.status FROM {table} AS t WHERE t.phone = v.x "
        f"OFFSET 0) AS c WHERE c.campaign_id = :c AND c.{PENDING_SQL}"
    ).bindparams(bindparam("l", type_=TextArray()), bindparam("c", type_=String))


# PostgreSQL: for each external id of the list, one probe of the campaign's partial unique
# index (``LIMIT 1`` keeps the planner from turning the probes into a join). As a join it
# was planned with the statistics of a calls table the list itself was filling faster than
# autovacuum analysed it: a scan of the campaign's calls, up to 550 ms a chunk (measured,
# issue 21). The index's predicate as literal text: only then can a planner match it.
_PG_ACCEPTED = sql_text(
    "SELECT c.external_id, c.id FROM unnest(CAST(:l AS TEXT[])) AS v(x) CROSS JOIN LATERAL ("
    "SELECT calls.external_id, calls.id FROM calls WHERE calls.campaign_id = :c "
    f"AND calls.external_id = v.x AND calls.{ACCEPTED_SQL} LIMIT 1) AS c"
).bindparams(bindparam("l", type_=TextArray()), bindparam("c", type_=String))
_PG_PENDING = pending_probe()


def sqlite_dt(value: datetime | None) -> str | None:
    return None if value is None else sqlite_datetime(value)


# The column order of the tuples intake builds for SQLite (dialer.intake.service).
CALL_COLUMNS = (
    "id", "campaign_id", "external_id", "patient_ref", "phone", "state", "postal_code",
    "priority", "not_before", "not_after", "status", "accepted", "next_eligible_at", "parked",
    "attempts",
    "candidate_zones", "last_reason", "lease_id", "lease_expires_at", "created_at",
    "updated_at", "created_by", "policy_version", "appointment_at", "sms_text",
)
assert set(CALL_COLUMNS) == {c.name for c in CALLS.columns}, "calls changed: update this"
_SQLITE_INSERT_CALLS = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
)


def insert_calls(s: Session, rows: Sequence[Any]) -> None:
    """The chunk's calls in one executemany: on SQLite tuples in CALL_COLUMNS order, bound
    as SQLAlchemy would bind them (a test compares the stored bytes); elsewhere dicts."""
    if not rows:
        return
    if s.get_bind().dialect.name == "sqlite":
        s.connection().exec_driver_sql(_SQLITE_INSERT_CALLS, list(rows))
    else:
        insert_rows(s, CALLS, rows)  # PostgreSQL: COPY (core.bulk.copy_rows)
