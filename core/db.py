"""One engine and session factory for the whole process.

SQLite (the embedded default) is set up for a concurrent server: ``busy_timeout`` first,
WAL, ``synchronous=NORMAL``, foreign keys on; and a unit of work that writes takes the
write lock up front with ``BEGIN IMMEDIATE``. pysqlite's own deferred BEGIN would let two
read-then-write transactions interleave and then fail with SQLITE_BUSY at the first write,
whatever the timeout. This is SQLAlchemy's documented recipe: autocommit at the DBAPI
level (``isolation_level = None``) and our own BEGIN on the ``begin`` event.

On PostgreSQL a write unit of work is an ordinary transaction; the services that need
serialisation take row locks (``FOR UPDATE``) or advisory locks themselves.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Engine,
    MetaData,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 16_384
SQLITE_AUTOCHECKPOINT_PAGES = 20_000  # 80 MB of WAL (SQLite's default: 1,000)
CHECKPOINT_RESTART_PAGES = 6_000  # Database.checkpoint: past this, catch up under the gate
CHECKPOINT_CATCH_UP_PAGES = 1_000  # ... if no more than this is left to copy
PG_POOL_SIZE = 20  # PostgreSQL: the engine's pool per process (SQLAlchemy's QueuePool) ...
PG_POOL_OVERFLOW = 20  # ... and the connections it may open beyond that under a burst
PG_LOOKUP_CONNECTIONS = 4  # PostgreSQL: alookup()'s connections per event loop

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike.

    SQLite keeps the naive UTC text (so ordering and comparison in SQL stay correct);
    PostgreSQL keeps ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; BEGIN is ours (below).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")  # first: the rest may wait
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        # 16 MiB of page cache per connection (the default is 2 MiB): the index pages a
        # bulk insert keeps touching stay in memory. Measured: inserting 100,000 calls into
        # a 100k-400k-row table alone, 64 MiB took 20% less time than 2 MiB; through the
        # server, 2/16/64 MiB were within run-to-run noise (11,210/10,949/11,632 rows/s)
        # and 64 MiB held 70 MB more. 16 MiB is the compromise.
        cur.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        # SQLite checkpoints the WAL into the database file inside the commit that takes it
        # past this many pages, with an fsync, while that writer still holds the write lock.
        # A served process checkpoints four times a second in the background instead
        # (Database.checkpoint, dialer/jobs.py); the threshold stays as the fallback.
        cur.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def private_sqlite_files(path: str | None) -> None:
    """An SQLite database file is created 0600 (it holds numbers, patient references, key
    and session hashes; with the usual umask SQLite made it 0644, issue 16), and an existing
    one, its WAL and shared-memory files lose any group or other access. SQLite gives the
    WAL and -shm files it creates the database file's own mode; the -writelock file is
    made 0600 by _sqlite_gate."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError:
        return  # a directory that does not exist, or no access: SQLite will say so
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal", f"{path}-writelock"):
        try:
            mode = os.stat(name).st_mode & 0o777
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
        except OSError:
            continue


def make_engine(url: str, **kwargs: Any) -> Engine:
    if is_sqlite(url):
        private_sqlite_files(make_url(url).database)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _setup_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if kwargs.get("poolclass") is not NullPool:
        # Every poller's request holds a connection for its whole unit of work: with 10, a
        # served process under 32 pollers spent a fifth of a lease waiting for a checkout.
        # docs/deployment.md: connections per instance.
        kwargs.setdefault("pool_size", PG_POOL_SIZE)
        kwargs.setdefault("max_overflow", PG_POOL_OVERFLOW)
    engine = create_engine(url, **kwargs)
    _setup_postgresql(engine)
    return engine


class TextList(list[str]):
    """PostgreSQL: a list of strings sent as one ``text[]`` parameter in the binary array
    format (core.bulk.one_of). psycopg sends a plain list of strings as array text, quoted
    and escaped value by value in Python: 1.8 ms for 2,000 numbers against 0.57 ms binary
    (measured, issue 21), and intake sends six such lists per chunk."""


def _setup_postgresql(engine: Engine) -> None:
    """Each new PostgreSQL connection: :class:`TextList` dumped by psycopg's own binary list
    dumper; and no JIT compilation. callgate's statements are short, and a plan whose
    estimate passed jit_above_cost (a list's chunks read against statistics of a calls
    table the list itself was filling) spent 90-290 ms compiling to run a 10 ms read
    (auto_explain, issue 21). A SET, not a startup ``options`` parameter: PgBouncer refuses
    ``-c`` options it does not track."""
    dumper = _text_list_dumper() if engine.dialect.driver == "psycopg" else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if dumper is not None:
            dbapi_connection.adapters.register_dumper(TextList, dumper)
        with dbapi_connection.cursor() as cur:
            cur.execute("SET jit = off")
        dbapi_connection.commit()


