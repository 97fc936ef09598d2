"""Migrations: an empty database migrated to head matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from core.db import make_engine
from core.migrate import current_revision, head_revision, upgrade
from core.models import metadata


def _diffs(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, metadata()))
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision(empty_db_url)
    assert _diffs(empty_db_url) == []
    engine = make_engine(empty_db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(metadata().tables) <= tables
    assert {"consents", "revocations", "dnc_entries", "audit_log", "api_keys"} <= tables


def test_an_empty_database_differs_from_the_models(empty_db_url: str) -> None:
    """The comparison itself can fail: before migrating, every table is missing."""
    diffs = _diffs(empty_db_url)
    added = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"}
    assert set(metadata().tables) == added


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision(empty_db_url)
    assert _diffs(empty_db_url) == []


def test_0002_keeps_the_calls_and_their_uniqueness(empty_db_url: str) -> None:
    """A database at 0001 with calls in it: after 0002, a refused call is not accepted, the
    others are, and the accepted uniqueness of external ids still holds (a refused call's
    external id may come again; an accepted one's may not)."""
    import pytest
    from sqlalchemy import exc, text

    upgrade(empty_db_url, "0001")
    now = "2026-11-24 17:00:00.000000"
    call_cols = ("id, campaign_id, external_id, phone, priority, status, attempts, "
                 "created_at, updated_at, created_by, policy_version")

    def call(conn, i: int, ext: str, status: str) -> None:  # type: ignore[no-untyped-def]
        conn.execute(text(
            f"INSERT INTO calls ({call_cols}) VALUES (:id, 'camp', :ext, :phone, 5, :status, "
            "0, :now, :now, 'k', 'v')"),
            {"id": f"call-{i}", "ext": ext, "phone": f"+1314555{1000 + i}", "status": status,
             "now": now})

    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO campaigns (id, name, purpose, channel, provider_name, "
                "callback_number, max_attempts, created_by, created_at, policy_version) "
                "VALUES ('camp', 'c', 'appointment_reminder', 'autodialed_voice', 'Mercy', "
                "'+13145550199', 3, 'k', :now, 'v')"), {"now": now})
            for i, (ext, status) in enumerate([("a", "queued"), ("b", "refused"),
                                               ("c", "completed"), ("b", "leased")]):
                call(conn, i, ext, status)
        upgrade(empty_db_url)
        assert _diffs(empty_db_url) == []
        with engine.begin() as conn:
            got = dict(conn.execute(text("SELECT id, accepted FROM calls")).all())
            assert {k: bool(v) for k, v in got.items()} == {
                "call-0": True, "call-1": False, "call-2": True, "call-3": True}
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("calls")}
            assert "ix_calls_phone" in indexes and "ix_calls_phone_status" not in indexes
        with pytest.raises(exc.IntegrityError), engine.begin() as conn:
            call(conn, 4, "c", "queued")  # "c" has an accepted call
        with engine.begin() as conn:
            conn.execute(text("UPDATE calls SET accepted = false WHERE id = 'call-0'"))
            call(conn, 5, "a", "queued")  # "a"'s only call is no longer accepted
    finally:
        engine.dispose()


def _index_sql(url: str) -> dict[str, str]:
    """Every index as the database itself defines it (SQLite's CREATE INDEX text,
    PostgreSQL's pg_indexes.indexdef), whitespace and quotes normalised. compare_metadata
    does not look at an index's column order (DESC) or its WHERE clause; this does."""
    import re

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                ).all()
            else:
                rows = conn.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                ).all()
    finally:
        engine.dispose()
    return {name: re.sub(r"\s+", " ", sql.replace('"', "")).strip() for name, sql in rows}


