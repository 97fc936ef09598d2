"""Templates and texts: operations (API.md "Templates and texts"). Each is one unit of work:
load what the rules need, call texts.rules, write the decision and its audit entry.

Inbound texts. A STOP (texts.rules.classify_inbound) is the same revocation as any other
(consent.service.revoke_in_session: every consent revoked, the number on do-not-call, its
queued and leased calls withdrawn on every channel, audited), taken with source ``sms_stop``
at once (47 CFR 64.1200(a)(10)), and queues exactly one confirmation text, answered within
five minutes or not at all (64.1200(a)(12)). Why "exactly one" holds with concurrent
deliveries: see texts.store.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from config.errors import Conflict, Invalid, NotFound
from config.reasons import Flag
from consent.service import check_received_at, normalise_phone, revoke_in_session
from core.keys import Identity
from core.models import SmsInbound, SmsReply, Template
from core.numbers import lock_numbers
from core.runtime import Runtime
from core.uow import UnitOfWork
from purpose_rules import rules as purpose_rules
from texts import rules, store
from texts.schemas import (
    InboundIn,
    InboundOut,
    ReplyOutcomeIn,
    ReplyOutcomeOut,
    ReviewOut,
    TemplateIn,
    TemplateOut,
)

log = logging.getLogger("callgate.texts")

REPLY_WINDOW = timedelta(minutes=5)  # 47 CFR 64.1200(a)(12): confirm within five minutes
EXPIRY = "system:reply-expiry"
ACTION = {"revoke": "revoked", "review": "review", "help": "help", "none": "none"}


# --- templates -------------------------------------------------------------------------------


def _template_out(t: Template) -> TemplateOut:
    enc: rules.Encoding = "GSM-7" if t.encoding == "GSM-7" else "UCS-2"
    return TemplateOut(
        id=t.id, name=t.name, channel=t.channel, purpose=t.purpose, text=t.text,
        encoding=enc, max_length=t.max_length, limit=t.char_limit,
        segments=None if t.char_limit is None else rules.segment_count(t.max_length, enc),
        placeholders=list(t.placeholders), created_at=t.created_at, created_by=t.created_by,
        policy_version=t.policy_version,
    )


def create_template(rt: Runtime, who: Identity, data: TemplateIn) -> TemplateOut:
    """Validate and store a template (immutable): 422 ``TEMPLATE_INVALID`` listing each
    reason, or the purpose's refusal (``PURPOSE_NOT_ALLOWED`` / ``PURPOSE_UNKNOWN``)."""
    decision = purpose_rules.decide(rt.policy, data.purpose, data.channel)
    if not decision.allowed:
        r = decision.reasons[0]
        raise Invalid(r.code.value, r.message, {"field": "purpose", "rule": r.rule})
    check = rules.validate_template(data.text, data.channel, data.purpose, rt.policy)
    refusal = check.refusal()
    if refusal is not None:
        listed = "; ".join(f"{r.code.value}: {r.message}" for r in check.reasons)
        raise Invalid(refusal.code.value, f"the template is refused: {listed}",
                      {**(refusal.details or {}), "rule": refusal.rule})
    with rt.write(who) as uow:
        row = Template(
            id=str(uuid.uuid4()), name=data.name, channel=data.channel, purpose=data.purpose,
            text=data.text, encoding=check.encoding, max_length=check.max_length,
            char_limit=check.limit, placeholders=list(check.placeholders),
            created_by=uow.key_id, created_at=uow.now, policy_version=uow.policy_version,
        )
        uow.session.add(row)
        uow.audit("template.created", f"template:{row.id}", {
            "channel": row.channel, "purpose": row.purpose, "encoding": row.encoding,
            "max_length": row.max_length, "limit": row.char_limit,
        })
    return _template_out(row)


def list_templates(rt: Runtime, limit: int = 500) -> list[TemplateOut]:
    with rt.db.read() as s:
        rows = s.scalars(select(Template).order_by(Template.created_at.desc(), Template.id)
                         .limit(limit))
        return [_template_out(t) for t in rows]


def get_template(rt: Runtime, template_id: str) -> TemplateOut:
    with rt.db.read() as s:
        t = s.get(Template, template_id)
        if t is None:
            raise NotFound("NOT_FOUND", "no such template")
        return _template_out(t)


# --- inbound texts ---------------------------------------------------------------------------


def _reply_text(kind: str, sender: tuple[str, str] | None) -> tuple[str, str, str]:
    """The reply's text (GSM-7, one segment), with the provider and callback it names."""
    name, callback = sender or ("", "")
    try:
        national = rules.national_form(callback) if callback else ""
    except ValueError:
        national = callback
    lead = f"{name}: " if name else ""
    if kind == "sms_confirmation":
        text = f"{lead}You are opted out and will get no more texts or calls from us."
        if national:
            text += f" Questions: {national}"
    else:
        text = f"{lead}appointment and care messages."
        if national:
            text += f" For help call {national}."
        text += " Reply STOP to opt out."
    if not rules.fits_one_segment(text):  # a provider name longer than an SMS campaign's
        text = text.removeprefix(lead)
    return text, name, callback


