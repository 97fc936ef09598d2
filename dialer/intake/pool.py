"""A helper process that parses call-list rows while the server process decides and stores
the rows parsed before (two cores: phone validation runs beside the database work).

Parsing a row (``dialer.intake.parse_chunk``: fields, dates, ``phonenumbers``, the candidate
zones) needs nothing from the database, and is about half of an intake's CPU. The helper is
a ``spawn``-ed process (never ``fork``: the server has threads), started once per server
process and kept; its answers are exactly those of the same code run here, in order. If the
helper dies, the chunk is parsed here and a new helper is started for the next list.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dialer.intake.parse import CsvSlice, Row

log = logging.getLogger("callgate.intake")

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()
# Chunks handed to the helper ahead of the one being decided: enough to keep it busy while
# this process works, few enough that parsed rows do not pile up in memory.
AHEAD = 2


def _exit_with_parent(parent: int) -> None:
    """Runs in a helper: end it when the process that started it is gone (killed with -9,
    say), instead of lingering as an orphan holding ~180 MB."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def helper_pool() -> ProcessPoolExecutor:
    """A one-process ``spawn`` pool whose process ends with this one."""
    return ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent, initargs=(os.getpid(),),
    )


def _warm() -> int:
    """Run in the helper at start: import and exercise the parsing code once."""
    from dialer.intake.parse import parse_chunk

    # A postal code too: the zipcodes package loads its data (~0.4 s) on first use.
    return len(parse_chunk(1, [{"external_id": "w", "phone": "+1 314 555 0100",
                                "postal_code": "63110"}], "US", ("US",)))


def pool() -> ProcessPoolExecutor:
    """The helper, started on first use (or by :func:`start` when a server boots)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = helper_pool()
            _pool.submit(_warm)
        return _pool


def start() -> None:
    """Start the helper now, so that the first large list does not wait for it."""
    pool()


def _discard(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def parse_in_helper(
    chunks: Iterable[list[Any] | CsvSlice],
    default_region: str,
    regions: tuple[str, ...],
    columns: Sequence[str] | None = None,
) -> Iterator[list[Row]]:
    """Each chunk of records parsed, in order, ``AHEAD`` chunks ahead. Rows are numbered on
    from the chunks before (the helper numbers a chunk from 1: how many rows a
    :class:`~dialer.intake.CsvSlice` holds is known only once it is read)."""
    from dialer.intake.parse import Packed, parse_chunk, parse_chunk_packed, unpack

    executor: ProcessPoolExecutor | None = pool()
    pending: deque[tuple[list[Any] | CsvSlice, Future[Packed] | None]] = deque()
    done = 0  # rows taken so far

    def take() -> list[Row]:
        nonlocal executor, done
        recs, fut = pending.popleft()
        rows: list[Row] | None = None
        if fut is not None:
            try:
                rows = unpack(fut.result(), done)
            except BrokenProcessPool:
                log.error("intake helper process died; parsing the rest of the list here")
                if executor is not None:
                    _discard(executor)
                executor = None
        if rows is None:
            rows = parse_chunk(done + 1, recs, default_region, regions, columns)
        done += len(rows)
        return rows

    for recs in chunks:
        fut: Future[Packed] | None = None
        if executor is not None:
            try:
                fut = executor.submit(parse_chunk_packed, 1, recs, default_region, regions,
                                      columns)
            except BrokenProcessPool:
                _discard(executor)
                executor = None
        pending.append((recs, fut))
        if len(pending) > AHEAD:
            yield take()
    while pending:
        yield take()
