"""audit log: from a hash chain to an RFC 9162 Merkle log

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

The chain (``prev_hash``/``hash`` on every entry, one ``audit_head`` row that every writer
locked) becomes a Merkle tree (docs/audit.md):

* ``audit_log.seq`` becomes ``id``, assigned at insert (autoincrement); ``leaf_index`` and
  ``leaf_hash`` are set when the sequencer integrates the entry (``ix_audit_log_pending``
  finds the entries not yet integrated); ``erased_at`` marks a payload erased past retention;
* ``audit_nodes`` (perfect-subtree hashes), ``audit_checkpoints`` (signed checkpoints),
  ``audit_access`` (which entries name a patient's number, by keyed pseudonym) and
  ``audit_state`` are new; ``audit_head`` goes.

Existing entries become the first leaves in their order: they are left pending, with ids
1..n in ``seq`` order, and the sequencer integrates pending entries in id order, so entry
``seq`` gets ``index = seq - 1``. Before that, the old chain is recomputed: a chain that does
not verify is not sealed into the new log (the upgrade stops and names the first broken
entry). Its head is then recorded as one more entry (``audit.migrated``), so the tree
commits to the chain as it was.

Plain ALTER TABLE and CREATE/DROP INDEX, no batch mode (see 0002).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_GENESIS = '0' * 64
_BATCH = 5000


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=False)


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec='microseconds')


def _chain_hash(prev: str, seq: int, at: datetime, actor: str, kind: str, subject: str,
                payload: str, policy_version: str) -> str:
    """The hash of revision 0001's chain (core/audit.py before this revision)."""
    body = _canonical({'seq': seq, 'at': _iso(at), 'actor': actor, 'kind': kind,
                       'subject': subject, 'payload': payload,
                       'policy_version': policy_version})
    return hashlib.sha256((prev + body).encode('utf-8')).hexdigest()


def _entries() -> sa.Table:
    return sa.table(
        'audit_log', sa.column('seq', sa.BigInteger()),
        sa.column('at', core.db.UTCDateTime()), sa.column('actor', sa.String()),
        sa.column('kind', sa.String()), sa.column('subject', sa.String()),
        sa.column('payload', sa.Text()), sa.column('policy_version', sa.String()),
        sa.column('prev_hash', sa.String()), sa.column('hash', sa.String()),
    )


def _verify_chain(conn: sa.Connection) -> tuple[int, str]:
    """Recompute the old chain; (entries, head hash), or raise naming the first bad entry."""
    t = _entries()
    prev, expected, last = _GENESIS, 1, 0
    while True:
        rows = conn.execute(
            sa.select(t).where(t.c.seq > last).order_by(t.c.seq).limit(_BATCH)).all()
        for r in rows:
            if r.seq != expected:
                raise RuntimeError(
                    f'audit chain: entry {expected} is missing (next is {r.seq}); the chain '
                    'does not verify, so it is not sealed into the Merkle log. Investigate '
                    'before upgrading (docs/audit.md).')
            h = _chain_hash(prev, r.seq, r.at, r.actor, r.kind, r.subject, r.payload,
                            r.policy_version)
            if r.prev_hash != prev or r.hash != h:
                raise RuntimeError(
                    f'audit chain: entry {r.seq} does not match its hash; the chain does not '
                    'verify, so it is not sealed into the Merkle log. Investigate before '
                    'upgrading (docs/audit.md).')
            prev, expected = h, expected + 1
        if len(rows) < _BATCH:
            break
        last = rows[-1].seq
    head = conn.execute(sa.text('SELECT seq, hash FROM audit_head WHERE id = 1')).first()
    count = expected - 1
    if head is not None and (int(head[0]), str(head[1])) != (count, prev if count else head[1]):
        raise RuntimeError(
            f'audit chain: the head names entry {head[0]} but the chain ends at {count}; '
            'entries were removed. The chain is not sealed into the Merkle log.')
    return count, prev