def _text_list_dumper() -> type:
    """psycopg's binary list dumper for ``str`` items, as the dumper of :class:`TextList`
    (psycopg imported here: a SQLite deployment never needs it)."""
    from psycopg.adapt import Dumper, PyFormat
    from psycopg.pq import Format
    from psycopg.types.array import ListBinaryDumper

    class TextListDumper(Dumper):
        format = Format.BINARY

        def __init__(self, cls: type, context: Any = None) -> None:
            super().__init__(cls, context)
            self._list = ListBinaryDumper(list, context).upgrade(["x"], PyFormat.BINARY)
            self.oid = self._list.oid

        def dump(self, obj: Any) -> Any:
            return self._list.dump(obj)

    return TextListDumper


# SQLite writers wait their turn on a lock of ours before BEGIN IMMEDIATE. A connection that
# finds the database's write lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 ... 100
# ms) however soon the lock is released; a thread waiting on a mutex, or a process waiting on
# flock(2), is woken the moment the holder lets go. One gate per database file: a mutex for
# the threads of this process, then an exclusive flock on "<file>-writelock" for the other
# processes serving the same file (``callgate serve --workers N``, CLI commands, jobs). The
# busy handler stays as the fallback for any writer that does not use this class.
_gates: dict[str, tuple[threading.Lock, int | None]] = {}
_gates_guard = threading.Lock()


def _forget_gates_after_fork() -> None:
    """A forked child must not use its parent's gates: a mutex a parent thread held at the
    fork stays held forever in the child, and the child's copy of a flock descriptor shares
    the parent's lock (flock belongs to the open file, which fork shares), so the child
    would think it held the gate. It makes its own on first use."""
    global _gates, _gates_guard
    for _mutex, fd in _gates.values():
        if fd is not None:
            os.close(fd)  # the child's reference only: the parent's lock is untouched
    _gates, _gates_guard = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_gates_after_fork)


def _sqlite_gate(url: str, path: str | None) -> tuple[threading.Lock, int | None]:
    with _gates_guard:
        gate = _gates.get(url)
        if gate is None:
            fd = None
            if path and path != ":memory:" and not path.startswith("file::memory:"):
                fd = os.open(f"{path}-writelock", os.O_RDWR | os.O_CREAT, 0o600)
            gate = _gates[url] = (threading.Lock(), fd)
        return gate


@contextmanager
def _gated(gate: tuple[threading.Lock, int | None]) -> Iterator[None]:
    mutex, fd = gate
    with mutex:
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


