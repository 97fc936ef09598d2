"""The audit log as an RFC 9162 Merkle log: the sequencer, signed checkpoints, proofs.

Writers insert entries with no position (core.audit). The **sequencer** (:func:`integrate`,
run by the ``audit_seal`` job every ``CALLGATE_AUDIT_SEAL_SECONDS``) gives the committed
ones their leaf index, in the order it finds them, and stores what makes proofs cheap:

* the leaf hash on the entry (``audit_log.leaf_hash``), which stays when a payload is erased
  past retention, so that proofs still verify;
* the hash of every perfect subtree of level >= 1 (``audit_nodes``): node ``(k, i)`` covers
  leaves ``[i*2^k, (i+1)*2^k)`` and never changes once its last leaf is in (core.merkle).

**Commit order, and why no entry is skipped.** An entry gets its id at insert, but its
transaction may commit after a later id's (PostgreSQL): a sequencer that walked ids upwards
from the last one it integrated would skip it for ever. This one integrates *every* entry
whose ``leaf_index`` is still NULL (``ix_audit_log_pending``, a partial index of the few
pending entries), lowest id first, however late it committed. Every pass reads what is
committed when its statement starts, so an entry whose transaction committed after an
integrated entry's pass began gets a later index: leaves are in commit order across passes,
and within a pass (all committed before it) in insert order; an entry committed before
another began always precedes it. Nothing depends on other transactions' horizons (a long
transaction elsewhere never holds the log back). One pass at a time: on PostgreSQL the job
holds its advisory lock, and the write itself takes ``pg_advisory_xact_lock``; on SQLite the
write lock. A pass computes its hashes outside the write lock and re-checks, under it, that
the tree has not moved meanwhile (else it leaves the work to the next pass).

**Checkpoints** (:func:`make_checkpoint`): while the tree grows, at most every
``CALLGATE_AUDIT_CHECKPOINT_SECONDS``, its size and root are signed with the Ed25519 key in
``CALLGATE_AUDIT_KEY_FILE`` (c2sp.org/tlog-checkpoint in a c2sp.org/signed-note,
core.signednote), stored in ``audit_checkpoints`` and written as a file to
``CALLGATE_AUDIT_CHECKPOINT_DIR`` (before the database commits to it). A tree of size 0 is
signed before the first entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import takewhile
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, and_, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from config.settings import Settings
from core import merkle
from core.audit import iso, leaf_hash_of, leaf_text
from core.bulk import insert_rows, update_rows
from core.db import Database
from core.models import AuditAccess, AuditCheckpoint, AuditEntry, AuditNode, AuditState
from core.runtime import Runtime
from core.signednote import (
    VerifierKey,
    checkpoint_text,
    load_or_create_key,
    public_key_bytes,
    sign_note,
    validate_name,
)
from core.uow import UnitOfWork

log = logging.getLogger("callgate.audit")

SYSTEM = "system:audit"
INTEGRATE_BATCH = 5000
# pg_advisory_xact_lock key of every write to the tree (sequencer passes, checkpoints).
TREE_LOCK = zlib.crc32(b"callgate.audit.tree")

_E = cast(Table, AuditEntry.__table__)
_N = cast(Table, AuditNode.__table__)


class TreeError(Exception):
    """The stored tree cannot answer (a node it should hold is missing)."""


# --- the signing key ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signer:
    """The log's signing key and the names it signs under (key name = origin)."""

    key: Ed25519PrivateKey
    origin: str
    verifier: VerifierKey

    @property
    def key_name(self) -> str:
        return self.verifier.name

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, size: int, root: bytes) -> str:
        return sign_note(checkpoint_text(self.origin, size, root), self.key_name, self.key)


def default_origin(public_key: bytes) -> str:
    """``callgate-audit/<16 hex of SHA-256(public key)>``: unique to the key, so to the
    deployment, when ``CALLGATE_AUDIT_ORIGIN`` is not set."""
    return "callgate-audit/" + hashlib.sha256(public_key).hexdigest()[:16]


