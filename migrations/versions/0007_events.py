"""events out: the event outbox, webhook subscriptions and their delivery log

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

* ``events``: the transactional outbox (core.events). Written with ``seq`` NULL in the
  transaction of the change; the sequencer numbers committed rows (``ix_events_pending``:
  the few not numbered yet; ``uq_events_seq``: the feed's order, unique).
* ``webhook_subscriptions`` and ``webhook_deliveries`` (webhooks/): a delivery per event per
  subscription, ``ix_webhook_deliveries_pending`` the ones still to send, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'events',
        sa.Column('id', _BIG, autoincrement=True, nullable=False),
        sa.Column('seq', _BIG, nullable=True),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('data', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    )
    op.create_index('uq_events_seq', 'events', ['seq'], unique=True,
                    sqlite_where=sa.text('seq IS NOT NULL'),
                    postgresql_where=sa.text('seq IS NOT NULL'))
    op.create_index('ix_events_pending', 'events', ['id'],
                    sqlite_where=sa.text('seq IS NULL'),
                    postgresql_where=sa.text('seq IS NULL'))
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('description', sa.String(length=500), nullable=False),
        sa.Column('secret', sa.String(length=80), nullable=False),
        sa.Column('created_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=36), nullable=False),
        sa.Column('deleted_at', core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('fanout_seq', _BIG, nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('retry_at', core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_subscriptions')),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', _BIG, autoincrement=True, nullable=False),
        sa.Column('subscription_id', sa.String(length=36), nullable=False),
        sa.Column('event_id', _BIG, nullable=True),
        sa.Column('event_seq', _BIG, nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('data', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_attempt_at', core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=200), nullable=True),
        sa.Column('delivered_at', core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('replay_of', _BIG, nullable=True),
        sa.ForeignKeyConstraint(
            ['subscription_id'], ['webhook_subscriptions.id'],
            name=op.f('fk_webhook_deliveries_subscription_id_webhook_subscriptions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    )
    op.create_index('ix_webhook_deliveries_pending', 'webhook_deliveries',
                    ['subscription_id', 'event_seq', 'id'],
                    sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_webhook_deliveries_log', 'webhook_deliveries',
                    ['subscription_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_log', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_pending', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_subscriptions')
    op.drop_index('ix_events_pending', table_name='events')
    op.drop_index('uq_events_seq', table_name='events')
    op.drop_table('events')
