"""What a running callgate holds: its database, policy, clock and settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from config.clock import Clock, SystemClock
from config.policy import Policy, load_policy
from config.settings import Settings, get_settings
from core.db import Database

log = logging.getLogger("callgate")


@dataclass
class Runtime:
    db: Database
    policy: Policy
    clock: Clock
    settings: Settings
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def policy_version(self) -> str:
        return self.policy.policy_version


def build_runtime(
    settings: Settings | None = None,
    clock: Clock | None = None,
    policy: Policy | None = None,
    db: Database | None = None,
) -> Runtime:
    """Load the policy (raises PolicyError naming the key) and open the database."""
    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_file)
    for warning in policy.warnings():
        log.warning("POLICY WARNING: %s", warning)
    return Runtime(
        db=db or Database(settings.database_url),
        policy=policy,
        clock=clock or SystemClock(),
        settings=settings,
    )
