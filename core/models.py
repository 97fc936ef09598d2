"""Every table: keys, campaigns, calls, attempts (the call log), refusals, the per-number
ledger, the audit log (entries, tree nodes, checkpoints, access index), UI sessions, and
the consent registry (consents, revocations, do-not-call; appended, never edited in place:
a lifted do-not-call entry keeps its row and gains who lifted it, when and why).

Invariants live in the database too: one live lease per call, one accepted call per
external_id per campaign, one pending call per number per campaign."""

from __future__ import annotations

from datetime import date as CalendarDate
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime

PENDING = ("queued", "leased")
PENDING_SQL = "status IN ('queued', 'leased')"
ACCEPTED_SQL = "accepted"  # false only for a refused call (migration 0002)
LIVE_SQL = "state = 'live'"
QUEUE_ORDER_SQL = "status = 'queued' AND NOT parked"
PARKED_SQL = "status = 'queued' AND parked"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32))
    provider_name: Mapped[str] = mapped_column(String(200))
    callback_number: Mapped[str] = mapped_column(String(20))
    window_start: Mapped[str | None] = mapped_column(String(5), nullable=True)
    window_end: Mapped[str | None] = mapped_column(String(5), nullable=True)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    script_id: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    policy_version: Mapped[str] = mapped_column(String(64))
    # The template an `sms` campaign sends (migration 0008); None for voice.
    template_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index(
            "uq_calls_campaign_external_accepted",
            "campaign_id",
            "external_id",
            unique=True,
            sqlite_where=text(ACCEPTED_SQL),
            postgresql_where=text(ACCEPTED_SQL),
        ),
        Index(
            "uq_calls_campaign_phone_pending",
            "campaign_id",
            "phone",
            unique=True,
            sqlite_where=text(PENDING_SQL),
            postgresql_where=text(PENDING_SQL),
        ),
        # The dispatch scan: queued calls by when they next become eligible (not_after too,
        # so the deadline job's scan reads the index only).
        Index("ix_calls_status_next_eligible", "status", "next_eligible_at", "not_after"),

        # A number's calls (revocations, the dashboard): a number has few; the status is
        # checked on the row, so that a status change does not rewrite this index.
        Index("ix_calls_phone", "phone"),
        # Only a leased call has one: new calls (intake) never enter this index.
        Index(
            "ix_calls_lease_expires",
            "lease_expires_at",
            sqlite_where=text("lease_expires_at IS NOT NULL"),
            postgresql_where=text("lease_expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(128))
    patient_ref: Mapped[str | None] = mapped_column(String(128), nullable=True)
    phone: Mapped[str] = mapped_column(String(20))
    state: Mapped[str | None] = mapped_column(String(2), nullable=True)
    postal_code: Mapped[str | None] = mapped_column(String(10), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    # status <> 'refused', kept apart so that uq_calls_campaign_external_accepted changes only
    # when a call is refused, not at every status change (migration 0002).
    accepted: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    next_eligible_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # True while a queued call waits for next_eligible_at (deferred, or a not_before still
    # ahead at intake): out of ix_calls_queue_order, in ix_calls_parked until a lease
    # returns it once due (dialer/queue.py; migration 0003).
    parked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    candidate_zones: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    last_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(36))
    policy_version: Mapped[str] = mapped_column(String(64))
    # An SMS campaign's call (migration 0008): the appointment the row named, and the text
    # rendered from the campaign's template at intake (checked to fit one segment there).
    appointment_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, default=None)
    sms_text: Mapped[str | None] = mapped_column(String(400), nullable=True, default=None)


# The queue's order, for a poll over many eligible calls, without the parked ones
# (dialer/queue.py).
Index(
    "ix_calls_queue_order",
    Call.priority.desc(),
    Call.created_at,
    Call.id,
    Call.next_eligible_at,
    sqlite_where=text(QUEUE_ORDER_SQL),
    postgresql_where=text(QUEUE_ORDER_SQL),
)
# The parked calls by when they become due (then by queue order).
Index(
    "ix_calls_parked",
    Call.next_eligible_at,
    Call.priority.desc(),
    Call.created_at,
    Call.id,
    sqlite_where=text(PARKED_SQL),
    postgresql_where=text(PARKED_SQL),
)


class Attempt(Base):
    """One attempt at a number: a lease (live, then reported/released/expired) or a manual
    reservation. Every counted attempt counts against the number's caps. This table is the
    call log."""

    __tablename__ = "attempts"
    __table_args__ = (
        Index(
            "uq_attempts_call_live",
            "call_id",
            unique=True,
            sqlite_where=text(LIVE_SQL),
            postgresql_where=text(LIVE_SQL),
        ),
        Index("ix_attempts_phone_at", "phone", "at"),
        Index("ix_attempts_state_expires", "state", "expires_at"),
        Index("ix_attempts_recorded", "recorded_at", "id"),
        Index("ix_attempts_at_id", "at", "id"),  # the call log, newest first
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id"), nullable=True)
    campaign_id: Mapped[str | None] = mapped_column(ForeignKey("campaigns.id"), nullable=True)
    phone: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(16))  # lease | manual
    # live | reported | released | expired | withdrawn | manual
    state: Mapped[str] = mapped_column(String(16))
    counted: Mapped[bool] = mapped_column(default=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    dialer_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    key_id: Mapped[str] = mapped_column(String(36))
    agent_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    agent_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    disclosed_callback_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result: Mapped[str | None] = mapped_column(String(32), nullable=True)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # On the call itself (migration 0004): what the task said at lease time, and what the
    # outcome reported; None where not applicable (manual reservations, earlier attempts).
    recording_allowed: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=None)
    identity_required: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    recorded: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=None)
    phi_disclosed: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=None)
    identity_verified_with: Mapped[list[str] | None] = mapped_column(
        JSON, nullable=True, default=None)


