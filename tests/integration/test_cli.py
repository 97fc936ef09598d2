"""The command line: policy check, keys create/list/revoke, db upgrade (in-process, with the
environment a shell would give it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from cli.main import app
from config.settings import get_settings
from core.db import Database
from core.migrate import current_revision, head_revision

Invoke = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Invoke]:
    """Run ``callgate ARGS`` with CALLGATE_* set (settings are cached per process: cleared)."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        get_settings.cache_clear()
        try:
            return runner.invoke(
                app, list(args), env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False
            )
        finally:
            get_settings.cache_clear()

    yield invoke
    get_settings.cache_clear()


# --- policy check ---------------------------------------------------------------------------


def test_policy_check_default(cli: Invoke) -> None:
    r = cli("policy", "check")
    assert r.exit_code == 0, r.output
    assert "(valid)" in r.stdout
    assert "2026-11-01+" in r.stdout


def test_policy_check_good_file_json(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = "v7"\n[caps]\nper_week = 2\n')
    r = cli("policy", "check", str(path), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["version"] == "v7"
    assert data["policy_version"].startswith("v7+")
    assert data["caps"]["per_week"] == 2
    assert len(data["purposes"]) == 14


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('version = "x"\n[caps]\nperiod = "fortnightly"\n', "caps.period"),
        ('version = "x"\n[calling_hours.states.TX]\nstart = "9"\nend = "21:00"\n',
         "calling_hours.states.TX.start"),
        ('[caps]\nper_day = 1\n', "version"),
        ('version = "x"\n[purposes.survey]\nallowed = false\n', "purposes.survey"),
    ],
)
def test_policy_check_bad_file(cli: Invoke, tmp_path: Path, content: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    r = cli("policy", "check", str(path))
    assert r.exit_code != 0
    assert key in r.stderr
    assert "bad.toml" in r.stderr
    assert "(valid)" not in r.stdout


def test_policy_check_warns_on_wide_window(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "wide.toml"
    path.write_text('version = "x"\n[calling_hours]\nstart = "07:00"\nend = "21:00"\n')
    r = cli("policy", "check", str(path))
    assert r.exit_code == 0
    assert "POLICY WARNING" in r.stderr
    assert "wider than the federal" in r.stderr


# --- keys -----------------------------------------------------------------------------------


def _cells(url: str) -> list[str]:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            return [str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row]
    finally:
        db.dispose()


def test_keys_create_list_revoke(cli: Invoke, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    env = {"CALLGATE_DATABASE_URL": url}

    r = cli("keys", "create", "--role", "dialer", "--name", "acme-dialer-1", env=env)
    assert r.exit_code == 0, r.output
    plaintext = r.stdout.strip()
    assert plaintext.startswith("cg_") and "\n" not in plaintext
    assert "shown once" in r.stderr
    assert plaintext not in r.stderr
    assert all(plaintext not in cell for cell in _cells(url))

    r = cli("keys", "create", "--role", "admin", "--name", "acme-dialer-1", env=env)
    assert r.exit_code != 0
    assert "already exists" in r.stderr

    r = cli("keys", "create", "--role", "superuser", "--name", "x", env=env)
    assert r.exit_code != 0
    assert "unknown role" in r.stderr

    r = cli("keys", "list", env=env)
    assert r.exit_code == 0, r.output
    assert "acme-dialer-1" in r.stdout and "dialer" in r.stdout
    assert plaintext not in r.stdout

    from core.keys import authenticate

    db = Database(url)
    try:
        assert authenticate(db, plaintext) is not None
        r = cli("keys", "revoke", "acme-dialer-1", env=env)
        assert r.exit_code == 0, r.output
        assert authenticate(db, plaintext) is None
    finally:
        db.dispose()

    r = cli("keys", "revoke", "no-such-key", env=env)
    assert r.exit_code != 0
    assert "no key named" in r.stderr
    r = cli("keys", "revoke", "acme-dialer-1", env=env)  # already revoked: nothing new
    assert r.exit_code == 0, r.output

    # Key creation and revocation are in the audit log, by the shell user, with the policy.
    import getpass

    from sqlalchemy import select

    from config.policy import load_policy
    from core.models import AuditEntry

    db = Database(url)
    try:
        with db.read() as s:
            entries = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    finally:
        db.dispose()
    assert [(e.kind, json.loads(e.payload)) for e in entries] == [
        ("key.created", {"name": "acme-dialer-1", "role": "dialer"}),
        ("key.revoked", {"name": "acme-dialer-1", "role": "dialer"}),
    ]
    assert {e.actor for e in entries} == {f"cli:{getpass.getuser()}"}
    assert {e.policy_version for e in entries} == {load_policy().policy_version}
    assert entries[0].subject == entries[1].subject and entries[0].subject.startswith("key:")
    assert plaintext not in " ".join(e.payload for e in entries)


# --- db upgrade -----------------------------------------------------------------------------


def test_db_upgrade_twice(cli: Invoke, empty_db_url: str) -> None:
    env = {"CALLGATE_DATABASE_URL": empty_db_url}
    for _ in range(2):
        r = cli("db", "upgrade", env=env)
        assert r.exit_code == 0, r.output
        assert f"at revision {head_revision(empty_db_url)}" in r.stderr
    assert current_revision(empty_db_url) == head_revision(empty_db_url)


# --- serve: the audit keys at start ------------------------------------------------------------


def test_serve_creates_the_audit_keys_loudly_once_and_refuses_a_readable_key(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start creates the signing key and the pseudonym key, mode 0600, with a loud
    warning and the verifier key to publish; a second start loads them quietly; a key that
    others can read stops the start with a message naming the file."""
    import os
    import stat

    import uvicorn

    started: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    key, pseudo = tmp_path / "keys" / "audit.key", tmp_path / "keys" / "pseudonym.key"
    env = {"CALLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
           "CALLGATE_AUDIT_KEY_FILE": str(key), "CALLGATE_AUDIT_PSEUDONYM_KEY_FILE": str(pseudo),
           "CALLGATE_AUDIT_ORIGIN": "callgate.test/audit"}
    r = cli("serve", env=env)
    assert r.exit_code == 0, r.output
    assert started == ["api.asgi:app"]
    assert "AUDIT KEY CREATED" in r.stderr and "OFF THIS HOST" in r.stderr
    assert "PSEUDONYM KEY CREATED" in r.stderr
    assert "origin callgate.test/audit" in r.stderr
    assert "verifier key callgate.test/audit+" in r.stderr
    for path in (key, pseudo):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = key.read_bytes()
    r = cli("serve", env=env)
    assert r.exit_code == 0 and "CREATED" not in r.stderr, r.output
    assert key.read_bytes() == before
    os.chmod(key, 0o644)
    r = cli("serve", env=env)
    assert r.exit_code == 2 and len(started) == 2
    assert str(key) in r.stderr and "chmod 600" in r.stderr.replace("\n", " ")


def test_a_served_start_records_the_policy_load(runtime: Any) -> None:
    from api.app import record_start
    from tests.helpers import audit_entries

    record_start(runtime)
    (entry,) = audit_entries(runtime, "policy.loaded")
    assert entry.actor == "system:start" and entry.policy_version == runtime.policy_version
    assert json.loads(entry.payload) == {"file": "(shipped default)",
                                         "version": runtime.policy.version}
    assert entry.subject == f"policy:{runtime.policy_version}"
