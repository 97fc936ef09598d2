"""``GET /v1/events``: the outbox as a feed, in ``seq`` order (core.events). The cursor is
the last ``seq`` read; an event that committed late got a later ``seq``, so a reader that
passes the cursor back never skips one."""

from __future__ import annotations

from collections.abc import Sequence

from config.errors import Invalid
from core import events
from core.keys import Identity
from core.runtime import Runtime
from webhooks.schemas import EventOut, EventPage

MAX_LIMIT = 500
MAX_WAIT_SECONDS = 30


def parse_cursor(after: str | None) -> int:
    if after is None or after == "":
        return 0
    if not after.isdigit() or len(after) > 19:
        raise Invalid("VALIDATION_ERROR", "after is not a cursor of the feed",
                      [{"field": "query.after", "message": "invalid cursor"}])
    return int(after)


def parse_types(types: str | None) -> list[str]:
    if not types:
        return []
    out = [t.strip() for t in types.split(",") if t.strip()]
    unknown = [t for t in out if t not in events.EVENT_TYPES]
    if unknown:
        raise Invalid("VALIDATION_ERROR", "types names an unknown event type",
                      [{"field": "query.types", "message": "unknown event type"}])
    return list(dict.fromkeys(out))


def page(rt: Runtime, who: Identity, cursor: int, types: Sequence[str], limit: int
         ) -> EventPage:
    """The events after ``cursor`` (numbering any committed but not yet numbered first, so
    the feed does not wait for the worker). Numbers the page shows (revocation and
    do-not-call events) are audited as a read of patient data, by pseudonym."""
    with rt.db.read() as s:
        pending = events.has_pending(s)
    if pending:
        events.sequence(rt.db)
    with rt.db.read() as s:
        # The head first: every event numbered up to it is visible to the query that
        # follows (passes commit in order), so a short page has read past all of them.
        top = events.head(s)
        got = events.after(s, cursor, limit, types)
    items = [EventOut.of(e.public_id, e.type, e.at, e.data) for e in got]
    phones = sorted({str(i.data["phone"]) for i in items if i.data.get("phone")})
    if phones:
        with rt.write(who) as uow:
            uow.audit("patient_data.read", "events", {
                "via": "GET /v1/events", "from": got[0].seq, "to": got[-1].seq,
            }, phones=phones)
    nxt = got[-1].seq if got else cursor
    if len(got) < limit:
        # Past the events of other types too (a filtered reader does not scan them again).
        nxt = max(nxt, top)
    return EventPage(items=items, next_cursor=str(nxt))