class NumberLedger(Base):
    """One row per phone number. No longer written: a number's lock is now an advisory
    lock (core.numbers); the table stays for the instances of before (and migrations)."""

    __tablename__ = "number_ledger"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    attempts_total: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Refusal(Base):
    __tablename__ = "refusals"
    __table_args__ = (
        Index("ix_refusals_at_id", "at", "id"),
        Index("ix_refusals_campaign_at_id", "campaign_id", "at", "id"),
        Index("ix_refusals_code_at_id", "code", "at", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    call_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    campaign_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    stage: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # refused | invalid | expired | withdrawn
    code: Mapped[str] = mapped_column(String(32))  # the first (deciding) reason
    codes: Mapped[str] = mapped_column(String(400))  # every code, space separated
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    row: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy_version: Mapped[str] = mapped_column(String(64))


class AuditEntry(Base):
    """One entry of the audit log. Writers insert it with ``leaf_index`` NULL; the sequencer
    (core.auditlog) integrates committed entries into the Merkle tree in the order it sees
    them committed, setting ``leaf_index`` (0-based, the leaf's position) and ``leaf_hash``
    (RFC 9162: SHA-256(0x00 || leaf bytes)); after that nothing of the row changes, except
    that past retention its ``payload`` may be erased (``erased_at`` set, payload ''): the
    leaf hash stays, so every proof still verifies."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # Partial: an entry enters it when sealed, not at insert (one index fewer for the
        # writers to update); every query by leaf_index compares it, which implies NOT NULL.
        Index(
            "uq_audit_log_leaf_index",
            "leaf_index",
            unique=True,
            sqlite_where=text("leaf_index IS NOT NULL"),
            postgresql_where=text("leaf_index IS NOT NULL"),
        ),
        # The entries not yet integrated: a handful at any time (partial: it stays small).
        Index(
            "ix_audit_log_pending",
            "id",
            sqlite_where=text("leaf_index IS NULL"),
            postgresql_where=text("leaf_index IS NULL"),
        ),
        Index("ix_audit_log_kind_at", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    leaf_index: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), nullable=True, default=None
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(48))
    subject: Mapped[str] = mapped_column(String(80), index=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON ('' once erased)
    policy_version: Mapped[str] = mapped_column(String(64))
    leaf_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True, default=None)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class AuditNode(Base):
    """The hash of a perfect subtree of the audit tree, level >= 1 (level 0, the leaves, is
    ``audit_log.leaf_hash``): node ``(level, idx)`` covers leaves ``[idx*2^level,
    (idx+1)*2^level)``. Written once by the sequencer when its last leaf is integrated."""

    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint in a signed note) of the tree at ``size``."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text)


class AuditAccess(Base):
    """Which audit entries name a patient's number: its keyed pseudonym (core.pseudonyms)
    and the entry's id. Written with the entry; read by the access report."""

    __tablename__ = "audit_access"

    pseudonym: Mapped[str] = mapped_column(String(32), primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("audit_log.id"),
        primary_key=True, autoincrement=False,
    )


class AuditState(Base):
    """Small named counters of the audit log's jobs (how far retention has erased)."""

    __tablename__ = "audit_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


class UiSession(Base):
    """A reviewer's browser session: only the hash of the opaque cookie value is stored."""

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(36), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)


# --- the consent registry -------------------------------------------------------------


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    # Indexed for the access report by patient reference (migration 0005).
    patient_ref: Mapped[str] = mapped_column(String(128), index=True)
    channels: Mapped[list[str]] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(32))
    obtained_at: Mapped[datetime] = mapped_column(UTCDateTime)
    evidence_ref: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    recorded_by: Mapped[str] = mapped_column(String(36))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A correction is a new row naming the row it replaces.
    supersedes_id: Mapped[str | None] = mapped_column(
        ForeignKey("consents.id"), nullable=True, default=None
    )
    # The patient's consent to having calls recorded (migration 0004).
    recording: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Revocation(Base):
    __tablename__ = "revocations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    source: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by: Mapped[str] = mapped_column(String(36))
    call_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)