def test_migrated_indexes_are_the_models_indexes(empty_db_url: str) -> None:
    """Index for index, the migrated schema is what the models create: column order and
    direction, uniqueness and partial WHERE included (a batch migration on SQLite once
    dropped the DESC of ix_calls_queue_order without any other test noticing). Also after a
    downgrade to 0001 and an upgrade again."""
    from alembic import command

    from core.migrate import alembic_config

    upgrade(empty_db_url)
    migrated = _index_sql(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "0001")
    upgrade(empty_db_url)
    assert _index_sql(empty_db_url) == migrated
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                for (table,) in conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'").all():
                    conn.exec_driver_sql(f'DROP TABLE "{table}"')
            else:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
            metadata().create_all(conn)
    finally:
        engine.dispose()
    assert _index_sql(empty_db_url) == migrated
    assert "priority DESC" in migrated["ix_calls_queue_order"]
    # Parked calls (deferred until next_eligible_at) are out of the queue order (0003).
    assert "parked" in migrated["ix_calls_queue_order"].split("WHERE")[1]
    assert "parked" in migrated["ix_calls_parked"].split("WHERE")[1]


def _migration_0005():  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    import migrations

    path = Path(migrations.__file__).parent / "versions" / "0005_audit_merkle.py"
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_chain(url: str, n: int) -> list[str]:
    """A database at 0004 holding a valid hash chain of ``n`` entries; their hashes."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    m = _migration_0005()
    upgrade(url, "0004")
    engine = make_engine(url)
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    prev, hashes = m._GENESIS, []
    try:
        with engine.begin() as conn:
            for seq in range(1, n + 1):
                at = t0 + timedelta(seconds=seq)
                payload = m._canonical({"i": seq, "note": "réessai"})
                h = m._chain_hash(prev, seq, at, "system:test", "test.old", f"t:{seq}",
                                  payload, "v1")
                conn.execute(text(
                    "INSERT INTO audit_log (seq, at, actor, kind, subject, payload, "
                    "policy_version, prev_hash, hash) VALUES (:seq, :at, 'system:test', "
                    "'test.old', :subject, :payload, 'v1', :prev, :h)"),
                    {"seq": seq, "at": at if engine.dialect.name != "sqlite"
                     else at.strftime("%Y-%m-%d %H:%M:%S.%f"), "subject": f"t:{seq}",
                     "payload": payload, "prev": prev, "h": h})
                hashes.append(h)
                prev = h
            conn.execute(text("UPDATE audit_head SET seq = :n, hash = :h WHERE id = 1"),
                         {"n": n, "h": prev})
    finally:
        engine.dispose()
    return hashes


def test_0005_seals_the_old_chain_as_the_first_leaves(empty_db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Today's entries become the first leaves in seq order (index = seq - 1), then the
    chain's head as one more entry; new entries follow; the tree checks."""
    import json

    from config.clock import FakeClock
    from config.policy import load_policy
    from config.settings import Settings
    from core import auditlog, auditverify
    from core.db import Database
    from core.runtime import Runtime
    from tests.conftest import T0
    from tests.helpers import audit_entries, seal

    hashes = _old_chain(empty_db_url, 25)
    upgrade(empty_db_url)
    assert _diffs(empty_db_url) == []
    rt = Runtime(db=Database(empty_db_url), policy=load_policy(), clock=FakeClock(T0),
                 settings=Settings(database_url=empty_db_url,
                                   audit_checkpoint_dir=tmp_path / "cps"))
    try:
        with rt.write("system:test") as uow:
            uow.audit("test.new", "t:new")
        seal(rt)
        entries = audit_entries(rt)
        assert [(e.id, e.leaf_index) for e in entries[:25]] == [(s, s - 1) for s in range(1, 26)]
        assert [e.kind for e in entries[25:]] == ["audit.migrated", "test.new"]
        assert json.loads(entries[25].payload) == {
            "chain_entries": 25, "chain_head": hashes[-1], "revision": "0005"}
        with rt.db.read() as s:
            first = auditlog.entry(s, 3)
        assert first is not None and first.payload == {"i": 4, "note": "réessai"}
        assert first.at == "2026-11-20T00:00:04.000000+00:00"
        sign = auditlog.signer(rt)
        report = auditverify.verify_full(rt.db, sign.verifier, sign.origin, tmp_path / "cps")
        assert report.ok and report.size == 27, report
    finally:
        rt.db.dispose()


