"""An SMS campaign's rows: each one's text rendered from the campaign's template at intake
(API.md "Templates and texts"). A row whose template needs ``appointment_at`` and lacks it,
or whose rendered text would not fit one segment (or the purpose's ``sms_max_chars``), is
``invalid``: a text that cannot be sent whole is never queued (47 CFR 64.1200(a)(9)(iv)(E)).

The text holds the provider's name, the callback number and the appointment's date and time
in the callee's zone: nothing else about the patient (PRODUCT.md 8)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from config.policy import Policy
from config.reasons import Code, reason
from core.models import Campaign, Template
from dialer.intake.parse import Row
from dialer.rules.zones import candidate_zone_tuple
from texts import rules as text_rules


def _zone(row: Row, region: str) -> str:
    """The zone an appointment is told in: the postal code's where given, else the
    number's first candidate zone."""
    assert row.phone is not None
    zones = row.zones or candidate_zone_tuple(row.phone, row.state, row.postal_code, region)
    for z in zones:
        if z.source == "postal_code":
            return z.zone
    return zones[0].zone if zones else "America/New_York"


def render_texts(s: Session, campaign: Campaign, rows: Sequence[Row], policy: Policy) -> None:
    """Set ``sms_text`` on each valid row of ``rows``, or mark the row invalid."""
    tpl = s.get(Template, campaign.template_id) if campaign.template_id else None
    if tpl is None:  # an sms campaign made before templates: nothing to render
        return
    spec = policy.purposes.get(campaign.purpose)
    needs_appointment = any(p in text_rules.APPOINTMENT_PLACEHOLDERS for p in tpl.placeholders)
    for r in rows:
        if r.invalid or r.phone is None:
            continue
        if needs_appointment and r.appointment_at is None:
            r.invalid.append(reason(
                Code.INVALID_FIELD,
                "appointment_at: is required by the campaign's template "
                "({appointment_date} / {appointment_time})",
                details={"field": "appointment_at"}))
            continue
        try:
            values = text_rules.template_values(
                campaign.provider_name, campaign.callback_number,
                r.appointment_at if needs_appointment else None,
                _zone(r, policy.default_region) if needs_appointment else None)
            text = text_rules.render(tpl.text, values)
        except ValueError as exc:  # TemplateError too; names the placeholder, not a value
            r.invalid.append(reason(Code.INVALID_FIELD, f"text: {exc}",
                                    details={"field": "appointment_at"}))
            continue
        enc = text_rules.encoding(text)
        n = text_rules.length(text, enc)
        limit = text_rules.SEGMENT_LIMIT[enc]
        if spec is not None:
            limit = min(limit, spec.sms_max_chars)
        if n > limit:
            r.invalid.append(reason(
                Code.TEMPLATE_TOO_LONG,
                f"the rendered text is {n} {enc} characters; one segment holds {limit}",
                details={"field": "text", "length": n, "limit": limit, "encoding": enc}))
            continue
        r.sms_text = text
