"""Checking the audit log: incrementally (the overview, ``GET /v1/audit/verify``) and in
full (``callgate audit verify``).

**Incremental** (:func:`verify_incremental`). The process keeps an *anchor*: a size and root
it trusts from outside the database — the newest checkpoint file in
``CALLGATE_AUDIT_CHECKPOINT_DIR`` (signed; written before the database committed to it), then
whatever it has verified itself since. Each check reads the database's latest checkpoint,
checks its signature, compares the newest day's checkpoint files with it (a larger file is a
cut tail), checks that the stored tree's first ``M`` leaves still hash to the anchor's root
(``popcount(M)`` stored hashes: a rewrite below ``M`` changes them), then recomputes the
leaves added since (each entry's canonical JSON against its stored leaf hash) and folds them
onto the anchor's right edge: they must give the root of the newest checkpoint file on the
way and the signed root at the end, and the stored right edge at the new size must be the
one computed. Its cost is the number of new entries
(at most ``CALLGATE_AUDIT_VERIFY_BUDGET`` per call, then it reports how far behind it is)
plus O(log n): the same at 100 million entries as at 100. It does not re-read entries below
the anchor: an edit there that leaves the stored leaf hash alone is the full check's (and an
auditor's inclusion proof's) to find.

**Full** (:func:`verify_full`). Rebuilds the tree from every entry, checks every stored node
against its children, and every checkpoint (each file in the directory, each row in the
database) against the rebuilt tree at its size, signature first. It reports the first
index that disagrees: exactly, for a missing entry, an edited entry or a cut tail; for a
rewrite that was re-hashed and re-signed with the database's own key, the span between the
last checkpoint that still holds and the first that does not (a checkpoint commits to a root,
not to each leaf: more frequent checkpoints narrow it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import merkle
from core.audit import leaf_hash_of, leaf_text
from core.auditlog import (
    StoredCheckpoint,
    TreeError,
    checkpoint_files,
    fetch_nodes,
    getter,
    latest_checkpoint,
    leaf_rows,
    pending_count,
    root_at,
    signer,
    tree_size,
)
from core.db import Database
from core.models import AuditCheckpoint, AuditEntry, AuditNode
from core.runtime import Runtime
from core.signednote import Checkpoint, NoteError, VerifierKey, open_checkpoint

# --- incremental ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchor:
    size: int
    root: bytes
    source: str


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int  # the first `entries` leaves are verified
    checkpoint: StoredCheckpoint | None  # the database's latest checkpoint
    index: int | None = None
    problem: str | None = None
    behind: int = 0  # leaves of that checkpoint not verified yet (the budget ran out)
    anchor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoint": None if self.checkpoint is None else {
                "size": self.checkpoint.size, "root_hash": self.checkpoint.root_hash.hex()},
        }
        if self.behind:
            out["behind"] = self.behind
        if not self.ok:
            out["index"] = self.index
            out["problem"] = self.problem
        return out


@dataclass
class VerifyState:
    """A process's anchor and last result (``rt.state(VerifyState)``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    anchor: Anchor | None = None
    last: Verification | None = None


def record_background(rt: Runtime, v: Verification) -> None:
    """A check done by this process's helper (dialer.audit_helper) moves this process's
    anchor up to the checkpoint it verified: a page then checks only what came after."""
    st = rt.state(VerifyState)
    cp = v.checkpoint
    if not v.ok or v.behind or cp is None or v.entries != cp.size:
        return
    with st.lock:
        if st.anchor is None or st.anchor.size < cp.size:
            st.anchor = Anchor(cp.size, cp.root_hash,
                               f"the tree verified at size {cp.size} (background check)")


class _Failed(Exception):
    def __init__(self, index: int | None, problem: str) -> None:
        super().__init__(problem)
        self.index = index
        self.problem = problem


def _open_file(path: Path, verifier: VerifierKey, origin: str | None) -> Checkpoint:
    """A checkpoint file opened with the key (and of ``origin``); one that does not verify
    raises _Failed: it is not the log's, or was altered."""
    try:
        return open_checkpoint(path.read_bytes(), verifier, origin)
    except (NoteError, OSError) as e:
        raise _Failed(None, f"checkpoint file {path}: {e}") from None


def _file_size(path: Path) -> int:
    """The size a checkpoint file's name gives (``checkpoint-<size>[-<hash>].note``)."""
    return int(path.name.split("-")[1].split(".")[0])