def test_0005_refuses_to_seal_a_broken_chain(empty_db_url: str) -> None:
    import pytest
    from sqlalchemy import text

    _old_chain(empty_db_url, 10)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET payload = '{}' WHERE seq = 4"))
    finally:
        engine.dispose()
    with pytest.raises(RuntimeError, match="entry 4 does not match its hash"):
        upgrade(empty_db_url)
    assert current_revision(empty_db_url) == "0004"


def test_0007_adds_the_event_tables_and_goes_back(empty_db_url: str) -> None:
    """0007 (events out) on a database at 0006: its tables appear; downgrading removes
    them and leaves 0006's schema."""
    from alembic import command

    from core.migrate import alembic_config

    upgrade(empty_db_url, "0006")
    upgrade(empty_db_url, "0007")
    engine = make_engine(empty_db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"events", "webhook_subscriptions", "webhook_deliveries"} <= tables
        command.downgrade(alembic_config(empty_db_url), "0006")
        tables = set(inspect(engine).get_table_names())
        assert not {"events", "webhook_subscriptions", "webhook_deliveries"} & tables
        assert "idempotency_keys" in tables
    finally:
        engine.dispose()
    assert current_revision(empty_db_url) == "0006"


def test_0008_keeps_campaigns_and_calls_and_holds_one_reply_per_spell(empty_db_url: str
                                                                       ) -> None:
    """A database at 0005 with a campaign and a call: after 0008 they are there, with no
    template and no text; one inbound row per message_id and one confirmation per spell are
    held by unique indexes."""
    import pytest
    from sqlalchemy import exc, text

    upgrade(empty_db_url, "0005")
    now = "2026-11-24 17:00:00.000000"
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO campaigns (id, name, purpose, channel, provider_name, "
                "callback_number, max_attempts, created_by, created_at, policy_version) "
                "VALUES ('camp', 'c', 'appointment_reminder', 'autodialed_voice', 'Mercy', "
                "'+13145550199', 3, 'k', :now, 'v')"), {"now": now})
            conn.execute(text(
                "INSERT INTO calls (id, campaign_id, external_id, phone, priority, status, "
                "attempts, created_at, updated_at, created_by, policy_version) VALUES "
                "('call-1', 'camp', 'a', '+13145550100', 5, 'queued', 0, :now, :now, 'k', "
                "'v')"), {"now": now})
    finally:
        engine.dispose()
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT template_id FROM campaigns")).all() == [(None,)]
            assert conn.execute(text(
                "SELECT appointment_at, sms_text FROM calls")).all() == [(None, None)]
        inbound = ("INSERT INTO sms_inbound (id, message_id, phone, received_at, recorded_at, "
                   "recorded_by, action) VALUES (:id, 'm-1', '+13145550100', :now, :now, 'k', "
                   "'revoked')")
        reply = ("INSERT INTO sms_replies (id, kind, phone, inbound_id, confirmation_key, text, "
                 "provider_name, callback_number, status, received_at, expires_at, created_at, "
                 "updated_at) VALUES (:id, 'sms_confirmation', '+13145550100', :inb, "
                 "'+13145550100:-', 't', 'p', 'c', 'queued', :now, :now, :now, :now)")
        with engine.begin() as conn:
            conn.execute(text(inbound), {"id": "i-1", "now": now})
            conn.execute(text(reply), {"id": "r-1", "inb": "i-1", "now": now})
        for stmt, params in ((inbound, {"id": "i-2", "now": now}),
                             (reply, {"id": "r-2", "inb": "i-9", "now": now})):
            with pytest.raises(exc.IntegrityError), engine.begin() as conn:
                conn.execute(text(stmt), params)
    finally:
        engine.dispose()
