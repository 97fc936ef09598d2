"""What the compliance dashboard (``/ui``) shows: the overview's figures, its SVG charts,
the filters of the log pages, a number's story, and the audit entries for what a reviewer saw.

The refusal log and the call log pages read through :mod:`review.logs` (the same keyset
pages and CSV as the JSON API). What is added here:

* every page view that shows patient data is audited (``patient_data.read``) in its own
  transaction, naming the reviewer's key (``actor``) and the rows shown (ids, never numbers);
  revealing one masked phone is ``patient_data.unmask`` naming that one row;
* the overview's counts, grouped in SQL over indexed columns;
* the charts' figures (drawn as SVG by review.charts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from config.errors import Invalid
from config.reasons import FLAGS as FLAG_SPECS
from config.reasons import TCPA_REASSIGNED, Code
from consent.rules import consent_day
from consent.service import normalise_phone
from core.keys import Identity
from core.models import (
    Attempt,
    AuditEntry,
    Call,
    Campaign,
    Consent,
    DncEntry,
    ReassignedAnswer,
    Refusal,
    Revocation,
    SmsInbound,
    SmsReply,
    Template,
)
from core.runtime import Runtime
from review import audit as audit_view
from review import logs as review
from review.charts import Bar, bar_chart, line_chart
from review.logs import CallLogFilter, RefusalFilter

READ_KIND = "patient_data.read"
PAGE_SIZE = 50
STAGES = ("intake", "dispatch")
RESULTS = ("connected", "voicemail", "no_answer", "busy", "failed", "wrong_number", "opted_out")
# Every flag of config.reasons (the one table), with its label.
FLAGS: tuple[str, ...] = tuple(str(f) for f in FLAG_SPECS)
FLAG_LABELS: dict[str, str] = {str(f): spec.label for f, spec in FLAG_SPECS.items()}
# Deferrals (a call that waits rather than being refused), by what made it wait.
DEFERRAL_GROUPS: dict[str, tuple[str, ...]] = {
    "cap": (Code.DAILY_CAP.value, Code.WEEKLY_CAP.value),
    "window": (Code.OUTSIDE_CALLING_WINDOW.value, Code.QUIET_DAY.value),
    "reassigned": (Code.REASSIGNED_CHECK_STALE.value,),
}
# Audit kinds the number's story already shows from their own rows (refusal log, call log).
_SHOWN_ELSEWHERE = frozenset(
    {"call.refused", "call.expired", "call.withdrawn", "call.leased", "call.outcome",
     "attempt.reserved"}
)


# --- filters from a page's query string ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FormFilter:
    """A filter as the page's form holds it (strings, echoed back), its parsed value, and
    what was wrong with it (shown on the page instead of an error status)."""

    values: dict[str, str]
    errors: list[str]


def _day(values: dict[str, str], name: str, errors: list[str]) -> date | None:
    text = values.get(name, "")
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{name}: is not a date (YYYY-MM-DD)")
        values[name] = ""
        return None


def day_range(values: dict[str, str], errors: list[str]
              ) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` are whole UTC days, both included."""
    since_d, until_d = _day(values, "since", errors), _day(values, "until", errors)
    since = datetime.combine(since_d, time(0), UTC) if since_d else None
    until = None
    if until_d is not None:
        if until_d >= date.max:
            # The day after 9999-12-31 does not exist (a 500, issue 16): the last day is
            # the whole range to its end.
            until = datetime.max.replace(tzinfo=UTC)
        else:
            until = datetime.combine(until_d, time(0), UTC) + timedelta(days=1)
    if since is not None and until is not None and until <= since:
        errors.append("until: must not be before since")
        return since, None
    return since, until


def _pick(values: dict[str, str], name: str, allowed: Sequence[str], errors: list[str]) -> str:
    text = values.get(name, "")
    if text and text not in allowed:
        errors.append(f"{name}: is not one of the listed values")
        values[name] = ""
        return ""
    return text