def _queue_reply(uow: UnitOfWork, inbound: SmsInbound, kind: str, key: str | None) -> SmsReply:
    s, now = uow.session, uow.now
    text, name, callback = _reply_text(kind, store.sender_for(s, inbound.phone,
                                                              inbound.to_number))
    reply = SmsReply(
        id=str(uuid.uuid4()), kind=kind, phone=inbound.phone, inbound_id=inbound.id,
        confirmation_key=key, text=text, provider_name=name, callback_number=callback,
        status="queued", received_at=inbound.received_at,
        expires_at=inbound.received_at + REPLY_WINDOW, created_at=now, updated_at=now,
    )
    s.add(reply)
    uow.audit(f"sms.{kind}.queued", f"sms_reply:{reply.id}", {
        "inbound": inbound.id, "expires_at": reply.expires_at.isoformat(),
    })
    return reply


def _revoke(uow: UnitOfWork, inbound: SmsInbound) -> tuple[int, str | None]:
    """The revocation of ``inbound``'s number (source sms_stop) and its one confirmation
    (none when this revoked spell already has one). The caller holds the number's lock."""
    s = uow.session
    key = store.confirmation_key(s, inbound.phone)
    out = revoke_in_session(uow, inbound.phone, "sms_stop", inbound.received_at)
    inbound.revocation_id = out.id
    reply_id = None
    if not store.confirmation_exists(s, key):
        reply_id = _queue_reply(uow, inbound, "sms_confirmation", key).id
    return out.withdrawn_calls or 0, reply_id


def _answer(row: SmsInbound, duplicate: bool, withdrawn: int = 0,
            reply_id: str | None = None) -> InboundOut:
    return InboundOut(action=row.action, message_id=row.message_id,
                      duplicate=duplicate, withdrawn_calls=withdrawn, reply_id=reply_id)


def _to_number(rt: Runtime, raw: str | None) -> str | None:
    """The number the text was sent to, in E.164 when it is one (a short code is not: then
    it is not kept; it only helps to find whose reply this is)."""
    if not raw:
        return None
    try:
        return normalise_phone(rt, raw, "to")
    except Invalid:
        return None


def receive(rt: Runtime, who: Identity, data: InboundIn) -> InboundOut:
    """Decide one inbound text (API.md ``POST /v1/sms/inbound``)."""
    phone = normalise_phone(rt, data.from_, "from")
    to = _to_number(rt, data.to)
    action = ACTION[rules.classify_inbound(data.body, rt.policy)]
    try:
        return _receive(rt, who, data, phone, to, action)
    except IntegrityError:
        # The same message_id from another number at the same instant (the number's lock
        # does not serialise those): uq_sms_inbound_message_id let one in; this one gets
        # that one's decision, and nothing is done twice.
        with rt.db.read() as s:
            seen = store.inbound_by_message(s, data.message_id)
            if seen is None:
                raise
            reply = store.reply_of(s, seen.id)
            return _answer(seen, True, reply_id=reply.id if reply else None)


def _receive(rt: Runtime, who: Identity, data: InboundIn, phone: str, to: str | None,
             action: str) -> InboundOut:
    with rt.write(who) as uow:
        s = uow.session
        # First the number's lock (core.numbers): a second delivery of this message, or
        # another STOP from this number, waits here and then sees this one's rows.
        lock_numbers(s, [phone], skip_locked=False)
        seen = store.inbound_by_message(s, data.message_id)
        if seen is not None:
            reply = store.reply_of(s, seen.id)
            uow.audit("sms.inbound.repeated", f"sms:{seen.id}", {"action": seen.action})
            return _answer(seen, True, reply_id=reply.id if reply else None)
        received_at = check_received_at(rt, data.received_at, uow.now)
        row = SmsInbound(
            id=str(uuid.uuid4()), message_id=data.message_id, phone=phone, to_number=to,
            received_at=received_at, recorded_at=uow.now, recorded_by=uow.key_id,
            action=action,
            # Kept only for the human who must read it; erased when they decide.
            body=data.body if action == "review" else None,
            review_status="pending" if action == "review" else None,
        )
        s.add(row)
        s.flush()
        withdrawn, reply_id = 0, None
        if action == "revoked":
            withdrawn, reply_id = _revoke(uow, row)
        elif action == "help":
            reply_id = _queue_reply(uow, row, "sms_help", None).id
        uow.audit("sms.inbound", f"sms:{row.id}", {
            "action": action, "received_at": received_at.isoformat(),
            "withdrawn_calls": withdrawn, "reply": reply_id,
        }, phones=[phone])
        return _answer(row, False, withdrawn, reply_id)


