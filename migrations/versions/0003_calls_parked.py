"""calls: deferred calls leave the queue order until they are due

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

A deferred call (capped, outside its window, before ``not_before``) stays ``queued`` with a
later ``next_eligible_at``. It stayed in ``ix_calls_queue_order`` too, so every poll walking
the queue in priority order stepped over every deferred call ahead of the first eligible
one: after 45,000 leases over numbers with five calls each, a fifth of the numbers are
capped and that walk was ~19 % of the server's samples at 1,000 calls/s.

A new column, ``parked``, is true while a queued call waits for its ``next_eligible_at``
(set by a deferral, and at intake for a ``not_before`` in the future). A parked call is out
of ``ix_calls_queue_order`` and in ``ix_calls_parked``, ordered by when it becomes due; a
lease first returns the calls that have become due to the queue order (dialer/queue.py).

Existing rows start unparked: a deferred call of before the upgrade is walked past, as
before, until it is decided again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain ALTER TABLE and CREATE/DROP INDEX, no batch mode (see 0002).

_ORDER = [sa.literal_column('priority').desc(), 'created_at', 'id', 'next_eligible_at']


def upgrade() -> None:
    op.add_column(
        'calls', sa.Column('parked', sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.drop_index('ix_calls_queue_order', table_name='calls')
    op.create_index(
        'ix_calls_queue_order', 'calls', _ORDER, unique=False,
        sqlite_where=sa.text("status = 'queued' AND NOT parked"),
        postgresql_where=sa.text("status = 'queued' AND NOT parked"),
    )
    op.create_index(
        'ix_calls_parked', 'calls',
        ['next_eligible_at', sa.literal_column('priority').desc(), 'created_at', 'id'],
        unique=False,
        sqlite_where=sa.text("status = 'queued' AND parked"),
        postgresql_where=sa.text("status = 'queued' AND parked"),
    )


def downgrade() -> None:
    op.drop_index('ix_calls_parked', table_name='calls')
    op.drop_index('ix_calls_queue_order', table_name='calls')
    op.create_index(
        'ix_calls_queue_order', 'calls', _ORDER, unique=False,
        sqlite_where=sa.text("status = 'queued'"),
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_column('calls', 'parked')
