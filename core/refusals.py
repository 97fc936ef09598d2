"""The refusal log: one row per refused/invalid intake row and per dispatch-time refusal,
expiry or withdrawal, written in the same transaction as the decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from config.reasons import Reason
from core import metrics
from core.bulk import insert_rows
from core.models import Refusal


def refusal_row(
    *,
    at: datetime,
    stage: str,
    status: str,
    reasons: Sequence[Reason],
    policy_version: str,
    call_id: str | None = None,
    external_id: str | None = None,
    campaign_id: str | None = None,
    phone: str | None = None,
    row: int | None = None,
) -> dict[str, Any]:
    return {
        "at": at,
        "call_id": call_id,
        "external_id": external_id,
        "campaign_id": campaign_id,
        "phone": phone,
        "stage": stage,
        "status": status,
        "code": reasons[0].code.value,
        "codes": " ".join(r.code.value for r in reasons),
        "reasons": [r.as_dict() for r in reasons],
        "row": row,
        "policy_version": policy_version,
    }


REFUSALS = cast(Table, Refusal.__table__)


def write(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany for all rows (core.db.insert_rows); counted in the metrics once the
    transaction commits."""
    insert_rows(session, REFUSALS, rows)
    counts = Counter((r["code"], r["stage"]) for r in rows)
    for labels, n in counts.items():
        metrics.count_on_commit(session, metrics.REFUSALS, labels, n)