def upgrade() -> None:
    conn = op.get_bind()
    pg = conn.dialect.name == 'postgresql'
    count, head = _verify_chain(conn)

    op.drop_index('ix_audit_log_kind', table_name='audit_log')
    if pg:
        op.alter_column('audit_log', 'seq', new_column_name='id')
        # What a BIGSERIAL column has: a sequence owned by the column, and its default.
        op.execute('CREATE SEQUENCE audit_log_id_seq OWNED BY audit_log.id')
        op.execute("ALTER TABLE audit_log ALTER COLUMN id SET DEFAULT "
                   "nextval('audit_log_id_seq'::regclass)")
        op.execute("SELECT setval('audit_log_id_seq', COALESCE(MAX(id), 0) + 1, false) "
                   "FROM audit_log")
    else:
        # An INTEGER PRIMARY KEY is SQLite's rowid: a row inserted without it gets max + 1.
        op.execute('ALTER TABLE audit_log RENAME COLUMN seq TO id')
    op.drop_column('audit_log', 'prev_hash')
    op.drop_column('audit_log', 'hash')
    op.add_column('audit_log', sa.Column('leaf_index', _BIG, nullable=True))
    op.add_column('audit_log', sa.Column('leaf_hash', sa.LargeBinary(length=32), nullable=True))
    op.add_column('audit_log', sa.Column('erased_at', core.db.UTCDateTime(timezone=True),
                                         nullable=True))
    op.create_index('uq_audit_log_leaf_index', 'audit_log', ['leaf_index'], unique=True,
                    sqlite_where=sa.text('leaf_index IS NOT NULL'),
                    postgresql_where=sa.text('leaf_index IS NOT NULL'))
    op.create_index('ix_audit_log_pending', 'audit_log', ['id'], unique=False,
                    sqlite_where=sa.text('leaf_index IS NULL'),
                    postgresql_where=sa.text('leaf_index IS NULL'))
    op.create_index('ix_audit_log_kind_at', 'audit_log', ['kind', 'at'], unique=False)
    op.drop_table('audit_head')

    op.create_table(
        'audit_nodes',
        sa.Column('level', sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column('idx', _BIG, autoincrement=False, nullable=False),
        sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint('level', 'idx', name=op.f('pk_audit_nodes')),
    )
    op.create_table(
        'audit_checkpoints',
        sa.Column('size', _BIG, autoincrement=False, nullable=False),
        sa.Column('root_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('size', name=op.f('pk_audit_checkpoints')),
    )
    op.create_table(
        'audit_access',
        sa.Column('pseudonym', sa.String(length=32), nullable=False),
        sa.Column('entry_id', _BIG, autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(['entry_id'], ['audit_log.id'],
                                name=op.f('fk_audit_access_entry_id_audit_log')),
        sa.PrimaryKeyConstraint('pseudonym', 'entry_id', name=op.f('pk_audit_access')),
    )
    op.create_table(
        'audit_state',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('value', _BIG, nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_audit_state')),
    )
    op.create_index('ix_consents_patient_ref', 'consents', ['patient_ref'], unique=False)

    if count:
        # The old chain's head, as the entry after its last one (pending like them).
        op.bulk_insert(
            sa.table('audit_log', sa.column('id', sa.BigInteger()),
                     sa.column('at', core.db.UTCDateTime()), sa.column('actor', sa.String()),
                     sa.column('kind', sa.String()), sa.column('subject', sa.String()),
                     sa.column('payload', sa.Text()), sa.column('policy_version', sa.String())),
            [{'id': count + 1, 'at': datetime.now(UTC), 'actor': 'system:migration',
              'kind': 'audit.migrated', 'subject': 'audit_log',
              'payload': _canonical({'chain_entries': count, 'chain_head': head,
                                     'revision': '0005'}),
              'policy_version': '-'}],
        )
        if pg:
            op.execute("SELECT setval('audit_log_id_seq', COALESCE(MAX(id), 0) + 1, false) "
                       "FROM audit_log")


def downgrade() -> None:
    conn = op.get_bind()
    pg = conn.dialect.name == 'postgresql'
    op.drop_index('ix_consents_patient_ref', table_name='consents')
    op.drop_table('audit_state')
    op.drop_table('audit_access')
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_nodes')
    op.create_table(
        'audit_head',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('seq', _BIG, nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head')),
    )
    op.drop_index('ix_audit_log_kind_at', table_name='audit_log')
    op.drop_index('ix_audit_log_pending', table_name='audit_log')
    op.drop_index('uq_audit_log_leaf_index', table_name='audit_log')
    op.add_column('audit_log', sa.Column('prev_hash', sa.String(length=64),
                                         server_default='', nullable=False))
    op.add_column('audit_log', sa.Column('hash', sa.String(length=64),
                                         server_default='', nullable=False))
    # The chain again, in the log's order (integrated entries by index, then the pending
    # ones): renumbered 1..n (negative first, so that no two rows share a key meanwhile).
    t = sa.table('audit_log', sa.column('id', sa.BigInteger()),
                 sa.column('leaf_index', sa.BigInteger()),
                 sa.column('at', core.db.UTCDateTime()), sa.column('actor', sa.String()),
                 sa.column('kind', sa.String()), sa.column('subject', sa.String()),
                 sa.column('payload', sa.Text()), sa.column('policy_version', sa.String()))
    order = [sa.case((t.c.leaf_index.is_(None), 1), else_=0), t.c.leaf_index, t.c.id]
    ids = [r[0] for r in conn.execute(sa.select(t.c.id).order_by(*order))]
    upd = sa.text('UPDATE audit_log SET id = :new WHERE id = :old')
    for i in range(0, len(ids), _BATCH):
        conn.execute(upd, [{'old': old, 'new': -(n + 1)}
                           for n, old in enumerate(ids[i:i + _BATCH], start=i)])
    conn.execute(sa.text('UPDATE audit_log SET id = -id'))
    prev = _GENESIS
    rows = conn.execute(sa.select(t).order_by(t.c.id)).all()
    hashes = []
    for r in rows:
        h = _chain_hash(prev, r.id, r.at, r.actor, r.kind, r.subject, r.payload or '{}',
                        r.policy_version)
        hashes.append({'i': r.id, 'p': prev, 'h': h})
        prev = h
    if hashes:
        conn.execute(sa.text('UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :i'),
                     hashes)
    conn.execute(sa.text('INSERT INTO audit_head (id, seq, hash) VALUES (1, :n, :h)'),
                 {'n': len(rows), 'h': prev})
    op.drop_column('audit_log', 'erased_at')
    op.drop_column('audit_log', 'leaf_hash')
    op.drop_column('audit_log', 'leaf_index')
    if pg:
        op.execute('ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT')
        op.execute('DROP SEQUENCE audit_log_id_seq')
        op.alter_column('audit_log', 'id', new_column_name='seq')
    else:
        op.execute('ALTER TABLE audit_log RENAME COLUMN id TO seq')
    op.create_index('ix_audit_log_kind', 'audit_log', ['kind'], unique=False)
