"""Every statement of templates and texts, with why each is safe under concurrency.

* An inbound text is decided with its number's ledger row locked first (core.numbers;
  SQLite: the write transaction), so two deliveries of one message, or two STOPs from one
  number, are decided one after the other: the second sees the first's rows. The unique
  indexes hold it too: ``uq_sms_inbound_message_id`` (one decision per message),
  ``uq_sms_replies_inbound`` (one reply per message) and ``uq_sms_replies_confirmation``
  (one confirmation per revoked spell of a number).
* Replies are leased ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two gateways never take the
  same reply); SQLite's write lock serialises the lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Integer, String, and_, bindparam, literal_column, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from core.bulk import read_conn
from core.db import UTCDateTime
from core.models import Call, Campaign, Consent, SmsInbound, SmsReply

LIVE_REPLY = ("queued", "leased")


def inbound_by_message(s: Session, message_id: str) -> SmsInbound | None:
    return s.scalars(select(SmsInbound).where(SmsInbound.message_id == message_id)).first()


def reply_of(s: Session, inbound_id: str) -> SmsReply | None:
    return s.scalars(select(SmsReply).where(SmsReply.inbound_id == inbound_id)).first()


def confirmation_key(s: Session, phone: str) -> str:
    """The number's revoked spell: the number and its newest consent (``-`` for none). A
    consent recorded after a revocation starts a new spell (a later STOP is confirmed
    again); further STOPs within a spell share the key."""
    newest = s.scalars(
        select(Consent.id).where(Consent.phone == phone)
        .order_by(Consent.recorded_at.desc(), Consent.id.desc()).limit(1)
    ).first()
    return f"{phone}:{newest or '-'}"


def confirmation_exists(s: Session, key: str) -> bool:
    q = select(SmsReply.id).where(SmsReply.confirmation_key == key)
    return s.scalars(q).first() is not None


def sender_for(s: Session, phone: str, to: str | None) -> tuple[str, str] | None:
    """Whose name and callback number a reply to ``phone`` gives: the campaign that last
    called or texted the number, else one whose callback number received the text, else the
    newest SMS campaign."""
    q = (select(Campaign.provider_name, Campaign.callback_number)
         .join(Call, Call.campaign_id == Campaign.id)
         .where(Call.phone == phone).order_by(Call.created_at.desc()).limit(1))
    row = s.execute(q).first()
    if row is None and to:
        row = s.execute(select(Campaign.provider_name, Campaign.callback_number)
                        .where(Campaign.callback_number == to)
                        .order_by(Campaign.created_at.desc()).limit(1)).first()
    if row is None:
        row = s.execute(select(Campaign.provider_name, Campaign.callback_number)
                        .order_by((Campaign.channel == "sms").desc(),
                                  Campaign.created_at.desc()).limit(1)).first()
    return None if row is None else (row[0], row[1])


def held_numbers(s: Session, phone_list: Sequence[str]) -> set[str]:
    """The numbers whose text waits for a human (``review``): nothing is leased to them."""
    if not phone_list:
        return set()
    return set(s.scalars(select(SmsInbound.phone).where(
        SmsInbound.review_status == "pending", SmsInbound.phone.in_(sorted(set(phone_list))))))


def any_held(s: Session) -> bool:
    return read_conn(s).execute(_HELD).first() is not None


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        SmsReply.expires_at > now,
        or_(SmsReply.status == "queued",
            and_(SmsReply.status == "leased", SmsReply.lease_expires_at <= now)),
    )


def due_replies(s: Session, now: datetime, n: int) -> list[SmsReply]:
    """Replies to lease now, the nearest deadline first (confirmations before help texts
    at one deadline); locked SKIP LOCKED on PostgreSQL."""
    q = (select(SmsReply).where(_due(now))
         .order_by(SmsReply.expires_at, SmsReply.kind, SmsReply.created_at, SmsReply.id)
         .limit(n))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return list(s.scalars(q))


# A queued reply is due (to lease, or to expire); a leased one once its lease has run out (a
# lease never outlives the reply's expires_at). Built once: the lease path probes it per poll.
_NOW = bindparam("now", type_=UTCDateTime())
_REPLY_DUE = (
    select(literal_column("1", Integer())).select_from(SmsReply)
    .where(or_(SmsReply.status == literal_column("'queued'", String()),
               and_(SmsReply.status == literal_column("'leased'", String()),
                    SmsReply.lease_expires_at <= _NOW)))
    .limit(1)
)
_HELD = (select(literal_column("1", Integer())).select_from(SmsInbound)
         .where(SmsInbound.review_status == literal_column("'pending'", String())).limit(1))


def any_reply_due(s: Session, now: datetime) -> bool:
    """A reply to lease, or one to expire (either makes a lease poll do work)."""
    return read_conn(s).execute(_REPLY_DUE, {"now": now}).first() is not None


def any_reply_expired(s: Session, now: datetime) -> bool:
    return s.scalars(select(SmsReply.id).where(SmsReply.status.in_(LIVE_REPLY),
                                               SmsReply.expires_at <= now).limit(1)
                     ).first() is not None


def expired_replies(s: Session, now: datetime) -> list[SmsReply]:
    """Replies not sent in time; locked SKIP LOCKED on PostgreSQL (one process expires each)."""
    q = (select(SmsReply).where(SmsReply.status.in_(LIVE_REPLY), SmsReply.expires_at <= now)
         .order_by(SmsReply.expires_at).limit(500))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return list(s.scalars(q))


def reply_for_update(s: Session, reply_id: str) -> SmsReply | None:
    q = select(SmsReply).where(SmsReply.id == reply_id)
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return s.scalars(q).first()
