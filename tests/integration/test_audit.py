"""The audit log as a Merkle log, on both databases: entries become leaves in commit order,
the stored tree gives RFC 9162's proofs, checkpoints are signed and written out, the
incremental check finds what changed since it last looked, and concurrent writers and
sequencers leave one tree."""

from __future__ import annotations

import json
import os
import random
import stat
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from config.clock import FakeClock
from consent.schemas import ConsentIn
from consent.service import record_consent
from core import audit, auditlog, auditverify, merkle
from core.keys import Role
from core.models import AuditCheckpoint, AuditEntry, AuditNode
from core.runtime import Runtime
from core.signednote import open_checkpoint
from tests.helpers import (
    PHONE,
    audit_entries,
    campaign_body,
    consent_body,
    days,
    identity,
    rewrite_log,
    seal,
    write_entries,
)
from tests.unit.test_merkle import RefTree

Keys = dict[str, dict[str, str]]


def _operations(client: TestClient, keys: Keys, clock: FakeClock) -> None:
    mgr, admin = keys["campaign_manager"], keys["admin"]
    steps = [
        client.post("/v1/consents", json=consent_body(clock.now() - days(3)), headers=mgr),
        client.post("/v1/campaigns", json=campaign_body(), headers=mgr),
        client.get("/v1/consents", params={"phone": PHONE}, headers=keys["compliance"]),
        client.post("/v1/consents/revocations", json={"phone": PHONE, "source": "web"},
                    headers=mgr),
        client.delete(f"/v1/dnc/{PHONE}", headers=admin),
        client.post("/v1/dnc", json={"phone": "+13145550111", "reason": "r"}, headers=mgr),
    ]
    assert [r.status_code for r in steps] == [201, 201, 200, 201, 200, 201]


def _verify(client: TestClient, keys: Keys) -> dict[str, Any]:
    resp = client.get("/v1/audit/verify", headers=keys["compliance"])
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _leaves(rt: Runtime) -> list[bytes]:
    with rt.db.read() as s:
        views = auditlog.entries(s, 0, 10**6)
    assert [v.index for v in views] == list(range(len(views)))
    return [v.leaf.encode() for v in views if v.leaf is not None]


# --- entries, leaves, order ------------------------------------------------------------------


def test_entries_become_leaves_in_order_once_sealed(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    _operations(client, keys, clock)
    pending = audit_entries(runtime)
    assert all(e.leaf_index is None and e.leaf_hash is None for e in pending)
    assert _verify(client, keys) == {"ok": True, "entries": 0, "checkpoint": None,
                                     "behind": 0, "index": None, "problem": None}
    seal(runtime)
    entries = audit_entries(runtime)
    assert [e.kind for e in entries] == [
        *["key.created"] * 4,
        "consent.recorded",
        "campaign.created",
        "patient_data.read",
        "consent.revoked",
        "dnc.added",
        "dnc.lifted",
        "dnc.added",
    ]
    assert [e.leaf_index for e in entries] == list(range(len(entries)))
    for e in entries:
        leaf = audit.leaf_text(e.leaf_index, e.at, e.actor, e.kind, e.subject, e.payload,
                               e.policy_version)
        assert e.leaf_hash == merkle.leaf_hash(leaf.encode())
        assert json.loads(leaf)["index"] == e.leaf_index
        assert leaf == audit.canonical_json(json.loads(leaf))  # canonical
    out = _verify(client, keys)
    root = merkle.root(len(entries), lambda lv, i: _node(runtime, lv, i))
    assert out == {"ok": True, "entries": len(entries),
                   "checkpoint": {"size": len(entries), "root_hash": root.hex()},
                   "behind": 0, "index": None, "problem": None}
    # The phone number appears nowhere in the log: the read names it by pseudonym.
    with runtime.db.read() as s:
        dump = " ".join(str(v) for r in s.execute(select(AuditEntry)).scalars()
                        for v in (r.payload, r.subject, r.actor))
    assert "5550100" not in dump
    assert runtime.pseudonym(PHONE) in dump


def _node(rt: Runtime, level: int, index: int) -> bytes:
    with rt.db.read() as s:
        return auditlog.fetch_nodes(s, [(level, index)])[(level, index)]


def test_rolled_back_unit_writes_no_entry(runtime: Runtime) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), runtime.write("system:test") as uow:
        uow.audit("test.kind", "x:1")
        raise Boom
    with runtime.write("system:test") as uow:
        uow.audit("test.ok", "x:2")
    assert [e.kind for e in audit_entries(runtime)] == ["test.ok"]
    assert seal(runtime) == 1


