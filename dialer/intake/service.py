"""Call-list intake: one answer per row, in input order; bad rows never fail good ones.

Work is set-based per chunk of rows: one query each for existing external ids, numbers
already pending in the campaign, consent history and do-not-call, then bulk inserts of the
calls and the refusal log in the same transaction as the decisions. The permanent reasons
(do-not-call, purpose, consent) are dispatch's own rule (dialer.rules.dispatch.
refusal_reasons). Phone parsing is cached per distinct number. A dry run takes exactly the
same path and rolls back.

Races: see dialer.intake.store (the partial unique indexes reject the loser of a race,
whose chunk is then re-decided against the winner's rows: they come back as
``duplicate``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from config.errors import TooLarge
from config.reasons import Code, reason
from consent import rules as consent_rules
from consent.store import dnc_numbers, facts_for
from core import refusals
from core.bulk import sqlite_datetime
from core.keys import Identity
from core.models import Campaign
from core.runtime import Runtime
from core.uow import UnitOfWork
from dialer.campaigns import load_campaign
from dialer.intake import overlap, store
from dialer.intake.parse import (
    COLUMNS,
    CsvSlice,
    Row,
    check_header,
    count_csv_rows,
    csv_records,
    csv_slices,
    decode_text,
    json_records,
    most_csv_rows,
    parse_chunk,
    record_chunks,
)
from dialer.intake.results import IntakeResult, RowResult
from dialer.intake.sms import render_texts
from dialer.rules.dispatch import consent_terms, reassigned_stale, stale_recheck_at
from dialer.rules.zones import CandidateZone, candidate_zone_tuple
from purpose_rules import rules as purpose_rules

# Reasons every chunk gives many times over: one shared (frozen) instance each.
_DUPLICATE = reason(Code.DUPLICATE_REQUEST)
_DEADLINE_PASSED = reason(Code.DEADLINE_PASSED, "not_after is already in the past")
_STALE = reason(Code.REASSIGNED_CHECK_STALE)


def check_row_limit(rt: Runtime, n: int) -> None:
    """``n``: the rows counted, up to ``limit + 1`` (counting stops there)."""
    limit = rt.settings.max_list_rows
    if n > limit:
        raise TooLarge(
            "LIST_TOO_LARGE",
            f"the list has more than {limit} rows; the limit is {limit} rows per submission: "
            "split it",
            {"rows": n, "limit": limit},
        )


# --- deciding --------------------------------------------------------------------------


@dataclass
class _ListState:
    """What the list itself has accepted so far (duplicates within the list): each
    external id and number with its call's id."""

    external_ids: dict[str, str] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)

    def take(self, other: _ListState) -> None:
        """Add what ``other`` (a chunk's acceptances) accepted."""
        self.external_ids.update(other.external_ids)
        self.phones.update(other.phones)