def _newest_day_files(directory: Path) -> list[tuple[int, Path]]:
    """The files of the newest day directory holding any, by size: what the incremental
    check compares against (reading one day's listing, not every day's)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    days = sorted((d for d in root.iterdir() if d.is_dir()), reverse=True)
    for day in days:
        files = sorted((_file_size(p), p) for p in day.glob("checkpoint-*.note"))
        if files:
            return files
    return []


def verify_incremental(
    rt: Runtime, budget: int | None = None, *, wait: bool = True
) -> Verification:
    """Check what the log gained since the anchor (see the module's docstring). One check
    at a time per process; with ``wait=False`` (a page), while another runs, its last
    result is answered rather than waiting."""
    st = rt.state(VerifyState)
    if not st.lock.acquire(blocking=wait):
        if st.last is not None:
            return st.last
        st.lock.acquire()
    try:
        result = _verify(rt, st, budget or rt.settings.audit_verify_budget)
        st.last = result
        return result
    finally:
        st.lock.release()


def _verify(rt: Runtime, st: VerifyState, budget: int) -> Verification:
    sign = signer(rt)
    latest: StoredCheckpoint | None = None
    anchor = st.anchor
    try:
        with rt.db.read() as s:
            latest = latest_checkpoint(s)
            if latest is None:
                return Verification(True, 0, None, anchor=None)
            try:
                cp = open_checkpoint(latest.note, sign.verifier, sign.origin)
            except NoteError as e:
                raise _Failed(None, f"the latest checkpoint (size {latest.size}): {e}") from None
            if (cp.size, cp.root_hash) != (latest.size, latest.root_hash):
                raise _Failed(None, f"the latest checkpoint's row (size {latest.size}) is not "
                              "what its signed note says")
            n = latest.size
            files = _newest_day_files(rt.settings.audit_checkpoint_dir)
            _check_not_behind_files(rt, files, n)
            if anchor is None:
                anchor = _anchor_from_files(files, sign.verifier, sign.origin, n)
            if anchor.size > n:
                raise _Failed(n, f"{anchor.source} signs {anchor.size} entries but the "
                              f"database's latest checkpoint only {n}: entries from index {n} "
                              "on were removed, or the log was rolled back")
            m = anchor.size
            target = min(n, m + budget)
            # The newest file within what this check covers is compared on the way: a
            # rewrite above the anchor, re-signed in the database, still disagrees with it.
            on_way = [(size, p) for size, p in files if m < size <= target]
            check = None
            if on_way:
                path = on_way[-1][1]
                check = (_open_file(path, sign.verifier, sign.origin), path)
            builder = _builder_at(s, anchor)
            _fold_new_leaves(s, builder, m, target, check)
            if target == n:
                _check_signed_tree(s, builder, latest, m)
    except _Failed as f:
        return Verification(False, anchor.size if anchor else 0, latest, f.index, f.problem,
                            anchor=anchor.source if anchor else None)
    st.anchor = Anchor(target, builder.root(), f"the tree verified at size {target}")
    return Verification(True, target, latest, behind=n - target, anchor=anchor.source)


def _check_not_behind_files(rt: Runtime, files: list[tuple[int, Path]], n: int) -> None:
    """A checkpoint file larger than the database's latest checkpoint means the log lost
    its tail: unless the database has caught up meanwhile (a file is written just before
    its checkpoint is committed), or the checkpoint's commit was lost (a crash) while the
    tree it signs is there, with the root the file signs."""
    if not files or files[-1][0] <= n:
        return
    size, path = files[-1]
    sign = signer(rt)
    with rt.db.read() as s2:
        now_latest = latest_checkpoint(s2)
        if now_latest is not None and now_latest.size >= size:
            return
        if tree_size(s2) >= size:
            cp = _open_file(path, sign.verifier, sign.origin)
            try:
                if root_at(s2, size) == cp.root_hash:
                    return
            except TreeError:
                pass
    raise _Failed(n, f"checkpoint file {path} signs {size} entries but the database's "
                  f"latest checkpoint only {n}: entries from index {n} on were removed, "
                  "or the log was rolled back")


def _anchor_from_files(files: list[tuple[int, Path]], verifier: VerifierKey, origin: str,
                       n: int) -> Anchor:
    """The newest checkpoint file at or below the database's latest size ``n``."""
    for size, path in reversed(files):
        if size <= n:
            cp = _open_file(path, verifier, origin)
            return Anchor(cp.size, cp.root_hash, f"checkpoint file {path}")
    return Anchor(0, merkle.EMPTY_ROOT, "the empty log (no checkpoint file yet)")


def _builder_at(s: Session, anchor: Anchor) -> merkle.TreeBuilder:
    m = anchor.size
    try:
        builder = merkle.TreeBuilder.from_compact_range(
            m, getter(fetch_nodes(s, merkle.compact_range(m))))
    except TreeError as e:
        raise _Failed(m - 1 if m else 0, f"{e}: the tree below index {m} was altered") from None
    if builder.root() != anchor.root:
        raise _Failed(None, f"the stored tree's first {m} leaves no longer hash to the root of "
                      f"{anchor.source}: the log was rewritten below index {m} (run "
                      "callgate audit verify --checkpoints to find where)")
    return builder


def _leaf_hash(r: Any) -> bytes:
    """A row's leaf hash, recomputed from its fields (the stored one if erased)."""
    stored = bytes(r.leaf_hash) if r.leaf_hash is not None else b""
    if r.erased_at is not None:
        return stored
    try:
        h = leaf_hash_of(leaf_text(int(r.leaf_index), r.at, r.actor, r.kind, r.subject,
                                   r.payload, r.policy_version))
    except ValueError:
        raise _Failed(int(r.leaf_index), f"entry {r.leaf_index}: its payload is not JSON"
                      ) from None
    if h != stored:
        raise _Failed(int(r.leaf_index), f"entry {r.leaf_index}: its content does not match "
                      "its leaf hash (the entry was edited)")
    return h


def _fold_new_leaves(s: Session, builder: merkle.TreeBuilder, m: int, target: int,
                     check: tuple[Checkpoint, Path] | None = None) -> None:
    expect = m
    for r in leaf_rows(s, m, target):
        if int(r.leaf_index) != expect:
            raise _Failed(expect, f"entry {expect} is missing (the next is {r.leaf_index})")
        builder.append(_leaf_hash(r))
        expect += 1
        if check is not None and builder.size == check[0].size:
            if builder.root() != check[0].root_hash:
                raise _Failed(m, f"entries {m} to {expect - 1} do not give the root signed in "
                              f"checkpoint file {check[1]}: the log was rewritten (run "
                              "callgate audit verify --checkpoints to find where)")
    if expect != target:
        raise _Failed(expect, f"entry {expect} is missing (the signed tree has {target})")


def _check_signed_tree(s: Session, builder: merkle.TreeBuilder, latest: StoredCheckpoint,
                       m: int) -> None:
    n = latest.size
    if builder.root() != latest.root_hash:
        raise _Failed(m, f"entries {m} to {n - 1} do not hash to the root signed at size {n}")
    stored = fetch_nodes(s, merkle.compact_range(n))
    for level, i, h in builder.compact_range():
        if stored.get((level, i)) != h:
            raise _Failed(i << level, f"the stored tree node ({level}, {i}) is not the hash "
                          "of its entries: proofs from it would not verify")


# --- full -----------------------------------------------------------------------------------


@dataclass
class FullReport:
    ok: bool = True
    size: int = 0  # leaves rebuilt
    files: int = 0  # checkpoint files checked
    largest: int | None = None  # the largest size a checkpoint file signs
    db_checkpoints: int = 0
    erased: int = 0
    pending: int = 0
    index: int | None = None  # the first index that disagrees (or the start of the span)
    index_to: int | None = None  # with a span: its end (exclusive)
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Signed:
    size: int
    root: bytes
    label: str


def verify_full(
    db: Database,
    verifier: VerifierKey,
    origin: str | None,
    directory: Path | None,
    progress: Callable[[int, int], None] | None = None,
) -> FullReport:
    """Rebuild the tree from the database and check it against every checkpoint.
    ``progress(done, total)`` is called as leaves are rebuilt."""
    report = FullReport()
    try:
        signed = _signed_checkpoints(db, verifier, origin, directory, report)
        with db.read() as s:
            n = tree_size(s)
            report.pending = pending_count(s)
            _rebuild(s, n, signed, report, progress)
            _check_nodes(s, n)
    except _Failed as f:
        report.ok, report.index, report.problem = False, f.index, f.problem
    return report


def _signed_checkpoints(db: Database, verifier: VerifierKey, origin: str | None,
                        directory: Path | None, report: FullReport) -> list[_Signed]:
    out: list[_Signed] = []
    if directory is not None:
        for path in checkpoint_files(directory):
            cp = _open_file(path, verifier, origin)
            out.append(_Signed(cp.size, cp.root_hash, f"checkpoint file {path}"))
            report.files += 1
            report.largest = max(report.largest or 0, cp.size)
    with db.read() as s:
        for size, root, note in s.execute(select(AuditCheckpoint.size, AuditCheckpoint.root_hash,
                                                 AuditCheckpoint.note)
                                          .order_by(AuditCheckpoint.size)):
            label = f"the database's checkpoint of size {size}"
            try:
                cp = open_checkpoint(note, verifier, origin)
            except NoteError as e:
                raise _Failed(None, f"{label}: {e}") from None
            if (cp.size, cp.root_hash) != (int(size), bytes(root)):
                raise _Failed(None, f"{label}: its row is not what its signed note says")
            out.append(_Signed(cp.size, cp.root_hash, label))
            report.db_checkpoints += 1
    out.sort(key=lambda c: c.size)
    return out


def _rebuild(s: Session, n: int, signed: list[_Signed], report: FullReport,
             progress: Callable[[int, int], None] | None) -> None:
    builder = merkle.TreeBuilder()
    pos = 0  # next checkpoint to compare
    last_ok = 0  # the largest size whose checkpoints all held

    def compare_at(size: int) -> None:
        nonlocal pos, last_ok
        checked = False
        while pos < len(signed) and signed[pos].size == size:
            c = signed[pos]
            if builder.root() != c.root:
                report.index_to = size
                raise _Failed(last_ok, f"{c.label} signs a tree of size {size} that the "
                              f"entries no longer give: the first entry that differs is at an "
                              f"index from {last_ok} to {size - 1} (entries were deleted, "
                              "reordered or rewritten, and the log re-hashed)")
            pos += 1
            checked = True
        if checked:
            last_ok = size  # every entry below it is as signed

    compare_at(0)
    step = max(1, n // 200)
    for r in leaf_rows(s, 0, n):
        i = int(r.leaf_index)
        if i != builder.size:
            raise _Failed(builder.size, f"entry {builder.size} is missing (the next is {i})")
        if r.erased_at is not None:
            report.erased += 1
        builder.append(_leaf_hash(r))
        report.size = builder.size
        compare_at(builder.size)
        if progress is not None and (builder.size % step == 0 or builder.size == n):
            progress(builder.size, n)
    report.size = builder.size
    if builder.size != n:
        raise _Failed(builder.size, f"entry {builder.size} is missing (the tree has {n})")
    if pos < len(signed):
        c = signed[pos]
        raise _Failed(n, f"{c.label} signs {c.size} entries but the log has {n}: entries from "
                      f"index {n} on were removed (a cut tail)")


def _level_hashes(s: Session, level: int, count: int, chunk: int = 10_000
                  ) -> Iterator[tuple[int, bytes]]:
    """``(idx, hash)`` of the stored nodes of ``level`` (0: the leaves) below ``count``."""
    at = 0
    while at < count:
        if level == 0:
            q: Any = (select(AuditEntry.leaf_index, AuditEntry.leaf_hash)
                      .where(AuditEntry.leaf_index >= at, AuditEntry.leaf_index < count)
                      .order_by(AuditEntry.leaf_index))
        else:
            q = (select(AuditNode.idx, AuditNode.hash)
                 .where(AuditNode.level == level, AuditNode.idx >= at, AuditNode.idx < count)
                 .order_by(AuditNode.idx))
        rows = s.execute(q.limit(chunk)).all()
        if not rows:
            return
        for i, h in rows:
            yield int(i), bytes(h) if h is not None else b""
        at = int(rows[-1][0]) + 1


def _check_nodes(s: Session, n: int) -> None:
    """Every stored node of level >= 1 is the hash of its two stored children, and every
    node the tree of size ``n`` has is stored (the leaves were checked by the rebuild)."""
    level = 1
    while n >> level:
        count = n >> level
        children = _level_hashes(s, level - 1, count * 2)
        expect = 0
        for i, h in _level_hashes(s, level, count):
            if i != expect:
                raise _Failed(expect << level, f"the stored tree node ({level}, {expect}) is "
                              "missing: proofs over its leaves cannot be made")
            left, right = next(children, None), next(children, None)
            if (left is None or right is None or (left[0], right[0]) != (2 * i, 2 * i + 1)
                    or merkle.node_hash(left[1], right[1]) != h):
                raise _Failed(i << level, f"the stored tree node ({level}, {i}) is not the "
                              "hash of its children: proofs from it would not verify")
            expect += 1
        if expect != count:
            raise _Failed(expect << level, f"the stored tree node ({level}, {expect}) is "
                          "missing: proofs over its leaves cannot be made")
        level += 1
