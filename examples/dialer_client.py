#!/usr/bin/env python3
"""A reference dialer client for callgate: the loop a dialer vendor copies.

    lease a few calls
      for each task:
        too close to lease_expires_at?       -> release (undialled: does not count)
        POST /v1/queue/{call_id}/dial        -> 409: do not dial (release if still held)
        dial (your PBX / dialer goes here):
          start the recorder only if task["recording"] == "allowed"
          verify task["identity_identifiers"] distinct identifiers before any health
          information is disclosed
        POST /v1/queue/{call_id}/outcome     with the agent's identification, and what
                                             happened: recorded, phi_disclosed,
                                             identity_verified_with
    nothing leased? sleep, poll again

Only ``httpx`` is needed. Configuration comes from flags or the environment::

    export CALLGATE_URL=http://127.0.0.1:8000
    export CALLGATE_KEY=cg_...              # a key with the dialer role
    python examples/dialer_client.py --dialer-id acme-1 --agent-id A-17 --agent-name Dana
    python examples/dialer_client.py --dry-run --iterations 1    # lease, check, release all

Failure handling, and why it is safe:

* 5xx answers and connection errors are retried with exponential backoff and jitter.
* ``dial`` checks and ``release`` are idempotent: retried freely.
* ``outcome`` is resent after a network error; if the first attempt had in fact landed, the
  resend gets ``409 LEASE_NOT_HELD`` (the lease is no longer held), which this client reads as
  "already recorded, or lost": never as a reason to dial again.
* ``lease`` is not idempotent: it is retried only when the request cannot have reached the
  server (connect errors) or the server said 503. A lease answer lost in transit leaves calls
  leased to nobody until ``lease_expires_at``; they then count as attempts (they may have been
  dialled, as far as callgate knows), so the caps stay safe. Keep ``lease_seconds`` short.
* A call is never dialled within ``--safety-seconds`` of its ``lease_expires_at``, so the
  outcome can be reported while the lease is still held; such a call is released instead.
  The lease deadline is the server's clock: keep the dialer's clock NTP-synchronised (the
  safety margin covers small skew).
* Logs name call ids, never phone numbers (minimum necessary).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

log = logging.getLogger("dialer_client")

RESULTS = ("connected", "voicemail", "no_answer", "busy", "failed", "wrong_number", "opted_out")
# What an agent may verify a caller's identity with (API.md "Recording and identity
# verification"), in the order this desktop asks for them.
IDENTIFIERS = ("date_of_birth", "address", "last_service_date", "member_id", "invoice_number")


@dataclass
class Config:
    base_url: str
    api_key: str
    dialer_id: str
    agent_id: str
    agent_name: str
    ivr_name: str = "automated line"  # agent_name reported for prerecorded-voice calls
    batch: int = 5  # calls per lease request (1-100)
    lease_seconds: int = 120  # 15-900; short is safer (see the module docstring)
    safety_seconds: float = 20.0  # never dial this close to lease_expires_at
    expected_call_seconds: float = 60.0  # a call started later than this before expiry waits
    idle_seconds: float = 5.0  # sleep when nothing was leased
    max_retries: int = 5
    backoff_seconds: float = 0.5  # first retry delay; doubles, with jitter, up to 30 s
    timeout_seconds: float = 10.0
    dry_run: bool = False
    iterations: int | None = None  # lease polls before returning; None: forever


@dataclass
class CallResult:
    """What the dialer observed; ``result`` is one of RESULTS. The last three are reported
    as they happened: callgate flags a recording the task forbade (RECORDING_WITHOUT_CONSENT)
    and a disclosure before enough identifiers were verified (IDENTITY_NOT_VERIFIED)."""

    result: str
    started_at: datetime
    ended_at: datetime
    recorded: bool = False
    phi_disclosed: bool = False
    identity_verified_with: list[str] = field(default_factory=list)


# --- the agent desktop's two rules on the call itself ------------------------------------------


def may_record(task: dict[str, Any]) -> bool:
    """Start the recorder only when the task says so: a written consent covering this call
    also consents to recording (``recording: "allowed"``). Anything else, including a task
    from a server that does not send the field: do not record."""
    return task.get("recording") == "allowed"


def may_disclose(task: dict[str, Any], verified: list[str]) -> bool:
    """Health information only after the caller confirmed ``identity_identifiers`` distinct
    identifiers (date of birth, address, ...; 45 CFR 164.514(h)). A desktop greys out the
    results panel until this is true."""
    return len(set(verified) & set(IDENTIFIERS)) >= int(task.get("identity_identifiers", 0))


def on_the_call(task: dict[str, Any], result: str, *, confirmed: int | None = None
                ) -> dict[str, Any]:
    """What an agent desktop reports about a call it handled by the rules above: recorded
    only if allowed; on a connected agent call, identifiers asked for in turn (``confirmed``:
    how many the caller got right; default all that are needed), health information
    disclosed only once enough were verified."""
    recorded = may_record(task) and result == "connected"
    if result != "connected" or task.get("channel") == "prerecorded_voice":
        return {"recorded": recorded, "phi_disclosed": False, "identity_verified_with": []}
    need = int(task.get("identity_identifiers", 0))
    verified = list(IDENTIFIERS[: need if confirmed is None else min(confirmed, need)])
    return {"recorded": recorded, "phi_disclosed": may_disclose(task, verified),
            "identity_verified_with": verified}


Dial = Callable[[dict[str, Any]], CallResult]


@dataclass
class Stats:
    counts: Counter[str] = field(default_factory=Counter)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class Callgate:
    """A thin HTTP client with retries. ``http`` may be any ``httpx.Client`` (tests pass one
    bound to an in-process app)."""

    def __init__(self, cfg: Config, http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self.sleep = sleep
        self.http = http or httpx.Client(base_url=cfg.base_url, timeout=cfg.timeout_seconds)
        self.headers = {"Authorization": f"Bearer {cfg.api_key}"}

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, body: dict[str, Any], *, retry_after_send: bool = True
             ) -> tuple[httpx.Response, int]:
        """POST with retries; returns the final response and how many tries it took.
        ``retry_after_send=False``: retry only errors that prove the request was not
        processed (connect errors, 503)."""
        delay = self.cfg.backoff_seconds
        for attempt in range(1, self.cfg.max_retries + 2):
            try:
                r = self.http.post(path, json=body, headers=self.headers)
                if r.status_code >= 500 and (retry_after_send or r.status_code == 503):
                    raise RetryableStatus(r)
                return r, attempt
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                    RetryableStatus) as exc:
                last: Exception = exc
            except httpx.TransportError as exc:  # sent, answer lost (read error / timeout)
                if not retry_after_send:
                    raise
                last = exc
            if attempt > self.cfg.max_retries:
                break
            log.warning("POST %s failed (%s); retry %d in %.1fs", _route(path),
                        type(last).__name__, attempt, delay)
            self.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 30.0)
        if isinstance(last, RetryableStatus):
            return last.response, attempt
        raise last


def simulated_dial(task: dict[str, Any]) -> CallResult:
    """Stands in for the real dialer: replace with your PBX call."""
    started = datetime.now(UTC)
    result = random.choices(RESULTS, (45, 20, 20, 8, 2, 2, 3))[0]
    seconds = {"connected": 45, "voicemail": 25, "no_answer": 25}.get(result, 5)
    if task.get("max_duration_seconds"):
        seconds = min(seconds, int(task["max_duration_seconds"]) - 5)
    return CallResult(result, started, started + timedelta(seconds=seconds),
                      **on_the_call(task, result))


class DialerLoop:
    def __init__(self, cfg: Config, api: Callgate, dial: Dial = simulated_dial,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg, self.api, self.dial, self.now, self.sleep = cfg, api, dial, now, sleep
        self.stats = Stats()

    def run(self) -> Stats:
        n = 0
        while self.cfg.iterations is None or n < self.cfg.iterations:
            n += 1
            tasks = self.lease()
            if not tasks:
                self.sleep(self.cfg.idle_seconds)
                continue
            for task in tasks:
                self.handle(task)
        return self.stats

    def lease(self) -> list[dict[str, Any]]:
        body = {"dialer_id": self.cfg.dialer_id, "limit": self.cfg.batch,
                "lease_seconds": self.cfg.lease_seconds,
                # Calls only: texts go to the SMS gateway (examples/sms_gateway.py).
                "channels": ["autodialed_voice", "prerecorded_voice"]}
        try:
            r, _ = self.api.post("/v1/queue/lease", body, retry_after_send=False)
        except httpx.TransportError as exc:
            # The answer may be lost with calls leased to us: they expire and count as
            # attempts, which keeps the caps safe. Just poll again.
            log.warning("lease answer lost (%s); polling again", type(exc).__name__)
            self.stats.counts["lease lost"] += 1
            return []
        if r.status_code != 200:
            log.error("lease refused: %s %s", r.status_code, _code(r))
            self.stats.counts["lease errors"] += 1
            return []
        tasks: list[dict[str, Any]] = r.json()["tasks"]
        self.stats.counts["leased"] += len(tasks)
        return tasks

    def handle(self, task: dict[str, Any]) -> None:
        call_id, lease_id = task["call_id"], task["lease_id"]
        expires = _parse(task["lease_expires_at"])
        margin = timedelta(seconds=self.cfg.safety_seconds + self.cfg.expected_call_seconds)
        if self.now() + margin > expires:
            # Too late to dial and still report inside the lease: give it back undialled.
            self.release(task, "lease ends too soon")
            return
        r, _ = self.api.post(f"/v1/queue/{call_id}/dial", {"lease_id": lease_id})
        if r.status_code != 200:
            code = _code(r)
            log.info("call %s: dial check said %s; not dialling", call_id, code)
            self.stats.counts[f"dial check {code}"] += 1
            if code != "LEASE_NOT_HELD" and r.status_code == 409:
                self.release(task, code)  # e.g. the window closes: still ours, hand it back
            return
        if self.cfg.dry_run:
            log.info("call %s: would dial now (%s, %s); dry run: releasing", call_id,
                     task["purpose"], task["channel"])
            self.release(task, "dry run")
            return
        if self.now() > expires - timedelta(seconds=self.cfg.safety_seconds):
            self.release(task, "lease ends too soon")  # the dial check itself was slow
            return
        outcome = self.dial(task)
        self.report(task, outcome)

    def report(self, task: dict[str, Any], outcome: CallResult) -> None:
        ivr = task["channel"] == "prerecorded_voice"
        body = {
            "lease_id": task["lease_id"],
            # Every call carries the agent's identity and the callback number disclosed; a
            # prerecorded call reports agent_id "ivr".
            "agent_id": "ivr" if ivr else self.cfg.agent_id,
            "agent_name": self.cfg.ivr_name if ivr else self.cfg.agent_name,
            "disclosed_callback_number": task["callback_number"],
            "started_at": _iso(outcome.started_at),
            "ended_at": _iso(outcome.ended_at),
            "result": outcome.result,
            # What happened on the call itself, as it happened (never "cleaned up": a
            # recording the task forbade is reported, and flagged for review).
            "recorded": outcome.recorded,
            "phi_disclosed": outcome.phi_disclosed,
            "identity_verified_with": outcome.identity_verified_with,
        }
        call_id = task["call_id"]
        try:
            r, tries = self.api.post(f"/v1/queue/{call_id}/outcome", body)
        except httpx.TransportError as exc:
            log.error("call %s: outcome not delivered (%s); the lease will expire and the "
                      "attempt counts", call_id, type(exc).__name__)
            self.stats.counts["outcome undelivered"] += 1
            return
        if r.status_code == 200:
            self.stats.counts["reported"] += 1
            self.stats.counts[f"result {outcome.result}"] += 1
            for flag in r.json().get("flags", []):
                log.warning("call %s: flagged %s for compliance review", call_id, flag)
                self.stats.counts[f"flagged {flag}"] += 1
        elif r.status_code == 409 and tries > 1:
            # An earlier try landed (or the lease was lost meanwhile): nothing more to do.
            self.stats.counts["reported (confirmed by 409 on resend)"] += 1
        elif r.status_code == 409:
            log.warning("call %s: outcome refused, lease no longer held", call_id)
            self.stats.counts["outcome lease lost"] += 1
        else:
            # 422 AGENT_ID_MISSING / CALLBACK_MISMATCH: a configuration error, not a call
            # problem. The lease stays held: fix the body and send again before it expires.
            log.error("call %s: outcome rejected: %s", call_id, _code(r))
            self.stats.counts[f"outcome rejected {_code(r)}"] += 1

    def release(self, task: dict[str, Any], why: str) -> None:
        r, _ = self.api.post(f"/v1/queue/{task['call_id']}/release",
                             {"lease_id": task["lease_id"]})
        if r.status_code == 200:
            self.stats.counts["released"] += 1
            log.info("call %s: released undialled (%s)", task["call_id"], why)
        else:  # 409: expired or withdrawn meanwhile; nothing is held
            self.stats.counts["release: not held"] += 1


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _code(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP_{r.status_code}"


def _route(path: str) -> str:
    """The path without ids, for logs."""
    parts = path.split("/")
    return "/".join("{call_id}" if len(p) == 36 else p for p in parts)


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", default=os.environ.get("CALLGATE_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("CALLGATE_KEY"),
                   help="a dialer-role key (default: $CALLGATE_KEY)")
    p.add_argument("--dialer-id", default=os.environ.get("DIALER_ID", "dialer-1"))
    p.add_argument("--agent-id", default=os.environ.get("AGENT_ID"), required=False)
    p.add_argument("--agent-name", default=os.environ.get("AGENT_NAME"), required=False)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--lease-seconds", type=int, default=120)
    p.add_argument("--safety-seconds", type=float, default=20.0)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--dry-run", action="store_true",
                   help="lease and dial-check, then release every call undialled")
    a = p.parse_args(argv)
    if not a.key:
        p.error("an API key is required: --key or CALLGATE_KEY")
    if not a.dry_run and not (a.agent_id and a.agent_name):
        p.error("--agent-id and --agent-name are required (every outcome identifies the agent)")
    return Config(base_url=a.url, api_key=a.key, dialer_id=a.dialer_id,
                  agent_id=a.agent_id or "dry-run", agent_name=a.agent_name or "dry-run",
                  batch=a.batch, lease_seconds=a.lease_seconds, safety_seconds=a.safety_seconds,
                  dry_run=a.dry_run, iterations=a.iterations)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = parse_args(argv)
    api = Callgate(cfg)
    try:
        stats = DialerLoop(cfg, api).run()
    except KeyboardInterrupt:
        return 130
    finally:
        api.close()
    for key, n in sorted(stats.counts.items()):
        print(f"{key}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
