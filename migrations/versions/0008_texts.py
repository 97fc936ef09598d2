"""templates and texts: message templates, inbound texts, the replies they queue

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

* ``templates``: validated message templates (never changed: a change is a new template).
* ``campaigns.template_id``: the template an ``sms`` campaign sends.
* ``calls.appointment_at`` and ``calls.sms_text``: an SMS call's appointment and the text
  rendered at intake (one segment, checked there).
* ``sms_inbound``: inbound texts, one row per ``message_id`` (unique: a message delivered
  twice is decided once); the body is kept only while a human must read it.
* ``sms_replies``: the confirmation and help texts; one per inbound message, one
  confirmation per revoked spell of a number (``confirmation_key`` unique), so two STOPs
  arriving together never queue two confirmations (47 CFR 64.1200(a)(12)).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain ALTER TABLE and CREATE TABLE/INDEX, no batch mode (see 0002).


def _dt(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, core.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column('campaigns', sa.Column('template_id', sa.String(length=36), nullable=True))
    op.add_column('calls', _dt('appointment_at', nullable=True))
    op.add_column('calls', sa.Column('sms_text', sa.String(length=400), nullable=True))
    op.create_table(
        'templates',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('purpose', sa.String(length=64), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('encoding', sa.String(length=8), nullable=False),
        sa.Column('max_length', sa.Integer(), nullable=False),
        sa.Column('char_limit', sa.Integer(), nullable=True),
        sa.Column('placeholders', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=36), nullable=False),
        _dt('created_at'),
        sa.Column('policy_version', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_templates_created_at', 'templates', ['created_at'])
    op.create_table(
        'sms_inbound',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('message_id', sa.String(length=128), nullable=False),
        sa.Column('phone', sa.String(length=20), nullable=False),
        sa.Column('to_number', sa.String(length=20), nullable=True),
        _dt('received_at'),
        _dt('recorded_at'),
        sa.Column('recorded_by', sa.String(length=36), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('body', sa.Text(), nullable=True),
        sa.Column('review_status', sa.String(length=16), nullable=True),
        sa.Column('decided_by', sa.String(length=36), nullable=True),
        _dt('decided_at', nullable=True),
        sa.Column('revocation_id', sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('uq_sms_inbound_message_id', 'sms_inbound', ['message_id'], unique=True)
    op.create_index('ix_sms_inbound_review', 'sms_inbound', ['review_status', 'received_at'])
    op.create_index('ix_sms_inbound_received', 'sms_inbound', ['received_at'])
    op.create_index('ix_sms_inbound_phone', 'sms_inbound', ['phone'])
    op.create_table(
        'sms_replies',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('phone', sa.String(length=20), nullable=False),
        sa.Column('inbound_id', sa.String(length=36), nullable=False),
        sa.Column('confirmation_key', sa.String(length=80), nullable=True),
        sa.Column('text', sa.String(length=400), nullable=False),
        sa.Column('provider_name', sa.String(length=200), nullable=False),
        sa.Column('callback_number', sa.String(length=20), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        _dt('received_at'),
        _dt('expires_at'),
        _dt('created_at'),
        _dt('updated_at'),
        sa.Column('lease_id', sa.String(length=36), nullable=True),
        _dt('lease_expires_at', nullable=True),
        sa.Column('dialer_id', sa.String(length=128), nullable=True),
        _dt('sent_at', nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('uq_sms_replies_inbound', 'sms_replies', ['inbound_id'], unique=True)
    op.create_index('uq_sms_replies_confirmation', 'sms_replies', ['confirmation_key'],
                    unique=True)
    op.create_index('ix_sms_replies_status_created', 'sms_replies', ['status', 'created_at'])
    op.create_index('ix_sms_replies_phone', 'sms_replies', ['phone'])


def downgrade() -> None:
    for ix in ('ix_sms_replies_phone', 'ix_sms_replies_status_created',
               'uq_sms_replies_confirmation', 'uq_sms_replies_inbound'):
        op.drop_index(ix, table_name='sms_replies')
    op.drop_table('sms_replies')
    for ix in ('ix_sms_inbound_phone', 'ix_sms_inbound_received', 'ix_sms_inbound_review',
               'uq_sms_inbound_message_id'):
        op.drop_index(ix, table_name='sms_inbound')
    op.drop_table('sms_inbound')
    op.drop_index('ix_templates_created_at', table_name='templates')
    op.drop_table('templates')
    op.drop_column('calls', 'sms_text')
    op.drop_column('calls', 'appointment_at')
    op.drop_column('campaigns', 'template_id')