# --- proofs from the stored tree against RFC 9162's definitions ---------------------------------


def test_proofs_for_every_size_up_to_64(runtime: Runtime) -> None:
    rnd = random.Random(64)
    written = 0
    while written < 64:  # written and sealed in batches of random sizes
        n = min(64 - written, rnd.randint(1, 9))
        write_entries(runtime, n, start=written)
        written += n
        auditlog.integrate(runtime.db, batch=rnd.randint(1, 7))
    ref = RefTree(_leaves(runtime))
    with runtime.db.read() as s:
        for size in range(1, 65):
            assert auditlog.root_at(s, size) == ref.mth(0, size)
            for index in range(size):
                leaf, proof = auditlog.inclusion_proof(s, index, size)
                assert leaf == ref.mth(index, index + 1)
                assert proof == ref.path(index, 0, size), (index, size)
                assert merkle.verify_inclusion(leaf, index, size, proof, ref.mth(0, size))
            for m in range(1, size + 1):
                proof = auditlog.consistency_proof(s, m, size)
                assert proof == ([] if m == size else ref.proof(m, size)), (m, size)
                assert merkle.verify_consistency(m, size, ref.mth(0, m), ref.mth(0, size),
                                                 proof)


def test_proofs_of_a_larger_tree_sealed_in_random_batches(runtime: Runtime) -> None:
    rnd = random.Random(1703)
    total = 1500
    write_entries(runtime, total)
    while auditlog.integrate(runtime.db, batch=rnd.randint(1, 300), limit=1):
        pass
    ref = RefTree(_leaves(runtime))
    with runtime.db.read() as s:
        assert auditlog.tree_size(s) == total
        for _ in range(150):
            size = rnd.randint(1, total)
            index = rnd.randrange(size)
            leaf, proof = auditlog.inclusion_proof(s, index, size)
            assert leaf == ref.mth(index, index + 1)
            assert proof == ref.path(index, 0, size)
            m = rnd.randint(1, size)
            proof = auditlog.consistency_proof(s, m, size)
            assert proof == ([] if m == size else ref.proof(m, size))


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoints_are_signed_stored_and_written_out(
    runtime: Runtime, checkpoint_dir: Path, clock: FakeClock
) -> None:
    key_file = runtime.settings.audit_key_file
    first = auditlog.make_checkpoint(runtime)  # the empty tree, before any entry
    assert first is not None and first.size == 0 and first.root_hash == merkle.EMPTY_ROOT
    write_entries(runtime, 5)
    auditlog.integrate(runtime.db)
    assert auditlog.make_checkpoint(runtime) is None  # grown, but not yet due
    clock.advance(timedelta(seconds=runtime.settings.audit_checkpoint_seconds))
    cp = auditlog.make_checkpoint(runtime)
    assert cp is not None and cp.size == 5
    assert auditlog.make_checkpoint(runtime, force=True) is None  # not grown
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    sign = auditlog.signer(runtime)
    files = auditlog.checkpoint_files(checkpoint_dir)
    assert [p.read_text() for p in files] == [first.note, cp.note]
    parsed = open_checkpoint(cp.note, sign.vkey, sign.origin)
    assert (parsed.size, parsed.root_hash) == (5, cp.root_hash)
    with runtime.db.read() as s:
        assert auditlog.root_at(s, 5) == cp.root_hash
        rows = s.execute(select(AuditCheckpoint.size).order_by(AuditCheckpoint.size)).all()
    assert [r[0] for r in rows] == [0, 5]


