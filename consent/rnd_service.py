"""Reassigned Numbers Database answers in, queries out (47 CFR 64.1200(m); API.md
"Reassigned numbers").

Import: the answers are read a chunk at a time (consent.rnd: bounded memory whatever the
file's size), checked, their numbers normalised, and each chunk is one unit of work that

* appends the new answers (a file loaded twice adds nothing: consent.rnd_store.add_answers);
* withdraws the queued and leased calls whose every covering consent the answers now
  invalidate (NUMBER_REASSIGNED: a ``yes`` for a date on or after the consent's date), as a
  revocation withdraws a number's calls (core.numbers.withdraw_calls): with the numbers'
  locks (core.numbers) taken first;
* returns to the queue the calls parked for REASSIGNED_CHECK_STALE of the numbers that got a
  ``no`` (the next lease decides them afresh; see dialer.rules.dispatch.STALE_RECHECK);
* writes one audit entry with the chunk's counts (no number in it).

Bad rows never fail the good ones: each is counted and the first MAX_ERRORS are listed (row,
field, message naming the field). An answer for a date before a consent's date decides
nothing for that consent (consent.rules.reassigned_terms).

Export: the numbers with a consent that counts (written or e-signed, not revoked, expired or
already found reassigned) and each such consent's date, for the RND's bulk query
(consent.rnd: the file format and what was assumed about it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import islice
from typing import IO, Any

import phonenumbers

from config.reasons import Code
from consent import phones, rnd, rnd_store
from consent import rules as consent_rules
from consent.store import facts_for
from core.keys import Identity
from core.numbers import lock_numbers, withdraw_calls
from core.runtime import Runtime
from core.uow import UnitOfWork

CHUNK = 2000  # answers per unit of work (SQLite: the write lock is held for one chunk)
MAX_ERRORS = 100
EXPORT_PAGE = 1000  # numbers per read of the export
# The RND holds US geographic and toll-free numbers (the US and its territories).
RND_REGIONS = frozenset({"US", "PR", "VI", "GU", "AS", "MP"})


@dataclass
class ImportResult:
    rows: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    withdrawn_calls: int = 0
    requeued_calls: int = 0
    errors: list[rnd.RowError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "stored": self.stored, "duplicates": self.duplicates,
            "invalid": self.invalid,
            "answers": {a: self.answers.get(a, 0) for a in rnd.ANSWERS},
            "withdrawn_calls": self.withdrawn_calls, "requeued_calls": self.requeued_calls,
            "errors": [e.as_dict() for e in self.errors],
            "errors_truncated": self.invalid > len(self.errors),
        }

    def _error(self, e: rnd.RowError) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(e)


def _chunks(rows: Iterable[tuple[int, Any]], n: int) -> Iterator[list[tuple[int, Any]]]:
    it = iter(rows)
    while part := list(islice(it, n)):
        yield part


def import_answers(
    rt: Runtime, who: Identity, rows: Iterable[tuple[int, Any]], *,
    progress: Callable[[int], None] | None = None, chunk: int = CHUNK,
) -> ImportResult:
    """Load RND answers (``rows``: numbered records, from consent.rnd.json_rows/csv_rows).
    A consent.rnd.FileError raised by the reader ends the import where it stands (each chunk
    before it is committed): check the file first (consent.rnd.check_json)."""
    result = ImportResult()
    region, allowed = rt.policy.default_region, tuple(rt.policy.allowed_regions)
    for part in _chunks(rows, chunk):
        now = rt.clock.now()
        good: dict[tuple[str, Any, Any, str], rnd.Answer] = {}
        for row, values in part:
            result.rows += 1
            v = rnd.validate(row, values, now)
            if isinstance(v, list):
                result.invalid += 1
                result._error(v[0])
                continue
            e164, _ = phones.check(v.phone, region, allowed)
            if e164 is None:
                result.invalid += 1
                result._error(rnd.RowError(row, "phone", "is not a valid, dialable number in "
                                                         "an allowed region"))
                continue
            result.answers[v.answer] += 1
            key = (e164, v.date, v.queried_at, v.answer)
            if key in good:
                result.duplicates += 1
            else:
                good[key] = v
        if good:
            with rt.write(who) as uow:
                _store(uow, good, result, part[0][0], part[-1][0])
        if progress is not None:
            progress(len(part))
    return result


def _store(uow: UnitOfWork, good: dict[tuple[str, Any, Any, str], rnd.Answer],
           result: ImportResult, first: int, last: int) -> None:
    s, now = uow.session, uow.now
    stored = rnd_store.add_answers(s, [
        {"phone": p, "date": d, "answer": a, "queried_at": q, "imported_at": now,
         "imported_by": uow.key_id}
        for p, d, q, a in good
    ])
    result.stored += stored
    result.duplicates += len(good) - stored
    yes = sorted({p for p, _, _, a in good if a == "yes"})
    no = sorted({p for p, _, _, a in good if a == "no"})
    withdrawn = withdraw_reassigned(uow, yes)
    requeued = rnd_store.requeue_stale(s, no, now)
    result.withdrawn_calls += withdrawn
    result.requeued_calls += requeued
    counts = Counter(a for _, _, _, a in good)
    uow.audit("reassigned.imported", "numbers", {
        "rows": [first, last], "stored": stored, "duplicates": len(good) - stored,
        "answers": {a: counts.get(a, 0) for a in rnd.ANSWERS},
        "withdrawn_calls": withdrawn, "requeued_calls": requeued,
    })


def withdraw_reassigned(uow: UnitOfWork, phone_list: list[str]) -> int:
    """Withdraw the pending calls of these numbers whose consent decision (with the answers
    now stored) fails with NUMBER_REASSIGNED; a call still covered by a consent obtained
    after the disconnection stays."""
    if not phone_list:
        return 0
    s, now = uow.session, uow.now
    lock_numbers(s, phone_list, skip_locked=False)  # first: see core.numbers
    pending = rnd_store.pending_calls(s, phone_list)
    if not pending:
        return 0
    hist = facts_for(s, {c.phone for c, _, _ in pending})
    gone = []
    for c, purpose, channel in pending:
        consents, revs = hist.get(c.phone, ([], []))
        d = consent_rules.decide(consents, revs, channel, purpose, now)
        if not d.allowed and d.reasons[0].code is Code.NUMBER_REASSIGNED:
            gone.append(c)
    return withdraw_calls(uow, gone, Code.NUMBER_REASSIGNED)


# --- export --------------------------------------------------------------------------------


@dataclass
class ExportResult:
    numbers: int = 0
    rows: int = 0
    files: int = 0
    skipped_not_us: int = 0
    skipped_reassigned: int = 0


@lru_cache(maxsize=65_536)
def _in_rnd(e164: str) -> bool:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return False
    return region in RND_REGIONS and rnd.national_number(e164) is not None


def _query_dates(
    consents: Iterable[consent_rules.ConsentFact],
    revocations: Iterable[consent_rules.RevocationFact], now: datetime,
) -> tuple[list[str], bool]:
    """The dates to ask about for one number (one per consent that counts), and whether a
    consent was left out as already found reassigned."""
    revoked_at = [r.received_at for r in revocations if r.received_at <= now]
    days: set[str] = set()
    reassigned = False
    for c in consents:
        if (c.obtained_at > now or c.method not in consent_rules.WRITTEN_METHODS
                or (c.expires_at is not None and c.expires_at <= now)
                or any(c.obtained_at <= r for r in revoked_at)):
            continue
        if c.reassigned:
            reassigned = True
            continue
        days.add(consent_rules.consent_day(c.obtained_at).isoformat())
    return sorted(days), reassigned


def export_queries(
    rt: Runtime, who: Identity, open_part: Callable[[int], IO[str]], *,
    pending_only: bool = False, progress: Callable[[int], None] | None = None,
    rows_per_file: int = rnd.QUERY_FILE_ROWS,
) -> ExportResult:
    """Write the RND query file(s): ``open_part(i)`` opens part i (1, 2, ...), a new one
    every ``rows_per_file`` rows. Pages of EXPORT_PAGE numbers, each in a read transaction
    of its own (bounded memory). The export of numbers is audited (counts only)."""
    out = ExportResult()
    writer: Any = None
    in_file = 0
    after = ""
    while True:
        with rt.read(who) as uow:
            page = rnd_store.consent_phones_after(uow.session, after, EXPORT_PAGE, pending_only)
            if not page:
                break
            hist = facts_for(uow.session, page)
            now = uow.now
        after = page[-1]
        for phone in page:
            consents, revs = hist.get(phone, ([], []))
            days, reassigned = _query_dates(consents, revs, now)
            out.skipped_reassigned += int(reassigned and not days)
            if not days:
                continue
            if not _in_rnd(phone):
                out.skipped_not_us += 1
                continue
            national = rnd.national_number(phone)
            out.numbers += 1
            for day in days:
                if writer is None or in_file >= rows_per_file:
                    out.files += 1
                    writer, in_file = rnd.query_writer(open_part(out.files)), 0
                writer.writerow((national, day))
                in_file += 1
                out.rows += 1
        if progress is not None:
            progress(len(page))
    with rt.write(who) as uow:
        uow.audit("patient_data.read", "numbers", {
            "view": "rnd.export", "numbers": out.numbers, "rows": out.rows,
            "files": out.files, "pending_only": pending_only,
        })
    return out


def count_numbers(rt: Runtime, who: Identity) -> int:
    with rt.read(who) as uow:
        return rnd_store.count_consent_phones(uow.session)