def decide_review(rt: Runtime, who: Identity, inbound_id: str, decision: str) -> ReviewOut:
    """A compliance or admin user's decision on a text held for review: ``revoke`` (as a STOP,
    its confirmation included) or ``release`` (the number's calls and texts go again)."""
    with rt.write(who) as uow:
        s = uow.session
        row = s.get(SmsInbound, inbound_id)
        if row is None or row.action != "review":
            raise NotFound("NOT_FOUND", "no such text waiting for review")
        lock_numbers(s, [row.phone], skip_locked=False)
        s.refresh(row)
        if row.review_status != "pending":
            raise Conflict("ALREADY_DECIDED", "this text was already decided")
        withdrawn, reply_id = 0, None
        if decision == "revoke":
            withdrawn, reply_id = _revoke(uow, row)
        row.review_status = "revoked" if decision == "revoke" else "released"
        row.decided_by, row.decided_at = uow.key_id, uow.now
        row.body = None  # the decision is made: the words are not kept
        uow.audit("sms.review.decided", f"sms:{row.id}", {
            "decision": decision, "withdrawn_calls": withdrawn, "reply": reply_id,
        })
        return ReviewOut(id=row.id, review_status=row.review_status,
                         withdrawn_calls=withdrawn, reply_id=reply_id)


# --- replies: leased ahead of every call, outside the caps and windows -----------------------


def expire_replies(uow: UnitOfWork) -> int:
    """Replies not sent within five minutes of the patient's message end, each logged as
    such (flag SMS_CONFIRMATION_EXPIRED): a late confirmation is not allowed."""
    gone = store.expired_replies(uow.session, uow.now)
    for r in gone:
        r.status, r.updated_at, r.lease_id, r.lease_expires_at = "expired", uow.now, None, None
        uow.audit("sms.reply.expired", f"sms_reply:{r.id}", {
            "kind": r.kind, "flag": Flag.SMS_CONFIRMATION_EXPIRED.value,
            "expires_at": r.expires_at.isoformat(),
        })
        log.warning("%s: the %s text %s was not sent within five minutes and expired",
                    Flag.SMS_CONFIRMATION_EXPIRED.value, r.kind, r.id)
    return len(gone)


def lease_replies(uow: UnitOfWork, dialer_id: str, n: int, lease_seconds: int
                  ) -> list[dict[str, Any]]:
    """Up to ``n`` replies leased now (oldest first) as tasks of their own kind; a lease
    never outlives the reply's five minutes."""
    s, now = uow.session, uow.now
    expire_replies(uow.acting(EXPIRY))
    tasks: list[dict[str, Any]] = []
    for r in store.due_replies(s, now, n):
        lease_id = str(uuid.uuid4())
        expires = min(now + timedelta(seconds=lease_seconds), r.expires_at)
        r.status, r.lease_id, r.lease_expires_at = "leased", lease_id, expires
        r.dialer_id, r.updated_at = dialer_id, now
        uow.audit("sms.reply.leased", f"sms_reply:{r.id}", {
            "lease": lease_id, "dialer_id": dialer_id, "expires_at": expires.isoformat(),
        })
        tasks.append({
            "call_id": r.id, "lease_id": lease_id, "lease_expires_at": expires,
            "phone": r.phone, "purpose": "opt_out_confirmation"
            if r.kind == "sms_confirmation" else "help",
            "channel": "sms", "campaign_id": "", "provider_name": r.provider_name,
            "callback_number": r.callback_number, "script_id": None,
            "max_duration_seconds": None, "sms_max_chars": 160, "kind": r.kind,
            "text": r.text, "template_id": None, "disclosures": [],
            "attempt": 1, "max_attempts": 1,
        })
    if tasks:
        s.flush()
    return tasks


def reply_outcome(rt: Runtime, who: Identity, reply_id: str, data: ReplyOutcomeIn
                  ) -> ReplyOutcomeOut:
    """A gateway's report on a reply it leased: ``sent`` ends it; ``failed`` returns it to
    be leased again while its five minutes last."""
    with rt.write(who) as uow:
        r = store.reply_for_update(uow.session, reply_id)
        if r is None:
            raise NotFound("NOT_FOUND", "no such reply")
        if (r.status != "leased" or r.lease_id != data.lease_id
                or r.lease_expires_at is None or r.lease_expires_at <= uow.now):
            raise Conflict("LEASE_NOT_HELD", "the reply's lease is not held (unknown, "
                           "expired, or the reply's five minutes are over)")
        r.lease_id, r.lease_expires_at, r.updated_at = None, None, uow.now
        if data.result == "sent":
            r.status, r.sent_at = "sent", data.sent_at or uow.now
        else:
            r.status = "queued"
        uow.audit(f"sms.reply.{data.result}", f"sms_reply:{r.id}", {"kind": r.kind})
        return ReplyOutcomeOut(id=r.id, status=r.status)
