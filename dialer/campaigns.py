"""Campaigns: purpose and channel checked against the catalogue; a campaign's window may
only narrow the policy's; provider name and callback number are what every call discloses."""

from __future__ import annotations

import uuid

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.errors import Invalid, NotFound
from config.policy import Window
from config.reasons import Code, reason
from consent import phones
from core.keys import Identity
from core.models import Call, Campaign, Template
from core.runtime import Runtime
from dialer.schemas import CampaignIn, CampaignOut, WindowIn
from purpose_rules import rules as purpose_rules
from texts import rules as text_rules

CALL_STATUSES = ("queued", "leased", "completed", "refused", "withdrawn", "expired")


def campaign_window(c: Campaign) -> Window | None:
    if c.window_start is None or c.window_end is None:
        return None
    return Window(start=c.window_start, end=c.window_end)


def _out(c: Campaign, counts: dict[str, int] | None = None) -> CampaignOut:
    w = campaign_window(c)
    return CampaignOut(
        id=c.id,
        name=c.name,
        purpose=c.purpose,
        channel=c.channel,
        provider_name=c.provider_name,
        callback_number=c.callback_number,
        calling_window=WindowIn(start=w.start, end=w.end) if w else None,
        max_attempts=c.max_attempts,
        script_id=c.script_id,
        template_id=c.template_id,
        created_at=c.created_at,
        created_by=c.created_by,
        policy_version=c.policy_version,
        counts=counts or {},
    )


def create_campaign(rt: Runtime, who: Identity, data: CampaignIn) -> CampaignOut:
    decision = purpose_rules.decide(rt.policy, data.purpose, data.channel)
    if not decision.allowed:
        r = decision.reasons[0]
        raise Invalid(r.code.value, r.message, {"field": "purpose", "rule": r.rule})
    callback, bad = phones.check(
        data.callback_number,
        rt.policy.default_region,
        tuple(rt.policy.allowed_regions),
        "callback_number",
    )
    if callback is None:
        assert bad is not None
        raise Invalid(bad.code.value, bad.message, {"field": "callback_number"})
    window: Window | None = None
    if data.calling_window is not None:
        try:
            window = Window(start=data.calling_window.start, end=data.calling_window.end)
        except ValidationError as exc:
            raise Invalid(
                "VALIDATION_ERROR",
                "calling_window is not a valid window",
                [
                    {
                        "field": ".".join(["body", "calling_window", *map(str, e["loc"])]),
                        "message": e["msg"].removeprefix("Value error, "),
                    }
                    for e in exc.errors()
                ],
            ) from None
        base = rt.policy.calling_hours.base()
        assert base is not None
        if not window.within(base):
            raise Invalid(
                Code.WINDOW_WIDER_THAN_POLICY.value,
                f"calling_window may only narrow the policy's {base.start}-{base.end}",
                {"field": "calling_window", "policy": {"start": base.start, "end": base.end}},
            )
    with rt.write(who) as uow:
        _check_template(uow.session, data)
        row = Campaign(
            id=str(uuid.uuid4()),
            name=data.name,
            purpose=data.purpose,
            channel=data.channel,
            provider_name=data.provider_name,
            callback_number=callback,
            window_start=window.start if window else None,
            window_end=window.end if window else None,
            max_attempts=data.max_attempts,
            script_id=data.script_id,
            template_id=data.template_id,
            created_by=who.key_id,
            created_at=uow.now,
            policy_version=rt.policy_version,
        )
        uow.session.add(row)
        uow.audit("campaign.created", f"campaign:{row.id}", {
            "purpose": row.purpose, "channel": row.channel, "max_attempts": row.max_attempts,
            "template_id": row.template_id,
        })
    return _out(row, dict.fromkeys(CALL_STATUSES, 0))


def _check_template(s: Session, data: CampaignIn) -> None:
    """API.md "Templates and texts": a campaign on the ``sms`` channel names a template of
    its channel and purpose; its provider name is GSM-7 and at most 30 characters, so the
    template's worst case holds. A voice campaign may name a template of its own channel
    and purpose."""
    if data.channel == "sms":
        problem = text_rules.provider_name_problem(data.provider_name)
        if problem is not None:
            raise Invalid("VALIDATION_ERROR", problem,
                          [{"field": "body.provider_name", "message": problem}])
        if data.template_id is None:
            r = reason(Code.TEMPLATE_REQUIRED)
            raise Invalid(r.code.value, r.message, {"field": "template_id", "rule": r.rule})
    if data.template_id is None:
        return
    tpl = s.get(Template, data.template_id)
    if tpl is None or tpl.channel != data.channel or tpl.purpose != data.purpose:
        r = reason(Code.TEMPLATE_MISMATCH)
        what = ("no such template" if tpl is None else
                f"the template is for channel {tpl.channel} and purpose {tpl.purpose}")
        raise Invalid(r.code.value, f"{r.message} ({what})",
                      {"field": "template_id", "rule": r.rule})


def get_campaign(rt: Runtime, campaign_id: str) -> CampaignOut:
    with rt.db.read() as s:
        c = s.get(Campaign, campaign_id)
        if c is None:
            raise NotFound("NOT_FOUND", "no such campaign")
        counts = dict.fromkeys(CALL_STATUSES, 0)
        for status, n in s.execute(
            select(Call.status, func.count()).where(Call.campaign_id == c.id).group_by(Call.status)
        ):
            counts[status] = n
        return _out(c, counts)


def load_campaign(rt: Runtime, campaign_id: str) -> Campaign:
    with rt.db.read() as s:
        c = s.get(Campaign, campaign_id)
        if c is None:
            raise NotFound("NOT_FOUND", "no such campaign")
        return c