def test_a_conflicting_checkpoint_file_is_kept_beside_the_first(
    runtime: Runtime, checkpoint_dir: Path
) -> None:
    write_entries(runtime, 3)
    cp = auditlog.StoredCheckpoint(3, b"\x01" * 32, runtime.clock.now(), "first note\n")
    path = auditlog.write_checkpoint_file(checkpoint_dir, cp)
    again = auditlog.write_checkpoint_file(checkpoint_dir, cp)
    assert again == path
    other = auditlog.write_checkpoint_file(
        checkpoint_dir, auditlog.StoredCheckpoint(3, b"\x02" * 32, cp.at, "second note\n"))
    assert other != path and path.read_text() == "first note\n"
    assert other.read_text() == "second note\n"


def test_checkpoint_endpoints_and_proofs_over_http(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    c = keys["compliance"]
    assert client.get("/v1/audit/checkpoint", headers=c).status_code == 404
    write_entries(runtime, 10)
    seal(runtime)
    size = 14  # 4 keys + 10
    got = client.get("/v1/audit/checkpoint", headers=c).json()
    sign = auditlog.signer(runtime)
    assert got["size"] == size and got["origin"] == sign.origin
    assert got["key_name"] == sign.key_name
    assert open_checkpoint(got["note"], sign.vkey).root_hash.hex() == got["root_hash"]
    assert client.get("/v1/audit/checkpoint", params={"size": size}, headers=c).json() == got
    assert client.get("/v1/audit/checkpoint", params={"size": 3}, headers=c).status_code == 404
    key = client.get("/v1/audit/key", headers=c).json()
    assert key["vkey"] == sign.vkey and key["key_id"] == sign.verifier.key_id.hex()
    page = client.get("/v1/audit/entries", params={"from": 2, "limit": 5}, headers=c).json()
    assert [e["index"] for e in page["items"]] == [2, 3, 4, 5, 6]
    assert client.get("/v1/audit/entries", params={"from": 99}, headers=c).json() == {
        "items": []}
    e = client.get("/v1/audit/entries/7", headers=c).json()
    assert e["leaf"] == audit.canonical_json({k: e[k] for k in (
        "index", "at", "actor", "kind", "subject", "payload", "policy_version")})
    assert client.get("/v1/audit/entries/14", headers=c).status_code == 404
    proof = client.get("/v1/audit/proof/inclusion", params={"index": 7, "size": size},
                       headers=c).json()
    assert proof["leaf_hash"] == e["leaf_hash"] == merkle.leaf_hash(e["leaf"].encode()).hex()
    assert merkle.verify_inclusion(bytes.fromhex(proof["leaf_hash"]), 7, size,
                                   [bytes.fromhex(h) for h in proof["hashes"]],
                                   bytes.fromhex(got["root_hash"]))
    cons = client.get("/v1/audit/proof/consistency", params={"from": 4, "to": size},
                      headers=c).json()
    assert cons["from"] == 4 and cons["to"] == size
    assert client.get("/v1/audit/proof/consistency", params={"from": size, "to": size},
                      headers=c).json()["hashes"] == []
    for path, params in [
        ("/v1/audit/proof/inclusion", {"index": 3, "size": 3}),
        ("/v1/audit/proof/inclusion", {"index": 0, "size": size + 1}),
        ("/v1/audit/proof/inclusion", {"index": -1, "size": 3}),
        ("/v1/audit/proof/inclusion", {"index": "x", "size": 3}),
        ("/v1/audit/proof/consistency", {"from": 0, "to": 3}),
        ("/v1/audit/proof/consistency", {"from": 5, "to": 4}),
        ("/v1/audit/proof/consistency", {"from": 1, "to": size + 1}),
        ("/v1/audit/entries", {"limit": 1001}),
    ]:
        r = client.get(path, params=params, headers=c)
        assert r.status_code == 422, (path, params, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    for role in ("dialer", "campaign_manager"):
        assert client.get("/v1/audit/checkpoint", headers=keys[role]).status_code == 403
    assert client.get("/v1/audit/key", headers=keys["admin"]).status_code == 200


# --- the incremental check ----------------------------------------------------------------


def _sql(rt: Runtime, statement: str, **params: Any) -> None:
    with rt.db.write() as s:
        s.execute(text(statement), {k: v for k, v in params.items() if f":{k}" in statement})


def test_incremental_check_reads_only_what_is_new(runtime: Runtime) -> None:
    write_entries(runtime, 20)
    seal(runtime)
    v = auditverify.verify_incremental(runtime)
    assert v.ok and v.entries == 20 and v.anchor and "checkpoint file" in v.anchor
    # An edit below the anchor that leaves the stored tree alone is the full check's to find
    # (and an auditor's inclusion proof's): this check does not re-read old entries.
    _sql(runtime, "UPDATE audit_log SET payload = '{}' WHERE leaf_index = 3")
    write_entries(runtime, 30, start=20)
    seal(runtime)
    v = auditverify.verify_incremental(runtime, budget=1000)
    assert v.ok and v.entries == 50
    write_entries(runtime, 2500, start=50)
    seal(runtime)
    v = auditverify.verify_incremental(runtime, budget=1000)
    assert v.ok and (v.entries, v.behind) == (1050, 1500)
    v = auditverify.verify_incremental(runtime, budget=1000)
    v = auditverify.verify_incremental(runtime, budget=1000)
    assert v.ok and (v.entries, v.behind) == (2550, 0)


@pytest.mark.parametrize("tamper", ["payload", "actor", "at", "leaf_hash", "delete"])
def test_incremental_check_finds_a_changed_new_entry(runtime: Runtime, tamper: str) -> None:
    write_entries(runtime, 10)
    seal(runtime)
    assert auditverify.verify_incremental(runtime).ok
    write_entries(runtime, 10, start=10)
    seal(runtime)
    at_value = ("2020-01-01 00:00:00.000000" if runtime.db.is_sqlite
                else "2020-01-01T00:00:00+00:00")
    statement = {
        "payload": "UPDATE audit_log SET payload = :p WHERE leaf_index = 13",
        "actor": "UPDATE audit_log SET actor = 'key:someone-else' WHERE leaf_index = 13",
        "at": f"UPDATE audit_log SET at = '{at_value}' WHERE leaf_index = 13",
        "leaf_hash": "UPDATE audit_log SET leaf_hash = leaf_hash WHERE leaf_index = 13",
        "delete": "DELETE FROM audit_log WHERE leaf_index = 13",
    }[tamper]
    if tamper == "leaf_hash":  # the stored leaf hash changed alone
        with runtime.db.write() as s:
            s.execute(select(AuditEntry).where(AuditEntry.leaf_index == 13)).scalar_one(
            ).leaf_hash = b"\x07" * 32
    else:
        _sql(runtime, statement, p='{"i":99}')
    v = auditverify.verify_incremental(runtime)
    assert not v.ok and v.index == 13, v
    assert v.problem and ("entry 13" in v.problem)
    assert v.entries == 10  # the anchor stays where it was
    assert not auditverify.verify_incremental(runtime).ok  # and stays failed


def test_incremental_check_finds_a_rewrite_below_its_anchor(runtime: Runtime) -> None:
    """The issue's attack: entries deleted, the rest renumbered, every hash recomputed and
    the database's checkpoints re-signed with the log's own key. The checkpoint files (kept
    outside the database) and the process's own anchor still disagree."""
    write_entries(runtime, 40)
    seal(runtime)
    assert auditverify.verify_incremental(runtime).ok
    rewrite_log(runtime, drop={7, 8}, pad=2)  # same size again: only the roots differ
    v = auditverify.verify_incremental(runtime)
    assert not v.ok and "rewritten below index 40" in str(v.problem), v
    # A new process (no anchor in memory) anchors on the newest checkpoint file.
    fresh = Runtime(db=runtime.db, policy=runtime.policy, clock=runtime.clock,
                    settings=runtime.settings)
    v = auditverify.verify_incremental(fresh)
    assert not v.ok and "checkpoint file" in str(v.problem), v


def test_incremental_check_finds_a_rewrite_above_its_anchor(
    runtime: Runtime, clock: FakeClock
) -> None:
    """Rewritten after a checkpoint file was written but before this process checked it:
    the newest file on the way disagrees with the re-signed database."""
    write_entries(runtime, 10)
    seal(runtime)
    assert auditverify.verify_incremental(runtime).ok
    write_entries(runtime, 10, start=10)
    clock.advance(timedelta(seconds=10))
    seal(runtime)  # file at 20
    rewrite_log(runtime, drop={15}, pad=1)
    v = auditverify.verify_incremental(runtime)
    assert not v.ok and "do not give the root signed in checkpoint file" in str(v.problem), v


def test_incremental_check_finds_a_cut_tail(runtime: Runtime) -> None:
    write_entries(runtime, 30)
    seal(runtime)
    assert auditverify.verify_incremental(runtime).ok
    rewrite_log(runtime, drop=set(range(25, 30)))  # tail cut, the database re-signed at 25
    v = auditverify.verify_incremental(runtime)
    assert not v.ok and v.index == 25 and "removed" in str(v.problem), v
    fresh = Runtime(db=runtime.db, policy=runtime.policy, clock=runtime.clock,
                    settings=runtime.settings)
    v = auditverify.verify_incremental(fresh)
    assert not v.ok and v.index == 25 and "removed" in str(v.problem), v


def test_a_forged_checkpoint_row_is_refused(runtime: Runtime) -> None:
    write_entries(runtime, 5)
    seal(runtime)
    with runtime.db.write() as s:
        row = s.get(AuditCheckpoint, 5)
        assert row is not None
        row.note = row.note.replace("\n5\n", "\n6\n")
    v = auditverify.verify_incremental(runtime)
    assert not v.ok and "latest checkpoint" in str(v.problem)


# --- retention --------------------------------------------------------------------------------


def test_payloads_past_retention_are_erased_and_proofs_still_verify(
    client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    write_entries(runtime, 6)
    seal(runtime)
    before = client.get("/v1/audit/checkpoint", headers=keys["compliance"]).json()
    clock.advance(timedelta(days=runtime.settings.retention_days + 1))
    write_entries(runtime, 3, start=6)  # recent: kept
    assert auditlog.erase_past_retention(runtime) == 10  # 4 keys + 6 entries
    assert auditlog.erase_past_retention(runtime) == 0
    seal(runtime)
    c = keys["compliance"]
    old = client.get("/v1/audit/entries/5", headers=c).json()
    assert old["payload"] is None and old["leaf"] is None and old["erased_at"]
    assert old["kind"] == "test.entry" and len(old["leaf_hash"]) == 64
    cp = client.get("/v1/audit/checkpoint", headers=c).json()
    proof = client.get("/v1/audit/proof/inclusion", params={"index": 5, "size": cp["size"]},
                       headers=c).json()
    assert proof["leaf_hash"] == old["leaf_hash"]
    assert merkle.verify_inclusion(bytes.fromhex(old["leaf_hash"]), 5, cp["size"],
                                   [bytes.fromhex(h) for h in proof["hashes"]],
                                   bytes.fromhex(cp["root_hash"]))
    cons = client.get("/v1/audit/proof/consistency",
                      params={"from": before["size"], "to": cp["size"]}, headers=c).json()
    assert merkle.verify_consistency(before["size"], cp["size"],
                                     bytes.fromhex(before["root_hash"]),
                                     bytes.fromhex(cp["root_hash"]),
                                     [bytes.fromhex(h) for h in cons["hashes"]])
    assert _verify(client, keys)["ok"] is True
    recent = client.get("/v1/audit/entries/11", headers=c).json()
    assert recent["payload"] is not None
    erased = [e for e in audit_entries(runtime, "retention.erased")]
    assert len(erased) == 1 and json.loads(erased[0].payload)["to"] == 9


# --- concurrency --------------------------------------------------------------------------


WRITERS = 8
PER_WRITER = 25


def test_concurrent_writers_and_sequencers_leave_one_tree(
    runtime: Runtime, keys: Keys, clock: FakeClock
) -> None:
    """Writers append with no lock while two sequencers integrate at the same time: every
    entry ends in the tree exactly once, at consecutive indices, and the tree checks."""
    who = identity(runtime, Role.campaign_manager)
    barrier = threading.Barrier(WRITERS + 2)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(w: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(PER_WRITER):
                body = consent_body(clock.now() - timedelta(days=1),
                                    phone=f"+1314555{w:02d}{i:02d}")
                record_consent(runtime, who, ConsentIn.model_validate(body))
        except BaseException as exc:  # reported below, with the thread's number
            errors.append(exc)

    def sequencer() -> None:
        try:
            barrier.wait(timeout=30)
            while not done.is_set():
                auditlog.integrate(runtime.db, batch=7)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    sequencers = [threading.Thread(target=sequencer) for _ in range(2)]
    for t in writers + sequencers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    done.set()
    for t in sequencers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in writers + sequencers)
    assert errors == []
    seal(runtime)
    expected = WRITERS * PER_WRITER + 4
    with runtime.db.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == expected
        assert auditlog.tree_size(s) == expected
        assert auditlog.pending_count(s) == 0
        assert s.scalar(select(func.count()).select_from(AuditNode)) == sum(
            expected >> k for k in range(1, expected.bit_length()))
    sign = auditlog.signer(runtime)
    report = auditverify.verify_full(runtime.db, sign.verifier, sign.origin,
                                     runtime.settings.audit_checkpoint_dir)
    assert report.ok and report.size == expected, report


def test_a_late_committer_is_integrated_after_what_committed_before_it(runtime: Runtime) -> None:
    """Commit order. Writer A inserts first (the lower id) but commits last; B inserts and
    commits; a sequencer pass in between integrates B. A is not skipped: the next pass
    integrates it, after B (the order they committed in). On SQLite a writer holds the write
    lock from its first statement, so B cannot commit while A is open: they serialise."""
    if runtime.db.is_sqlite:
        pytest.skip("SQLite serialises writers: a later insert cannot commit first")
    a_inserted, b_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            with runtime.write("system:a") as uow:
                uow.audit("test.a", "a")
                audit.flush_pending(uow.session)  # inserted now: it has the lower id
                a_inserted.set()
                assert b_done.wait(30)
                # ... while B is committed and sealed, A's transaction stays open.
                assert auditlog.integrate(runtime.db) == 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer_a)
    t.start()
    assert a_inserted.wait(30)
    with runtime.write("system:b") as uow:
        uow.audit("test.b", "b")
    b_done.set()
    t.join(60)
    assert errors == []
    assert auditlog.integrate(runtime.db) == 1  # A, late: not skipped
    rows = {e.kind: e for e in audit_entries(runtime)}
    assert rows["test.a"].id < rows["test.b"].id  # A inserted first ...
    assert rows["test.b"].leaf_index == 0 and rows["test.a"].leaf_index == 1  # ... B first
    seal(runtime)
    assert auditverify.verify_incremental(runtime).ok


def test_a_page_does_not_wait_for_a_running_check(runtime: Runtime) -> None:
    """The overview asks with wait=False: while the background check holds the lock, the
    last result comes back at once (the page never queues behind a long check)."""
    write_entries(runtime, 5)
    seal(runtime)
    first = auditverify.verify_incremental(runtime)
    st = runtime.state(auditverify.VerifyState)
    with st.lock:  # a check in progress
        assert auditverify.verify_incremental(runtime, wait=False) is first
    write_entries(runtime, 5, start=5)
    seal(runtime)
    again = auditverify.verify_incremental(runtime, wait=False)
    assert again is not first and again.ok and again.entries == 10


def test_a_background_check_moves_this_processs_anchor(runtime: Runtime) -> None:
    """The helper's verified checkpoint becomes this process's anchor (a page then reads only
    what came after it); a failed or partial background check moves nothing."""
    write_entries(runtime, 30)
    seal(runtime)
    helper = Runtime(db=runtime.db, policy=runtime.policy, clock=runtime.clock,
                     settings=runtime.settings)  # another process's state
    v = auditverify.verify_incremental(helper)
    assert v.ok and v.entries == 30
    auditverify.record_background(runtime, auditverify.Verification(False, 0, v.checkpoint))
    assert runtime.state(auditverify.VerifyState).anchor is None
    auditverify.record_background(runtime, v)
    anchor = runtime.state(auditverify.VerifyState).anchor
    assert anchor is not None and anchor.size == 30 and "background" in anchor.source
    write_entries(runtime, 4, start=30)
    seal(runtime)
    mine = auditverify.verify_incremental(runtime)
    assert mine.ok and mine.entries == 34 and "background" in str(mine.anchor)
