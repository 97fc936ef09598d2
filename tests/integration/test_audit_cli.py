"""``callgate audit verify [--checkpoints DIR]``: the full check, on both databases. The log
is rebuilt from the database and checked against every checkpoint file and every checkpoint
row; each way of changing the log is caught and named by the first index that disagrees."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from cli.main import app
from config.clock import FakeClock
from config.settings import get_settings
from core import auditlog
from core.runtime import Runtime
from core.signednote import vkey
from tests.helpers import rewrite_log, seal, write_entries

Verify = Callable[..., Result]
SIZE = 60  # entries written in batches of 6, a checkpoint after each: 6, 12, ... 60


@pytest.fixture
def verify(runtime: Runtime, checkpoint_dir: Path) -> Verify:
    runner = CliRunner()

    def run(*args: str) -> Result:
        get_settings.cache_clear()
        try:
            return runner.invoke(
                app, ["audit", "verify", "--checkpoints", str(checkpoint_dir), *args],
                env={"COLUMNS": "300", "CALLGATE_DATABASE_URL": runtime.db.url},
                catch_exceptions=False)
        finally:
            get_settings.cache_clear()

    return run


@pytest.fixture
def log(runtime: Runtime, clock: FakeClock) -> Runtime:
    for start in range(0, SIZE, 6):
        write_entries(runtime, 6, start=start)
        seal(runtime)
        clock.advance(timedelta(seconds=10))
    return runtime


def _span(out: str) -> tuple[int, int]:
    m = re.search(r"at an index from (\d+) to (\d+)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def _index(out: str) -> int:
    m = re.search(r"FAILED at index (\d+)", out)
    assert m, out
    return int(m.group(1))


def _sql(rt: Runtime, statement: str) -> None:
    with rt.db.write() as s:
        s.execute(text(statement))


def test_an_intact_log_holds(log: Runtime, verify: Verify) -> None:
    r = verify()
    assert r.exit_code == 0, r.output
    assert "checked 10 checkpoint file(s)" in r.output  # 6, 12, ..., 60
    assert "(largest size 60)" in r.output
    assert "10 checkpoint(s) in the database" in r.output
    assert "tree of 60 entries rebuilt" in r.output and "OK" in r.output


def test_the_rewrite_attack_is_found(log: Runtime, verify: Verify) -> None:
    """The issue's attack: delete entries, renumber, recompute every hash, re-sign the
    database's checkpoints with its own key. Every internal check passes; the checkpoint files
    (kept elsewhere) do not, and the span names where the log first differs."""
    rewrite_log(log, drop={21, 22})
    r = verify()
    assert r.exit_code == 1, r.output
    lo, hi = _span(r.output)
    assert lo <= 21 <= hi and (lo, hi) == (18, 23), r.output
    assert "checkpoint file" in r.output and "re-hashed" in r.output
    # Without the files, the re-signed database agrees with itself: the files are the proof.
    empty = log.settings.audit_checkpoint_dir.parent / "no-files"
    empty.mkdir()
    r = verify("--checkpoints", str(empty))
    assert r.exit_code == 0, r.output


def test_a_deleted_entry_is_found(log: Runtime, verify: Verify) -> None:
    _sql(log, "DELETE FROM audit_log WHERE leaf_index = 33")
    r = verify()
    assert r.exit_code == 1 and _index(r.output) == 33, r.output
    assert "entry 33 is missing" in r.output


def test_a_cut_tail_is_found(log: Runtime, verify: Verify) -> None:
    _sql(log, "DELETE FROM audit_log WHERE leaf_index >= 50")
    _sql(log, "DELETE FROM audit_nodes WHERE (idx + 1) * (1 << level) > 50")
    _sql(log, "DELETE FROM audit_checkpoints WHERE size > 50")
    r = verify()
    assert r.exit_code == 1 and _index(r.output) == 50, r.output
    assert "cut tail" in r.output


def test_an_edited_payload_is_found(log: Runtime, verify: Verify) -> None:
    _sql(log, "UPDATE audit_log SET payload = '{\"i\":-1}' WHERE leaf_index = 7")
    r = verify()
    assert r.exit_code == 1 and _index(r.output) == 7, r.output
    assert "entry 7: its content does not match its leaf hash" in r.output


def test_a_changed_tree_node_is_found(log: Runtime, verify: Verify) -> None:
    with log.db.write() as s:
        s.execute(text("UPDATE audit_nodes SET hash = :h WHERE level = 2 AND idx = 5"),
                  {"h": b"\x09" * 32})
    r = verify()
    assert r.exit_code == 1, r.output
    assert "node (2, 5)" in r.output and _index(r.output) == 20


def test_a_file_not_signed_by_the_key_is_refused(
    log: Runtime, verify: Verify, checkpoint_dir: Path
) -> None:
    (path,) = [p for p in auditlog.checkpoint_files(checkpoint_dir) if "018" in p.name]
    path.write_text(path.read_text().replace("\n18\n", "\n19\n"))
    r = verify()
    assert r.exit_code == 1, r.output
    assert str(path) in r.output and "does not verify" in r.output


def test_a_pinned_key_that_did_not_sign_is_refused(log: Runtime, verify: Verify) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = vkey(auditlog.signer(log).key_name, Ed25519PrivateKey.generate())
    r = verify("--vkey", other)
    assert r.exit_code == 1 and "not signed by" in r.output, r.output
    r = verify("--vkey", auditlog.signer(log).vkey)
    assert r.exit_code == 0, r.output