def load_signer(settings: Settings) -> tuple[Signer, bool]:
    """The signer of ``settings`` (the key file created, mode 0600, if absent; True then)."""
    key, created = load_or_create_key(settings.audit_key_file)
    origin = validate_name(settings.audit_origin or default_origin(public_key_bytes(key)),
                           "CALLGATE_AUDIT_ORIGIN")
    return Signer(key, origin, VerifierKey.of(origin, key)), created


KEY_WARNING = (
    "AUDIT: created the audit signing key {path} (Ed25519, mode 0600). Checkpoints of the "
    "audit log are signed with it: keep a copy OFF THIS HOST (a vault), publish its verifier "
    "key ({vkey}) to your auditors, and never put it in the database. Anyone who holds it "
    "can sign a rewritten log; losing it means starting a new origin."
)


def signer(rt: Runtime) -> Signer:
    """This runtime's signer, loaded (or created, with a loud warning) on first use."""
    return rt.state(Signer, _make_signer)


def _make_signer(rt: Runtime) -> Signer:
    s, created = load_signer(rt.settings)
    if created:
        log.warning(KEY_WARNING.format(path=rt.settings.audit_key_file, vkey=s.vkey))
    return s


# --- reading the stored tree ------------------------------------------------------------------


def tree_size(s: Session) -> int:
    """Leaves integrated so far."""
    # (The WHERE lets SQLite read the maximum off uq_audit_log_leaf_index, a partial index.)
    top = s.scalar(select(func.max(AuditEntry.leaf_index))
                   .where(AuditEntry.leaf_index.is_not(None)))
    return 0 if top is None else int(top) + 1


def pending_count(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(AuditEntry)
                        .where(AuditEntry.leaf_index.is_(None))) or 0)


def oldest_pending_at(s: Session) -> datetime | None:
    """When the oldest committed entry not yet integrated was written (the metrics'
    integration lag): the first row of the small partial index ix_audit_log_pending."""
    return s.scalar(select(AuditEntry.at).where(AuditEntry.leaf_index.is_(None))
                    .order_by(AuditEntry.id).limit(1))


