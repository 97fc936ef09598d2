"""The one driver-level path for bulk reads and writes, on SQLite and PostgreSQL alike.

``insert_rows`` / ``update_rows`` send many rows in one ``executemany`` (on SQLite straight
to the driver, each value bound exactly as SQLAlchemy would bind it: tests compare the
stored bytes); ``one_of`` passes a whole list as one parameter; ``read_conn`` is a session's
connection for plain column reads that still see the unit of work's own writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Select,
    String,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from core.db import UTCDateTime


def one_of(dialect: str, col: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``col IN values`` with the whole list as one bound parameter.

    A list of thousands would otherwise be thousands of bind parameters, each rendered and
    processed by SQLAlchemy (most of the cost of these reads at intake). SQLite reads a JSON
    array with ``json_each``; PostgreSQL unnests a ``text[]``. Either way the list is a set
    the planner joins against (index probes or a hash), never ``= ANY(array)`` as a row
    filter: in a generic plan of a prepared statement that is a linear search of the array
    for every row, quadratic in the list's size.
    """
    return _in_list(dialect, col, bindparam(None, one_of_value(dialect, values),
                                            type_=_list_type(dialect)))


def one_of_param(dialect: str, col: Any, name: str) -> ColumnElement[bool]:
    """:func:`one_of` with the list as the named parameter ``name``, for a statement built
    once and executed many times (pass :func:`one_of_value` of the list)."""
    return _in_list(dialect, col, bindparam(name, type_=_list_type(dialect)))


def one_of_value(dialect: str, values: Iterable[str]) -> Any:
    """The value of :func:`one_of_param`'s parameter for this list."""
    return list(values) if dialect == "postgresql" else json.dumps(list(values))


def _list_type(dialect: str) -> Any:
    return ARRAY(String) if dialect == "postgresql" else String()


def _in_list(dialect: str, col: Any, param: Any) -> ColumnElement[bool]:
    listed: Select[Any]
    if dialect == "postgresql":
        listed = select(func.unnest(param))
    else:
        listed = select(literal_column("value", String)).select_from(func.json_each(param))
    result: ColumnElement[bool] = col.in_(listed.scalar_subquery())
    return result


def sqlite_datetime(value: datetime) -> str:
    """An aware datetime as SQLAlchemy binds a ``UTCDateTime`` on SQLite (naive UTC text)."""
    d = value.astimezone(UTC)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
            f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}")


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``INSERT`` of many rows with the same keys, in one ``executemany``. On SQLite straight
    to the driver, each value bound exactly as SQLAlchemy would bind it (``UTCDateTime`` as
    naive UTC text, ``JSON`` as ``json.dumps``; tests compare the stored bytes): its
    per-value processing costs more than SQLite's insert for a bulk write. Elsewhere, Core."""
    if not rows:
        return
    if session.get_bind().dialect.name != "sqlite":
        session.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
           f"VALUES ({', '.join('?' for _ in names)})")
    session.connection().exec_driver_sql(sql, _driver_values(table, names, rows))


def update_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``UPDATE table SET ... WHERE id = :b_id`` for many rows with the same keys (``b_id``
    and the columns to set), in one ``executemany``; on SQLite straight to the driver, bound
    as :func:`insert_rows` binds. Elsewhere, Core."""
    if not rows:
        return
    if session.get_bind().dialect.name != "sqlite":
        session.execute(update(table).where(table.c.id == bindparam("b_id")), list(rows))
        return
    names = [n for n in rows[0] if n != "b_id"]
    sql = (f"UPDATE {table.name} SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?")
    session.connection().exec_driver_sql(
        sql, _driver_values(table, [*names, "b_id"], rows, {"b_id": "id"}))


def _driver_values(
    table: Table, names: Sequence[str], rows: Sequence[dict[str, Any]],
    columns: dict[str, str] | None = None,
) -> list[tuple[Any, ...]]:
    """The rows' values in ``names`` order, each bound as SQLAlchemy binds it on SQLite
    (``columns`` maps a parameter name to its column where they differ)."""
    memo: dict[Any, str] = {}  # most datetimes are one instant; JSON values are shared lists

    def as_datetime(v: Any) -> Any:
        if v is None:
            return None
        out = memo.get(v)
        if out is None:
            out = memo[v] = sqlite_datetime(v)
        return out

    def as_json(v: Any) -> Any:
        if v is None:
            return None
        out = memo.get(id(v))  # the rows keep v alive, so its id is not reused meanwhile
        if out is None:
            out = memo[id(v)] = json.dumps(v)
        return out

    cols = [table.c[(columns or {}).get(n, n)] for n in names]
    convert = [
        (i, as_datetime if isinstance(c.type, UTCDateTime) else as_json)
        for i, c in enumerate(cols) if isinstance(c.type, (UTCDateTime, JSON))
    ]
    values = []
    for r in rows:
        row = [r[n] for n in names]
        for i, fn in convert:
            row[i] = fn(row[i])
        values.append(tuple(row))
    return values


def read_conn(s: Session) -> Connection:
    """The session's connection for a plain column read, after flushing pending ORM changes
    (as ``Session.execute`` would autoflush): the read sees this unit of work's writes."""
    if s.new or s.dirty or s.deleted:
        s.flush()
    return s.connection()
