"""Fixtures: every database test runs on a real SQLite file and, when
``CALLGATE_TEST_POSTGRES_URL`` is set, again on a real PostgreSQL, each on a fresh,
fully migrated database (SQLite: a copy of a migrated template file; PostgreSQL: a
database created from a migrated template database)."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import make_url

from config.clock import FakeClock
from config.policy import load_policy
from config.settings import Settings
from core.db import Database
from core.keys import Role, create_key
from core.migrate import upgrade
from core.runtime import Runtime

# Starlette 1.x warns (as an error here) when its TestClient runs on httpx rather than httpx2.
# The warning concerns the test tool, not callgate: import it once with that warning silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import starlette.testclient  # noqa: F401

PG_URL = os.environ.get("CALLGATE_TEST_POSTGRES_URL", "").strip()
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]
# Tuesday 2026-11-24 17:00 UTC: 12:00 Eastern, 11:00 Central, 09:00 Pacific.
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    url = make_url(PG_URL)
    return psycopg.connect(
        host=url.host or "localhost",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=True,
    )


def _pg_url_for(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def audit_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One audit signing key and pseudonym key for the whole session, outside the working
    directory (every Settings() and every server started by a test reads them from the
    environment); checkpoint directories are per test (``checkpoint_dir``)."""
    keys = tmp_path_factory.mktemp("audit-keys")
    saved = {k: os.environ.get(k) for k in ("CALLGATE_AUDIT_KEY_FILE",
                                            "CALLGATE_AUDIT_PSEUDONYM_KEY_FILE")}
    os.environ["CALLGATE_AUDIT_KEY_FILE"] = str(keys / "audit.key")
    os.environ["CALLGATE_AUDIT_PSEUDONYM_KEY_FILE"] = str(keys / "pseudonym.key")
    yield keys
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def checkpoint_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's checkpoint directory (CALLGATE_AUDIT_CHECKPOINT_DIR)."""
    path = tmp_path / "checkpoints"
    monkeypatch.setenv("CALLGATE_AUDIT_CHECKPOINT_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("CALLGATE_TEST_POSTGRES_URL not set")
    name = f"cg_tpl_{os.getpid()}"
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(_pg_url_for(name))
    yield name
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database URL on each backend."""
    if request.param == "sqlite":
        tpl: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "callgate.db"
        shutil.copyfile(tpl, path)
        yield f"sqlite:///{path}"
        return
    tpl_name: str = request.getfixturevalue("pg_template")
    name = f"cg_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{tpl_name}"')
    yield _pg_url_for(name)
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def runtime(db_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(database_url=db_url, max_body_bytes=2 * 1024 * 1024)
    db = Database(db_url)
    rt = Runtime(db=db, policy=load_policy(), clock=clock, settings=settings)
    yield rt
    db.dispose()


@pytest.fixture
def db(runtime: Runtime) -> Database:
    return runtime.db


@pytest.fixture
def app(runtime: Runtime):  # type: ignore[no-untyped-def]
    from api.app import create_app

    return create_app(runtime, migrate=False)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def keys(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Authorization headers for one key of each role."""
    out = {}
    for role in Role:
        _, plaintext = create_key(runtime.db, role, f"test-{role.value}", runtime.clock.now())
        out[role.value] = {"Authorization": f"Bearer {plaintext}"}
    return out


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, *unmigrated*, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"cg_e_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _pg_url_for(name)
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