def _decide_chunk(
    rt: Runtime,
    uow: UnitOfWork,
    campaign: Campaign,
    rows: list[Row],
    seen: _ListState,
    added: _ListState,
    decided: Callable[[], None] | None = None,
) -> list[RowResult]:
    """Decide one chunk in the unit's transaction. ``seen`` is what earlier chunks of the
    list accepted; this chunk's acceptances go to ``added``. ``decided()`` is called once
    they are all there, before the chunk's writes (dialer.intake.overlap)."""
    s, now, pv = uow.session, uow.now, uow.policy_version
    store.custom_plans(s)
    if campaign.channel == "sms":
        render_texts(s, campaign, rows, rt.policy)
    valid = [r for r in rows if not r.invalid]
    ext_ids = sorted({r.external_id for r in valid if r.external_id})
    phone_list = sorted({r.phone for r in valid if r.phone})
    existing_ext, pending_phones = store.existing(s, campaign.id, ext_ids, phone_list)
    facts = facts_for(s, phone_list)
    dnc = dnc_numbers(s, phone_list)
    purpose = purpose_rules.decide(rt.policy, campaign.purpose, campaign.channel)
    results: list[RowResult] = []
    refusal_rows: list[dict[str, Any]] = []
    digest = hashlib.sha256()
    empty: tuple[list[consent_rules.ConsentFact], list[consent_rules.RevocationFact]] = ([], [])
    stale_on = rt.policy.reassigned.require_answer_within_days is not None
    region = rt.policy.default_region
    zone_lists: dict[tuple[CandidateZone, ...], list[dict[str, str]]] = {}
    # SQLite: calls go straight to the driver, their values bound as SQLAlchemy would bind
    # them (datetimes as naive UTC text, JSON as json.dumps; a test compares the stored
    # bytes): SQLAlchemy's per-value bind processing was a fifth of an intake's time.
    sqlite = s.get_bind().dialect.name == "sqlite"
    now_text = sqlite_datetime(now)
    zone_texts: dict[tuple[CandidateZone, ...], str] = {}
    call_rows: list[Any] = []
    for r in rows:
        if r.invalid:
            res = RowResult(r.row, r.external_id, "invalid", None, r.invalid)
            refusal_rows.append(
                refusals.refusal_row(
                    at=now, stage="intake", status="invalid", reasons=r.invalid,
                    policy_version=pv, external_id=r.external_id, campaign_id=campaign.id,
                    phone=r.phone, row=r.row,
                )
            )
            results.append(res)
            digest.update(f"{r.row}|invalid|{r.invalid[0].code}\n".encode())
            continue
        # A valid row has its number and its call id from parse_chunk.
        assert r.external_id is not None and r.phone is not None and r.call_id is not None
        # A duplicate names the call it duplicates: a client whose earlier submission
        # failed half-way learns the ids of the calls it did store (issue 16).
        dup_of = (
            seen.external_ids.get(r.external_id)
            or added.external_ids.get(r.external_id)
            or existing_ext.get(r.external_id)
            or seen.phones.get(r.phone)
            or added.phones.get(r.phone)
            or pending_phones.get(r.phone)
        )
        if dup_of is not None:
            results.append(RowResult(r.row, r.external_id, "duplicate", dup_of, [_DUPLICATE]))
            digest.update(f"{r.row}|duplicate|{dup_of}\n".encode())
            continue
        c_hist = facts.get(r.phone, empty)
        why, consent = consent_terms(r.phone in dnc, purpose, c_hist[0], c_hist[1],
                                     campaign.channel, campaign.purpose, now)
        if r.not_after is not None and r.not_after <= now:
            why.append(_DEADLINE_PASSED)
        call_id = r.call_id
        status = "refused" if why else "queued"
        zones = r.zones or candidate_zone_tuple(r.phone, r.state, r.postal_code, region)
        next_eligible = (
            (max(now, r.not_before) if r.not_before else now) if status == "queued" else None
        )
        last_reason = why[0].code.value if why else None
        # Reassigned numbers: no recent enough RND answer (the policy's
        # require_answer_within_days) -> queued, but parked until an answer arrives or
        # STALE_RECHECK (as a lease would defer it); the row says why it waits.
        if (next_eligible is not None and stale_on
                and reassigned_stale(consent, rt.policy, now)):
            recheck = stale_recheck_at(next_eligible, now, r.not_after)
            if recheck is not None:
                next_eligible, last_reason, why = recheck, _STALE.code.value, [_STALE]
        # A not_before still ahead: parked until then (dialer.queue, migration 0003).
        parked = next_eligible is not None and next_eligible > now
        if sqlite:
            # The row as the driver binds it, in store.CALL_COLUMNS order: as core.db.insert_rows
            # would make it from the dict below, without its per-column conversion (server
            # CPU per 100,000 rows 4.05-4.18 s this way, 4.34-4.55 s through insert_rows).
            zone_json = zone_texts.get(zones)
            if zone_json is None:
                zone_json = zone_texts[zones] = json.dumps([z.as_dict() for z in zones])
            call_rows.append((
                call_id, campaign.id, r.external_id, r.patient_ref, r.phone, r.state,
                r.postal_code, r.priority, store.sqlite_dt(r.not_before),
                store.sqlite_dt(r.not_after),
                status, 0 if status == "refused" else 1,
                None if next_eligible is None
                else now_text if next_eligible is now else sqlite_datetime(next_eligible),
                1 if parked else 0, 0, zone_json, last_reason, None, None, now_text, now_text,
                uow.key_id, pv, store.sqlite_dt(r.appointment_at), r.sms_text,
            ))
        else:
            zone_dicts = zone_lists.get(zones)
            if zone_dicts is None:
                # Few distinct zone lists in a chunk: rows share one (read-only) list.
                zone_dicts = zone_lists[zones] = [z.as_dict() for z in zones]
            call_rows.append({
                "id": call_id, "campaign_id": campaign.id, "external_id": r.external_id,
                "patient_ref": r.patient_ref, "phone": r.phone, "state": r.state,
                "postal_code": r.postal_code, "priority": r.priority,
                "not_before": r.not_before, "not_after": r.not_after, "status": status,
                "accepted": status != "refused", "next_eligible_at": next_eligible,
                "parked": parked,
                "attempts": 0,
                "candidate_zones": zone_dicts, "last_reason": last_reason, "lease_id": None,
                "lease_expires_at": None, "created_at": now, "updated_at": now,
                "created_by": uow.key_id, "policy_version": pv,
                "appointment_at": r.appointment_at, "sms_text": r.sms_text,
            })
        if status == "refused":
            uow.emit("call.refused", {
                "call_id": call_id, "campaign_id": campaign.id, "external_id": r.external_id,
                "stage": "intake", "status": "refused", "codes": [w.code.value for w in why],
                "row": r.row,
            }, phone=r.phone)
            refusal_rows.append(
                refusals.refusal_row(
                    at=now, stage="intake", status="refused", reasons=why, policy_version=pv,
                    call_id=call_id, external_id=r.external_id, campaign_id=campaign.id,
                    phone=r.phone, row=r.row,
                )
            )
        else:
            added.external_ids[r.external_id] = call_id
            added.phones[r.phone] = call_id
        results.append(RowResult(r.row, r.external_id, status, call_id, why))
        digest.update(f"{r.row}|{call_id}|{status}|{' '.join(w.code for w in why)}\n".encode())
    if decided is not None:
        decided()
    store.insert_calls(s, call_rows)
    refusals.write(s, refusal_rows)
    counts = {"queued": 0, "refused": 0, "invalid": 0, "duplicate": 0}
    for res in results:
        counts[res.status] += 1
    uow.audit("intake.decided", f"campaign:{campaign.id}", {
        "rows": [rows[0].row, rows[-1].row],
        "counts": counts,
        "decisions_sha256": digest.hexdigest(),
    })
    return results


