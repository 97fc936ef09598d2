"""Alembic environment. Used programmatically by ``dialer.migrate``: the caller passes the
database URL in ``config.attributes["url"]`` (or ``sqlalchemy.url``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from core.db import make_engine
from core.models import metadata

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL given to the migrations")

target_metadata = metadata()


def run_migrations_online() -> None:
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        # Take the write lock before reading the current revision, so that two processes
        # starting at once do not both try to apply the same migration.
        engine = engine.execution_options(sqlite_begin="IMMEDIATE")
    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(74110001)"))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
