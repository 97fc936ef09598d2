"""Alembic migrations, shipped inside the distribution (see dialer.migrate)."""
