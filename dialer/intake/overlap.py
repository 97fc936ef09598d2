"""Two chunks of a list at once (PostgreSQL): while one chunk's rows are copied in and its
transaction commits, the next chunk is read and decided.

Serially, a chunk's database work (its reads, the ``COPY`` of its calls, the commit) and
the server's deciding took turns: on PostgreSQL about half of a 100,000-row list's time
was each (issue 21). Here each chunk is a unit of work in a worker thread of its own; the
next unit starts as soon as the one before has *decided* (its acceptances are known, so
duplicates across chunks are still found in memory), and each unit *commits* only after
the one before it committed: chunks commit in input order, and a chunk whose predecessor
failed rolls back (:class:`EarlierFailed`). At most two units are in flight.

SQLite has one writer at a time: there, chunks run one after the other (the caller's
choice).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

C = TypeVar("C")  # a chunk with what it needs (caller's type)
R = TypeVar("R")  # what a committed chunk answers

# A unit: runs one chunk's unit of work. It calls ``decided()`` once the chunk's decisions
# are known (before its writes), and ``wait_for(before)`` just before it commits.
Unit = Callable[[C, Callable[[], None], Future[Any] | None], R]


class EarlierFailed(Exception):
    """The chunk before this one failed: this one rolled back, undone."""


def wait_for(before: Future[Any] | None) -> None:
    """In a unit, before it commits: until the chunk before it has committed. Raises
    :class:`EarlierFailed` (rolling this unit back) if that chunk failed."""
    if before is None:
        return
    try:
        before.result()
    except BaseException as exc:
        raise EarlierFailed from exc


def overlapped(
    chunks: Iterator[C],
    unit: Unit[C, R],
    decided: Callable[[C], None],
    committed: Callable[[C, R], None],
    retry_on: type[BaseException],
) -> list[C]:
    """Run ``unit`` for each chunk, two at a time. ``decided(chunk)`` runs here (the
    calling thread) once the chunk has decided, before the next chunk starts;
    ``committed(chunk, result)`` here, in input order, once it committed.

    A chunk failing with ``retry_on`` stops the overlap: the chunks from it on that did
    not commit are returned, in order (the rest of ``chunks`` is left unread), for the
    caller to do one at a time. Any other failure is raised once every unit in flight
    has ended (those after it rolled back); chunks before it stay committed, as they would
    one after the other."""
    flight: deque[tuple[C, Future[R]]] = deque()
    with ThreadPoolExecutor(2, thread_name_prefix="intake-chunk") as pool:

        def settle() -> list[C] | None:
            """The oldest unit's end: None if it committed, else the chunks to redo."""
            chunk, fut = flight.popleft()
            try:
                result = fut.result()
            except retry_on:
                left = [chunk]
                for c, f in flight:
                    _ended(f)
                    left.append(c)
                flight.clear()
                return left
            except BaseException:
                for _, f in flight:
                    _ended(f)
                raise
            committed(chunk, result)
            return None

        for chunk in chunks:
            if len(flight) == 2:
                left = settle()
                if left is not None:
                    return [*left, chunk]  # this one was read, not started
            ready = threading.Event()
            before = flight[-1][1] if flight else None
            flight.append((chunk, pool.submit(_run, unit, chunk, ready, before)))
            ready.wait()
            decided(chunk)
        while flight:
            left = settle()
            if left is not None:
                return left
    return []


def _run(unit: Unit[C, R], chunk: C, ready: threading.Event, before: Future[Any] | None) -> R:
    try:
        return unit(chunk, ready.set, before)
    finally:
        ready.set()  # a unit that failed before deciding must not leave the caller waiting


def _ended(fut: Future[Any]) -> None:
    """Wait for a unit to end, whatever its outcome (a later unit of a failed one rolls
    back with EarlierFailed)."""
    try:
        fut.result()
    except BaseException:  # its failure is the earlier one's, reported by the caller
        pass