def fetch_nodes(s: Session, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of these perfect subtrees, in two queries (leaves, the others)."""
    wanted = list(dict.fromkeys(wanted))
    leaves = [i for level, i in wanted if level == 0]
    inner = [(level, i) for level, i in wanted if level > 0]
    out: dict[tuple[int, int], bytes] = {}
    if leaves:
        for index, h in s.execute(select(AuditEntry.leaf_index, AuditEntry.leaf_hash)
                                  .where(AuditEntry.leaf_index.in_(leaves))):
            if h is not None:
                out[(0, int(cast(int, index)))] = bytes(h)
    if inner:
        # One ``level = ? AND idx IN (...)`` per level: each an index range of the primary
        # key (a row-value IN list over both columns was a scan of the table on SQLite).
        by_level: dict[int, list[int]] = {}
        for level, i in inner:
            by_level.setdefault(level, []).append(i)
        where = or_(*(and_(AuditNode.level == level, AuditNode.idx.in_(idxs))
                      for level, idxs in by_level.items()))
        for level, idx, h in s.execute(
            select(AuditNode.level, AuditNode.idx, AuditNode.hash).where(where)
        ):
            out[(int(level), int(idx))] = bytes(h)
    return out


def getter(fetched: dict[tuple[int, int], bytes]) -> merkle.GetNode:
    def get(level: int, index: int) -> bytes:
        try:
            return fetched[(level, index)]
        except KeyError:
            raise TreeError(f"the stored tree has no node ({level}, {index})") from None

    return get


def root_at(s: Session, size: int) -> bytes:
    """The root of the stored tree at ``size`` (popcount(size) stored hashes)."""
    return merkle.root(size, getter(fetch_nodes(s, merkle.compact_range(size))))


def inclusion_proof(s: Session, index: int, size: int) -> tuple[bytes, list[bytes]]:
    """Leaf ``index``'s hash and its RFC 9162 inclusion proof in the tree of ``size``."""
    fetched = fetch_nodes(s, [(0, index), *merkle.inclusion_proof_nodes(index, size)])
    get = getter(fetched)
    return get(0, index), merkle.inclusion_proof(index, size, get)


def consistency_proof(s: Session, m: int, n: int) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of size ``m`` to that of size ``n``."""
    return merkle.consistency_proof(
        m, n, getter(fetch_nodes(s, merkle.consistency_proof_nodes(m, n))))


# --- the sequencer ------------------------------------------------------------------------------


def _lock_tree(s: Session) -> None:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TREE_LOCK})


# The sequencer's and the checks' reads, at the driver (no per-row type processing: on
# SQLite ``at`` stays the stored text, which core.audit.iso turns into the leaf's form
# directly; measured, 18 -> 4 us an entry), one statement per dialect.
_COLS = "at, actor, kind, subject, payload, policy_version"
_PENDING_SQL = {
    "sqlite": f"SELECT id, {_COLS} FROM audit_log WHERE leaf_index IS NULL ORDER BY id LIMIT ?",
    "postgresql": f"SELECT id, {_COLS} FROM audit_log WHERE leaf_index IS NULL ORDER BY id "
                  "LIMIT %s",
}
_LEAVES_SQL = {
    "sqlite": f"SELECT leaf_index, {_COLS}, leaf_hash, erased_at FROM audit_log "
              "WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index LIMIT ?",
    "postgresql": f"SELECT leaf_index, {_COLS}, leaf_hash, erased_at FROM audit_log "
                  "WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index LIMIT %s",
}


def _driver_rows(s: Session, sql: dict[str, str], params: tuple[Any, ...]) -> list[Any]:
    conn = s.connection()
    return list(conn.exec_driver_sql(sql[conn.dialect.name], params))


def integrate(db: Database, batch: int = INTEGRATE_BATCH, limit: int | None = None) -> int:
    """Integrate committed entries into the tree, ``batch`` per transaction, until none is
    left (or ``limit`` were). Returns how many."""
    total = 0
    while limit is None or total < limit:
        n = _integrate_once(db, batch)
        total += n
        if n < batch:
            break
    return total


def _integrate_once(db: Database, batch: int) -> int:
    with db.read() as s:
        size = tree_size(s)
        rows = _driver_rows(s, _PENDING_SQL, (batch,))
        if not rows:
            return 0
        edge = fetch_nodes(s, merkle.compact_range(size))
    updates: list[dict[str, Any]] = []
    hashes: list[bytes] = []
    for offset, r in enumerate(rows):
        index = size + offset
        try:
            leaf = leaf_text(index, r.at, r.actor, r.kind, r.subject, r.payload,
                             r.policy_version)
        except ValueError:
            # Only a row written by hand has no JSON payload: it holds the log back, loudly.
            raise TreeError(f"audit entry id {r.id} has a payload that is not JSON; the log "
                            "cannot integrate it or anything after it") from None
        h = leaf_hash_of(leaf)
        hashes.append(h)
        updates.append({"b_id": r.id, "leaf_index": index, "leaf_hash": h})
    nodes = merkle.append(size, hashes, getter(edge))
    inner = [{"level": level, "idx": i, "hash": h} for level, i, h in nodes if level > 0]
    with db.write() as s:
        _lock_tree(s)
        if tree_size(s) != size:
            return 0  # another pass moved the tree meanwhile: the next pass goes on from there
        update_rows(s, _E, updates)
        insert_rows(s, _N, inner)
    return len(rows)


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root_hash: bytes
    at: datetime
    note: str


def latest_checkpoint(s: Session) -> StoredCheckpoint | None:
    row = s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
                    ).scalar_one_or_none()
    return None if row is None else _stored(row)


def checkpoint_at(s: Session, size: int) -> StoredCheckpoint | None:
    row = s.get(AuditCheckpoint, size)
    return None if row is None else _stored(row)


def _stored(row: AuditCheckpoint) -> StoredCheckpoint:
    return StoredCheckpoint(int(row.size), bytes(row.root_hash), row.at, row.note)


def _checkpoint_made(uow: UnitOfWork, checkpoint: StoredCheckpoint) -> None:
    """The ``audit.checkpoint`` event (API.md, "Webhooks and events"), in the transaction
    that stores the checkpoint: a copy of what the log committed to, outside callgate."""
    uow.emit("audit.checkpoint", {"size": checkpoint.size,
                                  "root_hash": checkpoint.root_hash.hex(),
                                  "note": checkpoint.note})


def make_checkpoint(rt: Runtime, *, force: bool = False) -> StoredCheckpoint | None:
    """Sign the tree as it stands, if it grew since the latest checkpoint (and that one is
    at least ``CALLGATE_AUDIT_CHECKPOINT_SECONDS`` old, unless ``force``), or if there is no
    checkpoint yet. The file is written (and synced) first, outside any lock; then the
    database commits to the checkpoint, unless another process signed that size meanwhile."""
    sign = signer(rt)
    with rt.db.read() as s:
        latest = latest_checkpoint(s)
        size = tree_size(s)
        now = rt.clock.now()
        if latest is not None:
            if size < latest.size:
                log.error("AUDIT: the tree has %d leaves but a checkpoint signs %d: entries "
                          "were removed; no checkpoint is signed (run callgate audit verify)",
                          size, latest.size)
                return None
            if size == latest.size:
                return None
            wait = timedelta(seconds=rt.settings.audit_checkpoint_seconds)
            if not force and now - latest.at < wait:
                return None
        root = root_at(s, size)
    cp = StoredCheckpoint(size, root, now, sign.sign(size, root))
    write_checkpoint_file(rt.settings.audit_checkpoint_dir, cp)
    with rt.write(SYSTEM, now=now) as uow:
        _lock_tree(uow.session)
        again = latest_checkpoint(uow.session)
        if again is not None and again.size >= size:
            return None  # signed meanwhile by another process (the same note: Ed25519)
        uow.session.add(AuditCheckpoint(size=size, root_hash=root, at=now, note=cp.note))
        _checkpoint_made(uow, cp)
    return cp


def seal(rt: Runtime, *, force: bool = False) -> int:
    """The ``audit_seal`` job: integrate what was committed, then checkpoint if due."""
    n = integrate(rt.db)
    make_checkpoint(rt, force=force)
    return n


# --- retention ---------------------------------------------------------------------------------

ERASE_BATCH = 1000
ERASED_BELOW = "erased_below"


def erase_past_retention(rt: Runtime) -> int:
    """Erase the payloads of sealed entries older than ``CALLGATE_RETENTION_DAYS`` (6 years),
    lowest index first, and their rows in the access index. The entry keeps its index, time,
    actor, kind, subject and leaf hash: the tree never loses a leaf, and every inclusion and
    consistency proof, every checkpoint and the incremental and full checks still hold (they
    take an erased entry's stored leaf hash as it is). Only its content can no longer be
    shown to be what was hashed. Stops at the first entry still within retention."""
    cutoff = rt.clock.now() - timedelta(days=rt.settings.retention_days)
    total = 0
    while True:
        with rt.write(SYSTEM) as uow:
            s = uow.session
            state = s.get(AuditState, ERASED_BELOW)
            start = state.value if state is not None else 0
            rows = s.execute(select(AuditEntry.id, AuditEntry.at)
                             .where(AuditEntry.leaf_index >= start)
                             .order_by(AuditEntry.leaf_index).limit(ERASE_BATCH)).all()
            old = list(takewhile(lambda r: r.at < cutoff, rows))
            if not old:
                return total
            ids = [r.id for r in old]
            s.execute(update(AuditEntry).where(AuditEntry.id.in_(ids))
                      .values(payload="", erased_at=uow.now))
            s.execute(delete(AuditAccess).where(AuditAccess.entry_id.in_(ids)))
            if state is None:
                s.add(AuditState(name=ERASED_BELOW, value=start + len(old)))
            else:
                state.value = start + len(old)
            uow.audit("retention.erased", "audit_log", {
                "from": start, "to": start + len(old) - 1, "cutoff": cutoff.isoformat()})
        total += len(old)
        if len(old) < ERASE_BATCH:
            return total


# --- checkpoint files -------------------------------------------------------------------------


CHECKPOINT_GLOB = "*/checkpoint-*.note"


def checkpoint_path(directory: Path, cp: StoredCheckpoint) -> Path:
    """``<dir>/<UTC day>/checkpoint-<size, 15 digits>.note``: a directory a day keeps each
    one listable (one every few seconds is ~17,000 a day)."""
    return Path(directory) / cp.at.strftime("%Y-%m-%d") / f"checkpoint-{cp.size:015d}.note"


def write_checkpoint_file(directory: Path, cp: StoredCheckpoint) -> Path:
    """Write the note (a new file, synced; never replacing one). A file already there with
    the same note is left as it is; with another note (a second tree of the same size: a
    fork, or another key) the new one is kept beside it and the conflict logged."""
    path = checkpoint_path(directory, cp)
    data = cp.note.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_bytes() == data:
            return path
        log.error("AUDIT: checkpoint file %s exists with another note for size %d: two trees "
                  "were signed at one size (a fork, or a changed key); keeping both", path,
                  cp.size)
        path = path.with_name(f"{path.stem}-{hashlib.sha256(data).hexdigest()[:12]}.note")
    except FileNotFoundError:
        pass
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process wrote it meanwhile (the same tree: Ed25519 is deterministic)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def checkpoint_files(directory: Path) -> list[Path]:
    """The checkpoint files under ``directory``, by name (size order within a day)."""
    return sorted(Path(directory).glob(CHECKPOINT_GLOB))


# --- entries as served ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryView:
    """An integrated entry as API.md serves it: ``leaf`` is exactly the hashed text."""

    index: int
    at: str
    actor: str
    kind: str
    subject: str
    payload: dict[str, Any] | None
    policy_version: str
    leaf: str | None
    leaf_hash: bytes
    erased_at: datetime | None


def _view(r: Any) -> EntryView:
    erased = r.erased_at is not None
    leaf = None if erased else leaf_text(r.leaf_index, r.at, r.actor, r.kind, r.subject,
                                         r.payload, r.policy_version)
    return EntryView(
        index=int(r.leaf_index), at=iso(r.at), actor=r.actor, kind=r.kind, subject=r.subject,
        payload=None if erased else json.loads(r.payload), policy_version=r.policy_version,
        leaf=leaf, leaf_hash=bytes(r.leaf_hash), erased_at=r.erased_at,
    )


_ENTRY_COLUMNS = (AuditEntry.leaf_index, AuditEntry.at, AuditEntry.actor, AuditEntry.kind,
                  AuditEntry.subject, AuditEntry.payload, AuditEntry.policy_version,
                  AuditEntry.leaf_hash, AuditEntry.erased_at)


def entries(s: Session, start: int, limit: int) -> list[EntryView]:
    """Integrated entries from index ``start``, in index order."""
    rows = s.execute(select(*_ENTRY_COLUMNS).where(AuditEntry.leaf_index >= start)
                     .order_by(AuditEntry.leaf_index).limit(limit))
    return [_view(r) for r in rows]


def entry(s: Session, index: int) -> EntryView | None:
    r = s.execute(select(*_ENTRY_COLUMNS).where(AuditEntry.leaf_index == index)).first()
    return None if r is None else _view(r)


def nodes_table() -> Table:
    return _N


def leaf_rows(s: Session, start: int, stop: int, chunk: int = 5000) -> Iterable[Any]:
    """``(leaf_index, at, actor, kind, subject, payload, policy_version, leaf_hash,
    erased_at)`` of the entries ``start <= leaf_index < stop``, in order, ``chunk`` per query
    (keyset: no long cursor held open); driver values (``at`` may be SQLite's text,
    ``erased_at`` is only tested for NULL)."""
    at = start
    while at < stop:
        rows = _driver_rows(s, _LEAVES_SQL, (at, stop, chunk))
        if not rows:
            return
        yield from rows
        at = int(rows[-1].leaf_index) + 1