class DncEntry(Base):
    __tablename__ = "dnc_entries"
    __table_args__ = (Index("ix_dnc_entries_phone_lifted", "phone", "lifted_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    added_by: Mapped[str] = mapped_column(String(36))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    lifted_by: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)
    lift_reason: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)


class ReassignedAnswer(Base):
    """An answer of the FCC Reassigned Numbers Database (47 CFR 64.1200(m)): was ``phone``
    permanently disconnected on or after ``date``? (``yes`` | ``no`` | ``no_data``), as of
    ``queried_at``. Appended, never edited (migration 0004)."""

    __tablename__ = "reassigned_answers"
    __table_args__ = (
        Index("uq_reassigned_answers", "phone", "date", "queried_at", "answer", unique=True),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    phone: Mapped[str] = mapped_column(String(20))
    date: Mapped[CalendarDate] = mapped_column(Date)
    answer: Mapped[str] = mapped_column(String(8))
    queried_at: Mapped[datetime] = mapped_column(UTCDateTime)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    imported_by: Mapped[str] = mapped_column(String(36))


class IdempotencyRecord(Base):
    """An ``Idempotency-Key`` of an API key and the first answer to it (API.md
    "Idempotency"; core/idempotency.py). The primary key is the claim: of two requests with
    one key at once, one inserts the row (``state`` running), the other finds it. Kept
    ``CALLGATE_IDEMPOTENCY_HOURS`` (24) after ``created_at`` (migration 0006)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    idem_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 (hex) of the method, path, query string and body.
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8))  # running | done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True,
                                                          default=None)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    content_type: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, default=None)


_BIG = BigInteger().with_variant(Integer, "sqlite")


class Event(Base):
    """The event outbox (core.events): a row written in the transaction of the change it
    reports, with no position; the sequencer gives committed rows their ``seq`` (the feed's
    order, gap-free, in commit order) a moment later (migration 0007). ``key``: the order
    key (a number's keyed pseudonym, never the number); ``data``: canonical JSON."""

    __tablename__ = "events"
    __table_args__ = (
        Index("uq_events_seq", "seq", unique=True,
              sqlite_where=text("seq IS NOT NULL"), postgresql_where=text("seq IS NOT NULL")),
        Index("ix_events_pending", "id",
              sqlite_where=text("seq IS NULL"), postgresql_where=text("seq IS NULL")),
    )

    id: Mapped[int] = mapped_column(_BIG, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(_BIG, nullable=True, default=None)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    key: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)


class WebhookSubscription(Base):
    """A webhook receiver (webhooks/): its URL, the event types it takes, its signing secret
    (``whsec_...``, shown once at creation), how far the fan-out has got (``fanout_seq``)
    and, while it fails to answer, when it is tried again (``retry_at``)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(36))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    fanout_seq: Mapped[int] = mapped_column(_BIG, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class WebhookDelivery(Base):
    """One event (or test message) to one subscription: the delivery log. ``pending`` until
    a 2xx (``delivered``) or ``give_up_hours`` of failures (``failed``); a replay is a new
    row (``replay_of``). Per subscription and ``key``, the lowest ``event_seq`` pending goes
    first (order per number)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_pending", "subscription_id", "event_seq", "id",
              sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_log", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(_BIG, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_subscriptions.id"))
    event_id: Mapped[int | None] = mapped_column(_BIG, nullable=True, default=None)
    event_seq: Mapped[int] = mapped_column(_BIG)
    type: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    data: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)  # test only
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    replay_of: Mapped[int | None] = mapped_column(_BIG, nullable=True, default=None)
# --- templates and texts (migration 0008) ------------------------------------------------