def submit(
    rt: Runtime,
    who: Identity,
    campaign_id: str,
    records: Iterable[Any],
    *,
    dry_run: bool = False,
    ignored_columns: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    parallel: bool = False,
    columns: Sequence[str] | None = None,
    total: int | None = None,
    slices: Iterator[CsvSlice] | None = None,
) -> IntakeResult:
    """Decide every record and queue the good ones, chunk by chunk, each chunk one unit of
    work at the instant the list was received. With ``parallel``, rows are parsed in the
    helper process (``dialer.intake.pool``) ahead of the deciding.
    Records are dicts, or value lists named by ``columns``; with ``parallel``, ``slices``
    (:func:`csv_slices`) stand for them: the helper reads the CSV too."""
    campaign = load_campaign(rt, campaign_id)
    now = rt.clock.now()
    seen = _ListState()
    results: list[RowResult] = []

    regions = tuple(rt.policy.allowed_regions)

    def run_chunk(chunk: list[Row]) -> None:
        """One chunk, alone: decided again (up to three times) if it lost a race."""
        for attempt in range(3):
            # What this chunk accepts joins ``seen`` only once its transaction commits.
            added = _ListState()
            try:
                with rt.write(who, rollback=dry_run, now=now) as uow:
                    out = _decide_chunk(rt, uow, campaign, chunk, seen, added)
                seen.take(added)
                results.extend(out)
                if progress:
                    progress(len(chunk))
                return
            except IntegrityError:
                # Lost a race with a concurrent identical submission (PostgreSQL):
                # decide the chunk again, now seeing the winner's rows.
                if attempt == 2:
                    raise

    chunks = (c for c in _parsed(records, rt.policy.default_region, regions, parallel,
                                 columns, total, slices)
              if c)  # a CSV slice of blank lines only has no rows
    if rt.db.dialect == "postgresql":
        # Two chunks at once: the next one decided while this one is written.
        redo = _overlapped(rt, who, campaign, now, dry_run, chunks, seen, results, progress)
        for chunk in redo:
            run_chunk(chunk)
    for chunk in chunks:
        run_chunk(chunk)
    return IntakeResult(results, dry_run, list(ignored_columns))


@dataclass
class _Chunk:
    rows: list[Row]
    added: _ListState = field(default_factory=_ListState)


