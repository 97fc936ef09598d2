"""The unit of work: one transaction with what every decision in it shares.

A service opens one with ``rt.write(who)`` (or ``rt.read(who)``) and reads as its decision:

    with rt.write(who) as uow:
        row = ...
        uow.session.add(row)
        uow.audit("consent.recorded", f"consent:{row.id}", {...})

``now`` is read once, after the transaction has begun (on SQLite, under the write lock), so
every decision and audit entry of the unit holds at one instant; ``actor`` and
``policy_version`` go into every audit entry without being repeated at each call. The
entries are written when the unit commits (core.audit), and dropped with it on a rollback;
the sequencer puts them in the Merkle log a moment later (core.auditlog).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core import audit, events
from core.keys import Identity


def actor_of(who: Identity | str) -> str:
    """An identity's audit name (``key:<id>``), or a system actor's (``system:jobs``)."""
    return who if isinstance(who, str) else who.actor


@dataclass(frozen=True, slots=True)
class UnitOfWork:
    session: Session
    now: datetime
    actor: str
    policy_version: str
    # The API key acting (None for a system actor such as ``system:jobs``): rows that
    # record who made them (``recorded_by``, ``added_by``) name its key id.
    who: Identity | None = None
    # False for a read-only unit (Runtime.read): it commits nothing, so it takes no audit
    # entry; a read of patient data that must be audited opens a write unit.
    writable: bool = True
    # The keyed pseudonym of a number (core.pseudonyms), for audit entries that name the
    # patients an access showed; loaded on first use.
    pseudonym: Callable[[str], str] | None = None

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def audit(
        self, kind: str, subject: str, payload: dict[str, Any] | None = None,
        phones: Iterable[str] = (),
    ) -> None:
        """Queue an audit entry of this unit (written at commit). ``phones``: the patients'
        numbers (E.164) an access showed, named in the entry by pseudonym only."""
        if not self.writable:
            raise RuntimeError("a read-only unit of work cannot write an audit entry")
        names: list[str] = []
        phones = [p for p in phones if p]
        if phones:
            if self.pseudonym is None:
                raise RuntimeError("this unit of work has no pseudonym key")
            names = [self.pseudonym(p) for p in phones]
        audit.record(
            self.session, at=self.now, actor=self.actor, kind=kind, subject=subject,
            policy_version=self.policy_version, payload=payload, pseudonyms=names,
        )

    def emit(self, type_: str, data: dict[str, Any], phone: str | None = None) -> None:
        """Queue an event of this unit (core.events: written at commit, dropped on a
        rollback). ``phone``: the number it is about (E.164), whose events are delivered in
        order; it goes into the order key by pseudonym only (``data`` holds it only where
        API.md says so)."""
        if not self.writable:
            raise RuntimeError("a read-only unit of work cannot emit an event")
        if phone:
            if self.pseudonym is None:
                raise RuntimeError("this unit of work has no pseudonym key")
            key = "n:" + self.pseudonym(phone)
        else:
            key = type_
        events.record(self.session, self.now, type_, data, key)

    def acting(self, who: Identity | str) -> UnitOfWork:
        """The same transaction and instant on behalf of another actor (a shared group
        commit serves several callers; a job acts as ``system:...``)."""
        return replace(self, actor=actor_of(who), who=None if isinstance(who, str) else who)

    @property
    def key_id(self) -> str:
        """The acting key's id, for the rows that record it."""
        if self.who is None:
            raise RuntimeError(f"{self.actor} is not an API key")
        return self.who.key_id
