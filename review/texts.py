"""The dashboard's texts page (issue 18): inbound STOPs and their confirmations per day, the
texts held for a human (plain-language opt-outs: revocation by any reasonable means is judged
on the totality, FCC 19-108 / 47 CFR 64.1200(a)(10)), and the templates. Reading a held text
is reading patient data: the page's view is audited, naming each number by pseudonym."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from consent.phones import mask
from core.keys import Identity
from core.models import Campaign, SmsInbound, SmsReply, Template
from core.runtime import Runtime

DAYS = 30


@dataclass(frozen=True, slots=True)
class DayRow:
    day: date
    stops: int
    confirmations_sent: int
    confirmations_expired: int
    help: int
    review: int


@dataclass(frozen=True, slots=True)
class HeldText:
    id: str
    received_at: datetime
    body: str
    masked_phone: str


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: str
    name: str
    channel: str
    purpose: str
    text: str
    encoding: str
    max_length: int
    limit: int | None
    campaigns: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TextsView:
    now: datetime
    days: list[DayRow]
    held: list[HeldText]
    templates: list[TemplateRow]


def texts_view(rt: Runtime, who: Identity) -> TextsView:
    now = rt.clock.now()
    since = datetime.combine(now.date() - timedelta(days=DAYS - 1), datetime.min.time(),
                             tzinfo=now.tzinfo)
    with rt.write(who) as uow:
        s = uow.session
        inbound = list(s.execute(select(SmsInbound.received_at, SmsInbound.action)
                                 .where(SmsInbound.received_at >= since)))
        replies = list(s.execute(select(SmsReply.received_at, SmsReply.kind, SmsReply.status)
                                 .where(SmsReply.received_at >= since)))
        held_rows = list(s.scalars(select(SmsInbound).where(SmsInbound.review_status == "pending")
                                   .order_by(SmsInbound.received_at).limit(200)))
        used = {tid: n for tid, n in s.execute(
            select(Campaign.template_id, func.count())
            .where(Campaign.template_id.is_not(None)).group_by(Campaign.template_id))}
        templates = [
            TemplateRow(t.id, t.name, t.channel, t.purpose, t.text, t.encoding, t.max_length,
                        t.char_limit, int(used.get(t.id, 0)), t.created_at)
            for t in s.scalars(select(Template).order_by(Template.created_at.desc()).limit(500))
        ]
        if held_rows:
            uow.audit("patient_data.read", "sms_review", {
                "via": "ui: texts held for review", "texts": [h.id for h in held_rows],
            }, phones=[h.phone for h in held_rows])
    by_day: dict[date, dict[str, int]] = {}
    for at, action in inbound:
        d = by_day.setdefault(at.date(), {})
        key = {"revoked": "stops", "help": "help", "review": "review"}.get(action)
        if key:
            d[key] = d.get(key, 0) + 1
    for at, kind, status in replies:
        if kind != "sms_confirmation" or status not in ("sent", "expired"):
            continue
        d = by_day.setdefault(at.date(), {})
        key = f"confirmations_{status}"
        d[key] = d.get(key, 0) + 1
    days = [
        DayRow(day, v.get("stops", 0), v.get("confirmations_sent", 0),
               v.get("confirmations_expired", 0), v.get("help", 0), v.get("review", 0))
        for day, v in sorted(by_day.items(), reverse=True)
    ]
    held = [HeldText(h.id, h.received_at, h.body or "", mask(h.phone)) for h in held_rows]
    return TextsView(now, days, held, templates)