def _overlapped(
    rt: Runtime, who: Identity, campaign: Campaign, now: datetime, dry_run: bool,
    chunks: Iterator[list[Row]], seen: _ListState, results: list[RowResult],
    progress: Callable[[int], None] | None,
) -> list[list[Row]]:
    """The list's chunks two at a time (dialer.intake.overlap). ``seen`` ends as what the
    committed chunks accepted; returns the chunks left to do one at a time after a chunk
    lost a race with a concurrent submission (IntegrityError), in order."""
    deciding = _ListState()  # committed chunks' acceptances and those in flight

    def unit(chunk: _Chunk, decided: Callable[[], None],
             before: Future[Any] | None) -> list[RowResult]:
        with rt.write(who, rollback=dry_run, now=now) as uow:
            out = _decide_chunk(rt, uow, campaign, chunk.rows, deciding, chunk.added, decided)
            overlap.wait_for(before)  # commit after the chunk before; roll back if it failed
        return out

    def on_decided(chunk: _Chunk) -> None:
        deciding.take(chunk.added)

    def on_committed(chunk: _Chunk, out: list[RowResult]) -> None:
        seen.take(chunk.added)
        results.extend(out)
        if progress:
            progress(len(chunk.rows))

    left = overlap.overlapped((_Chunk(c) for c in chunks), unit, on_decided, on_committed,
                              IntegrityError)
    return [c.rows for c in left]


def _parsed(
    records: Iterable[Any], default_region: str, regions: tuple[str, ...],
    parallel: bool, columns: Sequence[str] | None, total: int | None = None,
    slices: Iterator[CsvSlice] | None = None,
) -> Iterator[list[Row]]:
    if parallel:
        from dialer.intake import pool as intake_pool

        chunks: Iterable[list[Any] | CsvSlice] = (
            (recs for _, recs in record_chunks(records, ramp=True, total=total))
            if slices is None else slices
        )
        yield from intake_pool.parse_in_helper(chunks, default_region, regions, columns)
        return
    for first, recs in record_chunks(records, ramp=False, total=total):
        yield parse_chunk(first, recs, default_region, regions, columns)


MAX_IGNORED = 50  # names listed in ignored_columns
MAX_IGNORED_NAME = 64


def ignored_columns(names: Iterable[str]) -> list[str]:
    """The unknown column names (keys) of a list, for the answer's ``ignored_columns``: at
    most MAX_IGNORED, each cut to MAX_IGNORED_NAME characters, printable text only (a name
    is the submitter's text, echoed back)."""
    out: set[str] = set()
    for name in names:
        if name in COLUMNS or not name:
            continue
        safe = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?"
                       for c in name[:MAX_IGNORED_NAME])
        out.add(safe)
        if len(out) >= MAX_IGNORED:
            break
    return sorted(out)


def _parallel(rt: Runtime, rows: int) -> bool:
    least = rt.settings.intake_parallel_min_rows
    return least > 0 and rows >= least


def submit_body(
    rt: Runtime,
    who: Identity,
    campaign_id: str,
    body: bytes,
    kind: str,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> IntakeResult:
    """``kind`` is ``json`` or ``csv``. Checks the row limit before deciding anything."""
    load_campaign(rt, campaign_id)  # 404 before any parsing work
    limit = rt.settings.max_list_rows
    if kind == "json":
        recs = json_records(body, limit)  # refused as soon as row limit + 1 is read
        check_row_limit(rt, len(recs))
        ignored = ignored_columns(k for r in recs if isinstance(r, dict) for k in r)
        return submit(rt, who, campaign_id, recs, dry_run=dry_run,
                      ignored_columns=ignored, progress=progress,
                      parallel=_parallel(rt, len(recs)), total=len(recs))
    text = decode_text(body)
    n = most_csv_rows(text)
    if n > limit:
        # The bound is over the limit: count, stopping at limit + 1 rows or when the blank
        # lines alone pass their budget (16 million blank lines: 21 s before, issue 16).
        n = count_csv_rows(text, limit)
        check_row_limit(rt, n)
    names, rows = csv_records(text, as_lists=True)
    ignored = ignored_columns(check_header(names))
    parallel = _parallel(rt, n)
    return submit(rt, who, campaign_id, rows, dry_run=dry_run, ignored_columns=ignored,
                  progress=progress, parallel=parallel, columns=names, total=n,
                  slices=csv_slices(text, n) if parallel else None)
