"""Environment settings (``CALLGATE_*``), read once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # An empty variable (CALLGATE_POLICY_FILE=) means "not set", not the path ".".
    model_config = SettingsConfigDict(env_prefix="CALLGATE_", extra="ignore", env_ignore_empty=True)

    database_url: str = "sqlite:///./callgate.db"
    policy_file: Path | None = None
    # Request bodies above this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # A call list with more rows than this is refused with 413.
    max_list_rows: int = Field(default=200_000, ge=1)
    # Lists of at least this many rows have their rows parsed (phones, dates, zones) in a
    # helper process while this one decides and stores the rows parsed before: the phone
    # work runs on a second core. 0 turns the helper off (everything in this process).
    intake_parallel_min_rows: int = Field(default=20_000, ge=0)
    # Scheduled-job intervals, seconds.
    job_interval_seconds: float = Field(default=15.0, gt=0)
    retention_days: int = Field(default=6 * 366, ge=1)
    log_level: str = "INFO"
    # The compliance dashboard (/ui): automatic logoff after this much inactivity
    # (45 CFR 164.312(a)(2)(iii)), and after this long in any case.
    ui_idle_minutes: float = Field(default=15, gt=0)
    ui_max_hours: float = Field(default=8, gt=0)
    # The proxies (load balancers) whose X-Forwarded-For / X-Forwarded-Proto are believed:
    # comma-separated addresses or networks (CIDR), "*" for any. Handed to uvicorn by
    # ``callgate serve``; the client address it yields is the one sign-in throttling counts.
    trusted_proxies: str = Field(default="127.0.0.1", max_length=4096)
    # The service is reached over HTTPS (e.g. TLS ends at a load balancer that does not send
    # X-Forwarded-Proto): cookies are Secure and HSTS is sent whatever scheme a request shows.
    https: bool = False
    # Sign-in attempts per client address per minute on the dashboard's form (then 429).
    ui_login_attempts_per_minute: int = Field(default=10, ge=1)
    # The audit log (docs/audit.md). Committed entries are integrated into the Merkle tree
    # every audit_seal_seconds; while it grows, a signed checkpoint is made at most every
    # audit_checkpoint_seconds, stored in the database and written to audit_checkpoint_dir.
    audit_seal_seconds: float = Field(default=1.0, gt=0)
    # How often each served process checks what the log gained (core.auditverify).
    audit_verify_seconds: float = Field(default=10.0, gt=0)
    audit_checkpoint_seconds: float = Field(default=5.0, gt=0)
    audit_checkpoint_dir: Path = Path("callgate-checkpoints")
    # The Ed25519 signing key (created 0600 at first start when absent) and the secret of
    # the keyed pseudonyms that name patients' numbers in the log (default: beside the
    # signing key). Both live outside the database; keep copies elsewhere.
    audit_key_file: Path = Path("callgate-audit.key")
    audit_pseudonym_key_file: Path | None = None
    # The log's name in its checkpoints, unique to the deployment (no spaces or '+');
    # default: derived from the signing key.
    audit_origin: str | None = Field(default=None, pattern=r"^[^\s+]{1,200}$")
    # The overview's and GET /v1/audit/verify's incremental check reads at most this many
    # new entries per call (a background job keeps it caught up).
    audit_verify_budget: int = Field(default=200_000, ge=1000)
    # Webhooks and events (docs/integration.md). Private, loopback and link-local receivers
    # (and http://) are refused unless allowed (tests, a receiver inside the hospital's
    # network on purpose); cloud metadata addresses always are.
    webhooks_allow_private: bool = False
    # A failed delivery is tried again after base * 2^(n-1) seconds (with jitter), at most
    # max seconds apart, until it succeeds or is give_up_hours old (at least 24 h).
    webhooks_backoff_base_seconds: float = Field(default=2.0, gt=0)
    webhooks_backoff_max_seconds: float = Field(default=600.0, gt=0)
    webhooks_give_up_hours: float = Field(default=72.0, ge=24)
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # The delivery worker looks for new events at least this often (at once when this
    # process commits one).
    webhooks_poll_seconds: float = Field(default=0.5, gt=0)
    # Events (the feed, the webhooks' source) are kept this long once delivered everywhere.
    events_keep_days: float = Field(default=30, gt=0)

    # GET /metrics: an admin key, or this bearer token (for a Prometheus scraper, which then
    # holds no key that opens patient data). Unset: admin keys only.
    metrics_token: SecretStr | None = Field(default=None)
    # Idempotency-Key records are kept this long (API.md: at least 24 hours); a request
    # still "in progress" after idempotency_stale_seconds (its process died) may be re-run.
    idempotency_hours: float = Field(default=24, ge=24)
    idempotency_stale_seconds: float = Field(default=600, gt=0)

    # Tests only: this instance's clock deliberately this many seconds off the system's (on
    # PostgreSQL the database's clock still rules: core.dbclock). Never set in production.
    test_clock_offset_seconds: float = 0.0

    @property
    def pseudonym_key_path(self) -> Path:
        if self.audit_pseudonym_key_file is not None:
            return self.audit_pseudonym_key_file
        return self.audit_key_file.parent / "callgate-audit-pseudonym.key"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