class Template(Base):
    """A message template, validated when created (texts.rules); never changed: a change is
    a new template."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(8))
    max_length: Mapped[int] = mapped_column(Integer)
    char_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    placeholders: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    policy_version: Mapped[str] = mapped_column(String(64))


class SmsInbound(Base):
    """An inbound text, as far as its decision needs it: the body is kept only while a human
    must read it (``review``), and erased when they decide."""

    __tablename__ = "sms_inbound"
    __table_args__ = (
        # A message delivered twice by the gateway is decided once (API.md).
        Index("uq_sms_inbound_message_id", "message_id", unique=True),
        Index("ix_sms_inbound_review", "review_status", "received_at"),
        Index("ix_sms_inbound_received", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str] = mapped_column(String(20), index=True)
    to_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16))  # revoked | review | help | none
    body: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    review_status: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    decided_by: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    revocation_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)


class SmsReply(Base):
    """A text answering a patient's own message (the opt-out confirmation, the help text):
    leased ahead of every call, outside the caps and windows, expiring at ``expires_at``."""

    __tablename__ = "sms_replies"
    __table_args__ = (
        # One reply per inbound message; one confirmation per revoked spell of a number
        # (confirmation_key: the number and the newest consent before the STOP).
        Index("uq_sms_replies_inbound", "inbound_id", unique=True),
        Index("uq_sms_replies_confirmation", "confirmation_key", unique=True),
        Index("ix_sms_replies_status_created", "status", "created_at"),
        Index("ix_sms_replies_phone", "phone"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # sms_confirmation | sms_help
    phone: Mapped[str] = mapped_column(String(20))
    inbound_id: Mapped[str] = mapped_column(String(36))
    confirmation_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    text: Mapped[str] = mapped_column(String(400))
    provider_name: Mapped[str] = mapped_column(String(200))
    callback_number: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16))  # queued|leased|sent|failed|expired
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, default=None)
    dialer_id: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


def metadata() -> MetaData:
    """Every table (migrations, tests)."""
    return Base.metadata
