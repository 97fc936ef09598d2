"""Consent, revocation and do-not-call tables. Rows are appended, never edited in place
(a lifted do-not-call entry keeps its row and gains who lifted it, when and why)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dialer.db import Base, UTCDateTime


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    patient_ref: Mapped[str] = mapped_column(String(128))
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