class Database:
    """The process's engine with two kinds of unit of work: ``read()`` and ``write()``."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        path = self.engine.url.database if self.dialect == "sqlite" else None
        self._write_engine: Engine | None = None
        write_engine = self.engine
        if self.dialect == "sqlite":
            if path and path != ":memory:" and not path.startswith("file::memory:"):
                # SQLite file: every write transaction of this process on one connection.
                # They take turns at the gate anyway, and a connection that finds the file
                # changed by another connection since its last transaction drops its whole
                # page cache: with a pool, each writer came to a cold cache (written by the
                # others) and read its index pages back from the OS. Measured: lease with
                # outcomes at 32 pollers, 795 -> 895 calls/s (docs/performance.md).
                self._write_engine = make_engine(url, **{**engine_kwargs, "poolclass": StaticPool})
                write_engine = self._write_engine
            write_engine = write_engine.execution_options(sqlite_begin="IMMEDIATE")
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)
        self._gate = (
            _sqlite_gate(url, self.engine.url.database) if self.dialect == "sqlite" else None
        )
        # SQLite file databases: one plain driver connection per thread for lookups
        # (lookup()), closed by dispose().
        self._lookup_path = path if path and path != ":memory:" else None
        self._lookups: dict[int, sqlite3.Connection] = {}
        self._lookups_lock = threading.Lock()
        # PostgreSQL: alookup()'s connections, per event loop (a connection belongs to one).
        self._apools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = (
            weakref.WeakKeyDictionary())

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self, rollback: bool = False) -> Iterator[Session]:
        """A transaction that holds the write lock from its first statement (SQLite).

        ``rollback=True`` runs the same unit of work and discards it (dry runs).
        On SQLite, writers take turns at the gate above first (not reentrant: a unit of
        work never opens another)."""
        if self._gate is not None:
            with _gated(self._gate), self._write_session(rollback) as session:
                yield session
            return
        with self._write_session(rollback) as session:
            yield session

    @contextmanager
    def _write_session(self, rollback: bool) -> Iterator[Session]:
        if not rollback:
            with self._write() as session, session.begin():
                yield session
            return
        with self._write() as session:
            session.begin()
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def checkpoint(self) -> int:
        """SQLite: copy the WAL into the database file, on a connection of its own (sqlite3
        lets other threads run while it works), and let the next writer start the WAL over
        from the top. Returns the WAL's length in pages before (0 elsewhere).

        SQLite itself checkpoints inside the commit that takes the WAL past
        SQLITE_AUTOCHECKPOINT_PAGES: it copies what is left and fsyncs the database file
        while that writer holds the write lock. Measured under 32 pollers leasing 1,000
        calls/s: a 33-83 ms commit every 0.7 s, the lease's whole p99. Here, first a PASSIVE
        checkpoint, which blocks no one (it copies what no reader still needs, and syncs);
        then, if the WAL is long, the same again holding the write gate (no writer of this
        database is in a transaction; it copies only the pages written meanwhile), so that
        every page is in the file: the next writer's BEGIN starts the WAL over, and the
        commits never reach SQLite's own threshold."""
        if self.dialect != "sqlite":
            return 0
        # The driver's connection: no BEGIN (a checkpoint inside a transaction cannot run).
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            for _ in range(5):  # again while writers keep adding (or a reader held some back)
                _busy, frames, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames - copied <= CHECKPOINT_CATCH_UP_PAGES:
                    break
            if (
                frames >= CHECKPOINT_RESTART_PAGES
                and frames - copied <= CHECKPOINT_CATCH_UP_PAGES
                and self._gate is not None
            ):
                self._flush_files()
                with _gated(self._gate):
                    cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            cur.close()
            return int(frames)
        finally:
            conn.close()

    def _flush_files(self) -> None:
        """fsync the WAL and the database file before the gated step: the checkpoint there
        syncs both again, but then has only what was written meanwhile to flush."""
        if self._lookup_path is None:  # in memory: no files
            return
        for path in (f"{self._lookup_path}-wal", self._lookup_path):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    @property
    def has_lookup(self) -> bool:
        """Whether :meth:`lookup` answers without the engine (a SQLite file)."""
        return self._lookup_path is not None

    def lookup(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One read-only statement (driver SQL) on this thread's own plain SQLite connection:
        no pool, no session, no transaction beyond the statement, which sees every commit
        made before it (WAL: it never waits for a writer). For per-request reads on the
        event loop's thread (an API key), where a session and a thread hand-off cost ten
        times the read."""
        assert self._lookup_path is not None, "lookup() needs a SQLite file database"
        key = threading.get_ident()
        conn = self._lookups.get(key)
        if conn is None:
            conn = sqlite3.connect(self._lookup_path, check_same_thread=False,
                                   isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            conn.execute("PRAGMA query_only = ON")
            with self._lookups_lock:
                self._lookups[key] = conn
        return conn.execute(sql, params).fetchall()

    @property
    def has_alookup(self) -> bool:
        """Whether :meth:`alookup` answers (PostgreSQL through psycopg)."""
        return self.dialect == "postgresql" and self.engine.dialect.driver == "psycopg"

    async def alookup(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """PostgreSQL: one read-only statement (psycopg SQL, ``%s`` placeholders) on the
        running event loop itself, on an autocommit connection of this loop's own (up to
        PG_LOOKUP_CONNECTIONS; a request waits for a free one), prepared on first use: no
        thread hand-off, no pool checkout, no BEGIN/COMMIT round trips. It sees every commit
        made before it. For per-request reads (an API key): run in the thread pool, the
        key's read was a sixth of a trivial request's time on PostgreSQL. A connection
        found broken is dropped and the statement tried once more on a new one."""
        import psycopg

        pool = self._alookup_pool()
        for attempt in (1, 2):
            conn = await pool.get()
            try:
                cur = await conn.execute(sql, params, prepare=True)
                rows = await cur.fetchall()
            except psycopg.OperationalError:
                gone = conn.closed or conn.broken  # before drop() closes it
                pool.drop(conn)
                if attempt == 2 or not gone:
                    raise
                continue
            except BaseException:
                pool.drop(conn)
                raise
            pool.put(conn)
            return list(rows)
        raise AssertionError("unreachable")

    def _alookup_pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        with self._lookups_lock:
            pool = self._apools.get(loop)
            if pool is None:
                conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
                    hide_password=False)
                pool = self._apools[loop] = _LoopPool(conninfo, PG_LOOKUP_CONNECTIONS)
            return pool

    def dispose(self) -> None:
        with self._lookups_lock:
            lookups, self._lookups = list(self._lookups.values()), {}
            apools = list(self._apools.values())
            self._apools = weakref.WeakKeyDictionary()
        for conn in lookups:
            conn.close()
        for apool in apools:
            apool.close()
        if self._write_engine is not None:
            self._write_engine.dispose()
        self.engine.dispose()

    def describe(self) -> str:
        """The URL with any password hidden, for start-up messages."""
        return self.engine.url.render_as_string(hide_password=True)


class _LoopPool:
    """Up to ``size`` psycopg async connections of one event loop (Database.alookup),
    opened on demand, autocommit. Used from that loop only: no locks beyond asyncio's."""

    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._permits = asyncio.Semaphore(size)  # one per connection open or being opened
        self._idle: list[Any] = []

    async def get(self) -> Any:
        import psycopg

        await self._permits.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, prepare_threshold=0)
        except BaseException:
            self._permits.release()
            raise

    def put(self, conn: Any) -> None:
        self._idle.append(conn)
        self._permits.release()

    def drop(self, conn: Any) -> None:
        try:
            conn.pgconn.finish()
        except Exception:  # already gone
            pass
        self._permits.release()

    def close(self) -> None:
        """From any thread, the loop maybe gone: the idle connections' sockets closed."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()