def _clean(params: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    return {n: str(params.get(n, "") or "").strip()[:128] for n in names}


REFUSAL_PARAMS = ("since", "until", "campaign_id", "code", "stage")
CALL_PARAMS = ("since", "until", "campaign_id", "agent_id", "result")


def refusal_filter(
    params: Mapping[str, str], campaign_ids: Sequence[str]
) -> tuple[RefusalFilter, FormFilter]:
    values, errors = _clean(params, REFUSAL_PARAMS), list[str]()
    since, until = day_range(values, errors)
    campaign = _pick(values, "campaign_id", campaign_ids, errors)
    code = _pick(values, "code", [c.value for c in Code], errors)
    stage = _pick(values, "stage", STAGES, errors)
    f = RefusalFilter(
        since=since, until=until, campaign_id=campaign or None,
        code=Code(code) if code else None,
        stage="intake" if stage == "intake" else "dispatch" if stage == "dispatch" else None,
    )
    return f, FormFilter(values, errors)


def call_filter(
    params: Mapping[str, str], campaign_ids: Sequence[str]
) -> tuple[CallLogFilter, FormFilter]:
    values, errors = _clean(params, CALL_PARAMS), list[str]()
    since, until = day_range(values, errors)
    campaign = _pick(values, "campaign_id", campaign_ids, errors)
    result = _pick(values, "result", RESULTS, errors)
    f = CallLogFilter(
        since=since, until=until, campaign_id=campaign or None,
        agent_id=values["agent_id"] or None, result=result or None,
    )
    return f, FormFilter(values, errors)


# --- small reads ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignRef:
    id: str
    name: str
    channel: str


def campaigns(rt: Runtime) -> list[CampaignRef]:
    with rt.db.read() as s:
        rows = s.execute(
            select(Campaign.id, Campaign.name, Campaign.channel).order_by(
                Campaign.name, Campaign.id
            )
        )
        return [CampaignRef(r.id, r.name, r.channel) for r in rows]


# --- audited views --------------------------------------------------------------------------


def reveal_refusal(rt: Runtime, who: Identity, refusal_id: int) -> str | None:
    """The full phone of one refusal-log row, the reveal audited in the same transaction
    (naming the number by pseudonym)."""
    with rt.write(who) as uow:
        phone = uow.session.scalar(select(Refusal.phone).where(Refusal.id == refusal_id))
        if phone is None:
            return None
        uow.audit(review.UNMASK_KIND, "refusals",
                  {"refusals": [refusal_id], "via": "ui: reveal a refusal's number"},
                  phones=[phone])
        return phone


def phone_of(rt: Runtime, *, refusal_id: int | None = None, attempt_id: str | None = None
             ) -> str | None:
    """The number behind a row, to open its story (the story page audits the read)."""
    with rt.db.read() as s:  # not a read of patient data: the story page audits it
        if refusal_id is not None:
            return s.scalar(select(Refusal.phone).where(Refusal.id == refusal_id))
        if attempt_id is not None:
            return s.scalar(select(Attempt.phone).where(Attempt.id == attempt_id))
    return None


# --- the overview ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlaggedAttempt:
    id: str
    at: datetime
    call_id: str | None
    campaign: str
    agent_id: str | None
    agent_name: str | None
    result: str | None
    flags: list[str]


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    totals: tuple[int, int]
    by_code: list[Bar]
    by_campaign: list[Bar]
    by_day: list[tuple[date, int]]
    deferrals: list[Bar]
    deferral_groups: list[Bar]
    flags: list[Bar]
    flagged: list[FlaggedAttempt]
    log: audit_view.LogStatus
    series: tuple[str, ...] = ("Last 7 days", "Last 30 days")
    charts: dict[str, str] = field(default_factory=dict)


def _pairs(short: Sequence[tuple[str, int]], long: Sequence[tuple[str, int]]) -> list[Bar]:
    a, b = dict(short), dict(long)
    keys = sorted(set(a) | set(b), key=lambda k: (-b.get(k, 0), -a.get(k, 0), k))
    return [Bar(k, (a.get(k, 0), b.get(k, 0)), k) for k in keys]


def _like_json_string(value: str) -> str:
    # The payload is canonical JSON: a code appears as "CODE". "_" is a LIKE wildcard.
    return '%"' + value.replace("_", "\\_") + '"%'


def _deferrals(s: Session, since7: datetime, since30: datetime) -> list[Bar]:
    codes = [c for group in DEFERRAL_GROUPS.values() for c in group]
    cols = []
    for c in codes:
        has = AuditEntry.payload.like(_like_json_string(c), escape="\\")
        cols.append(func.sum(case((and_(has, AuditEntry.at >= since7), 1), else_=0)))
        cols.append(func.sum(case((has, 1), else_=0)))
    row = s.execute(
        select(*cols).where(AuditEntry.kind == "call.deferred", AuditEntry.at >= since30)
    ).one()
    return [Bar(c, (int(row[2 * i] or 0), int(row[2 * i + 1] or 0)), c)
            for i, c in enumerate(codes)]


def _flag_counts(s: Session, since7: datetime, since30: datetime) -> list[Bar]:
    cols = []
    flags_text = cast(Attempt.flags, String)
    for flag in FLAGS:
        has = flags_text.like(_like_json_string(flag), escape="\\")
        cols.append(func.sum(case((and_(has, Attempt.at >= since7), 1), else_=0)))
        cols.append(func.sum(case((has, 1), else_=0)))
    row = s.execute(select(*cols).where(Attempt.at >= since30)).one()
    return [Bar(FLAG_LABELS[f], (int(row[2 * i] or 0), int(row[2 * i + 1] or 0)), f)
            for i, f in enumerate(FLAGS)]


def _flagged(s: Session, since: datetime, names: Mapping[str, str], n: int
             ) -> list[FlaggedAttempt]:
    flags_text = cast(Attempt.flags, String)
    any_flag = or_(*(flags_text.like(_like_json_string(f), escape="\\") for f in FLAGS))
    rows = s.execute(
        select(Attempt.id, Attempt.at, Attempt.call_id, Attempt.campaign_id, Attempt.agent_id,
               Attempt.agent_name, Attempt.result, Attempt.flags)
        .where(Attempt.at >= since, any_flag)
        .order_by(Attempt.at.desc(), Attempt.id.desc())
        .limit(n)
    )
    return [
        FlaggedAttempt(r.id, r.at, r.call_id, names.get(r.campaign_id or "", "(none)"),
                       r.agent_id, r.agent_name, r.result, list(r.flags or []))
        for r in rows
    ]


def overview(rt: Runtime) -> Overview:
    now = rt.clock.now()
    since7, since30 = now - timedelta(days=7), now - timedelta(days=30)
    week = review.refusal_summary(rt, since7, None)
    month = review.refusal_summary(rt, since30, None)
    names = {c.id: c.name for c in campaigns(rt)}
    by_code = _pairs([(c.code, c.count) for c in week.by_code],
                     [(c.code, c.count) for c in month.by_code])
    by_campaign = [
        Bar(names.get(b.key, "(no campaign)") if b.key else "(no campaign)", b.values, b.key)
        for b in _pairs([(c.campaign_id or "", c.count) for c in week.by_campaign],
                        [(c.campaign_id or "", c.count) for c in month.by_campaign])
    ]
    counts = {d.day: d.count for d in month.by_day}
    first = since30.date()
    by_day = [
        (first + timedelta(days=i), counts.get((first + timedelta(days=i)).isoformat(), 0))
        for i in range((now.date() - first).days + 1)
    ]
    with rt.db.read() as s:
        deferrals = _deferrals(s, since7, since30)
        flags = _flag_counts(s, since7, since30)
        flagged = _flagged(s, since30, names, 10)
    log = audit_view.status(rt)
    groups = [
        Bar(group, tuple(sum(b.values[i] for b in deferrals if b.key in codes)
                         for i in range(2)), group)
        for group, codes in DEFERRAL_GROUPS.items()
    ]
    ov = Overview(now, (week.total, month.total), by_code, by_campaign, by_day, deferrals,
                  groups, flags, flagged, log)
    ov.charts.update(
        by_code=bar_chart("refusals-by-code", "Refusals by reason code", by_code, ov.series),
        by_campaign=bar_chart("refusals-by-campaign", "Refusals by campaign", by_campaign,
                              ov.series),
        by_day=line_chart("refusals-by-day", "Refusals per day (UTC), last 30 days", by_day),
        deferrals=bar_chart("deferrals", "Deferrals by cap, calling window and "
                            "reassigned-number check",
                            deferrals, ov.series),
        flags=bar_chart("flags", "Flagged calls", flags, ov.series),
    )
    return ov


# --- a number's story -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    at: datetime
    what: str
    detail: str
    ref: str = ""
    rule: str = ""
    policy_version: str = ""
    tone: str = ""  # "bad" for refusals and revocations, "good" for consents


@dataclass(frozen=True, slots=True)
class NumberStory:
    phone: str
    consents: list[Consent]
    revocations: list[Revocation]
    dnc: list[DncEntry]
    events: list[Event]
    calls: int
    attempts: int
    answers: list[ReassignedAnswer] = field(default_factory=list)


def _reasons_text(reasons: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    text = "; ".join(f"{r.get('code')}: {r.get('message')}" for r in reasons)
    rules = "; ".join(dict.fromkeys(str(r.get("rule") or "") for r in reasons if r.get("rule")))
    return text, rules


def _decision_detail(kind: str, payload: Mapping[str, Any]) -> str:
    if kind == "call.deferred":
        nxt = payload.get("next_eligible_at") or "unknown"
        return f"waits: {', '.join(payload.get('codes') or [])}; next eligible {nxt}"
    if kind == "outcome.rejected":
        return f"outcome refused: {payload.get('flag')} ({', '.join(payload.get('fields') or [])})"
    return ", ".join(f"{k}={v}" for k, v in sorted(payload.items()) if k != "lease") or ""


def number_story(rt: Runtime, who: Identity, raw_phone: str,
                 via: str = "ui: a number's story") -> NumberStory:
    """Everything on file for one number, in time order; the read is audited (the number
    named by pseudonym).

    Raises :class:`config.errors.Invalid` (``INVALID_PHONE``) for a malformed number."""
    phone = normalise_phone(rt, raw_phone)
    with rt.write(who) as uow:
        s = uow.session
        consents = list(s.scalars(
            select(Consent).where(Consent.phone == phone).order_by(Consent.obtained_at)))
        revs = list(s.scalars(
            select(Revocation).where(Revocation.phone == phone)
            .order_by(Revocation.received_at)))
        dnc = list(s.scalars(
            select(DncEntry).where(DncEntry.phone == phone).order_by(DncEntry.added_at)))
        calls = list(s.scalars(select(Call).where(Call.phone == phone)))
        answers = list(s.scalars(
            select(ReassignedAnswer).where(ReassignedAnswer.phone == phone)
            .order_by(ReassignedAnswer.queried_at, ReassignedAnswer.id)))
        refusal_rows = list(s.scalars(
            select(Refusal).where(Refusal.phone == phone).order_by(Refusal.at, Refusal.id)))
        attempts = list(s.scalars(
            select(Attempt).where(Attempt.phone == phone).order_by(Attempt.at, Attempt.id)))
        names = {r.id: r.name for r in s.execute(select(Campaign.id, Campaign.name))}
        # Texts (issue 18): what the number texted, the replies, each SMS call's template.
        inbound = list(s.scalars(select(SmsInbound).where(SmsInbound.phone == phone)
                                 .order_by(SmsInbound.received_at)))
        replies = list(s.scalars(select(SmsReply).where(SmsReply.phone == phone)
                                 .order_by(SmsReply.created_at)))
        templates = {r.id: (r.name, r.template)
                     for r in s.execute(select(Campaign.id, Template.name.label("name"),
                                               Template.id.label("template"))
                                        .join(Template, Template.id == Campaign.template_id))}
        decisions: list[AuditEntry] = []
        ids = [c.id for c in calls]
        for i in range(0, len(ids), 500):
            subjects = [f"call:{x}" for x in ids[i:i + 500]]
            decisions.extend(s.scalars(
                select(AuditEntry).where(AuditEntry.subject.in_(subjects),
                                         AuditEntry.kind.not_like("patient\\_data.%",
                                                                  escape="\\"))))
        uow.audit(READ_KIND, "number", {
            "via": via, "consents": [c.id for c in consents],
            "revocations": [r.id for r in revs], "dnc": [d.id for d in dnc], "calls": ids,
            "reassigned_answers": [a.id for a in answers],
        }, phones=[phone])
    events: list[Event] = []
    for c in consents:
        events.append(Event(
            c.obtained_at, f"Consent obtained ({c.method})",
            f"channels {', '.join(c.channels)}; purposes {', '.join(c.purposes)}"
            + (f"; expires {c.expires_at:%Y-%m-%d}" if c.expires_at else ""),
            ref=c.evidence_ref or "(no evidence reference)", tone="good"))
    for r in revs:
        events.append(Event(r.received_at, "Consent revoked", f"source {r.source}",
                            ref=f"call {r.call_id}" if r.call_id else "", tone="bad"))
    for d in dnc:
        events.append(Event(d.added_at, "Added to do-not-call", f"{d.reason} ({d.source})",
                            tone="bad"))
        if d.lifted_at is not None:
            events.append(Event(d.lifted_at, "Do-not-call entry lifted", d.lift_reason or ""))
    for ans in answers:
        events.append(_answer_event(ans, consents))
    intake_refused = {r.call_id for r in refusal_rows if r.stage == "intake"}
    for call in calls:
        if call.id not in intake_refused:
            tpl = templates.get(call.campaign_id)
            text = (f"; text from template {tpl[0]} ({tpl[1]}): \u201c{call.sms_text}\u201d"
                    if tpl and call.sms_text else "")
            events.append(Event(
                call.created_at, "Accepted at intake" + (" (text)" if tpl else ""),
                f"campaign {names.get(call.campaign_id, call.campaign_id)}; external id "
                f"{call.external_id}; now {call.status}{text}", ref=f"call {call.id}",
                policy_version=call.policy_version))
    for m in inbound:
        what = {"revoked": "STOP: consent revoked", "review": "held for review",
                "help": "HELP", "none": "no action"}.get(m.action, m.action)
        decided = (f"; {m.review_status} {m.decided_at:%Y-%m-%d %H:%M} UTC"
                   if m.decided_at is not None else
                   "; waiting for a decision" if m.review_status == "pending" else "")
        events.append(Event(m.received_at, f"Text received: {what}",
                            f"message {m.message_id}{decided}", ref=f"text {m.id}",
                            tone="bad" if m.action in ("revoked", "review") else ""))
    for rp in replies:
        kind = "Opt-out confirmation" if rp.kind == "sms_confirmation" else "Help text"
        when = (f"sent {rp.sent_at:%Y-%m-%d %H:%M:%S} UTC" if rp.sent_at is not None
                else rp.status)
        events.append(Event(rp.created_at, f"{kind} text ({rp.status})",
                            f"\u201c{rp.text}\u201d; {when}; expires "
                            f"{rp.expires_at:%Y-%m-%d %H:%M:%S} UTC", ref=f"reply {rp.id}",
                            rule="47 CFR 64.1200(a)(12)" if rp.kind == "sms_confirmation"
                            else "", tone="bad" if rp.status == "expired" else ""))
    for rf in refusal_rows:
        text, rules = _reasons_text(rf.reasons or [])
        events.append(Event(
            rf.at, f"{rf.status.capitalize()} at {rf.stage}",
            f"{text} (campaign {names.get(rf.campaign_id or '', '-')}; "
            f"external id {rf.external_id or '-'})",
            ref=f"refusal {rf.id}", rule=rules, policy_version=rf.policy_version, tone="bad"))
    for e in decisions:
        if e.kind in _SHOWN_ELSEWHERE:
            continue
        events.append(Event(
            e.at, f"Decision: {e.kind}",
            _decision_detail(e.kind, json.loads(e.payload)) if e.payload else "(erased)",
            ref=f"audit entry {e.leaf_index}" if e.leaf_index is not None
            else "audit entry (not yet sealed)", policy_version=e.policy_version))
    for a in attempts:
        who_ = f"agent {a.agent_id or '?'} ({a.agent_name or '?'})"
        dur = (f"; {int((a.ended_at - a.started_at).total_seconds())} s"
               if a.started_at and a.ended_at else "")
        flags = f"; flags {', '.join(a.flags)}" if a.flags else ""
        events.append(Event(
            a.at, f"Attempt ({a.kind}, {a.state})",
            f"{who_}; result {a.result or '-'}{dur}; campaign "
            f"{names.get(a.campaign_id or '', '-')}; callback disclosed "
            f"{a.disclosed_callback_number or '-'}{flags}",
            ref=f"attempt {a.id}", tone="bad" if a.flags else ""))
    events.sort(key=lambda ev: ev.at)
    return NumberStory(phone, consents, revs, dnc, events, len(calls), len(attempts), answers)


_ANSWER_TEXT = {
    "yes": "permanently disconnected on or after",
    "no": "not disconnected since",
    "no_data": "no data since",
}


def _answer_event(a: ReassignedAnswer, consents: Sequence[Consent]) -> Event:
    """A Reassigned Numbers Database answer, at its query time, with which consents it
    invalidates (``yes`` for a date on or after a consent's date) or covers (``no`` for a
    date on or before it)."""
    days = [(c, consent_day(c.obtained_at)) for c in consents]
    if a.answer == "yes":
        hit = [c.id for c, d in days if a.date >= d]
        effect = (f"invalidates consent {', '.join(hit)} (NUMBER_REASSIGNED)" if hit
                  else "asked about a date before every consent: decides nothing")
    elif a.answer == "no":
        hit = [c.id for c, d in days if a.date <= d]
        effect = (f"covers consent {', '.join(hit)}" if hit
                  else "asked about a date after every consent: covers none")
    else:
        effect = "decides nothing"
    return Event(
        a.queried_at, f"Reassigned Numbers Database: {a.answer}",
        f"{_ANSWER_TEXT.get(a.answer, a.answer)} {a.date:%Y-%m-%d}; {effect}",
        ref=f"answer {a.id}", rule=TCPA_REASSIGNED,
        tone="bad" if a.answer == "yes" else "good" if a.answer == "no" else "")


def check_phone(rt: Runtime, raw: str) -> str:
    """The E.164 form of a typed number, or :class:`Invalid` naming the field."""
    if not raw.strip():
        raise Invalid("INVALID_PHONE", "phone: is empty", {"field": "phone"})
    return normalise_phone(rt, raw)
