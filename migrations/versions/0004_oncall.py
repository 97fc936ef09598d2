"""on the call itself: recording consent, identity verification, reassigned numbers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

* ``consents.recording``: the patient's consent to having calls recorded (default false:
  a call is not recorded unless a written consent covering it says so).
* ``attempts``: what the task said (``recording_allowed``, ``identity_required``, set at
  lease time) and what the outcome reported (``recorded``, ``phi_disclosed``,
  ``identity_verified_with``), so a flag is decided against what the agent was told.
* ``reassigned_answers``: answers of the FCC Reassigned Numbers Database (47 CFR
  64.1200(m)), kept with the date asked about and when they were queried; one row per
  distinct answer (a file loaded twice adds nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain ALTER TABLE and CREATE TABLE/INDEX, no batch mode (see 0002).


def upgrade() -> None:
    op.add_column(
        'consents',
        sa.Column('recording', sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column('attempts', sa.Column('recording_allowed', sa.Boolean(), nullable=True))
    op.add_column('attempts', sa.Column('identity_required', sa.Integer(), nullable=True))
    op.add_column('attempts', sa.Column('recorded', sa.Boolean(), nullable=True))
    op.add_column('attempts', sa.Column('phi_disclosed', sa.Boolean(), nullable=True))
    op.add_column('attempts', sa.Column('identity_verified_with', sa.JSON(), nullable=True))
    op.create_table(
        'reassigned_answers',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('phone', sa.String(length=20), nullable=False),
        sa.Column('date', sa.Date(), nullable=False),
        sa.Column('answer', sa.String(length=8), nullable=False),
        sa.Column('queried_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('imported_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('imported_by', sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(
        'uq_reassigned_answers', 'reassigned_answers',
        ['phone', 'date', 'queried_at', 'answer'], unique=True,
    )


def downgrade() -> None:
    op.drop_index('uq_reassigned_answers', table_name='reassigned_answers')
    op.drop_table('reassigned_answers')
    for col in ('identity_verified_with', 'phi_disclosed', 'recorded', 'identity_required',
                'recording_allowed'):
        op.drop_column('attempts', col)
    op.drop_column('consents', 'recording')
