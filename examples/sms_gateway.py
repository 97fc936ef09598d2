#!/usr/bin/env python3
"""A reference SMS gateway for callgate: the loop an SMS provider integration copies.

    forward every inbound text at once:  POST /v1/sms/inbound
        (STOP, QUIT, END, REVOKE, OPT OUT, CANCEL, UNSUBSCRIBE revoke consent at once and queue
        exactly one confirmation; HELP queues a help text; other wording may be held for review)
    lease texts:                         POST /v1/queue/lease {"channels": ["sms"]}
      for each task (replies to a patient's own text come first):
        kind "sms_confirmation" / "sms_help":
            send task["text"] exactly; POST /v1/sms/replies/{call_id}/outcome  sent | failed
        kind "call" (a campaign's text):
            POST /v1/queue/{call_id}/dial     -> 409: do not send (consent revoked since)
            send task["text"] exactly (one segment, rendered by callgate; never add to it)
            POST /v1/queue/{call_id}/outcome  with the gateway as agent: connected | failed
    nothing leased? sleep, poll again

Only ``httpx`` is needed::

    export CALLGATE_URL=http://127.0.0.1:8000
    export CALLGATE_KEY=cg_...              # a key with the dialer role
    python examples/sms_gateway.py --gateway-id sms-1 --iterations 1

The provider's own API goes in ``send`` (here: it prints the text's length, never the number).
Logs name task ids, never phone numbers or message bodies (minimum necessary).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger("sms_gateway")

Send = Callable[[str, str], bool]  # (E.164 number, text) -> delivered to the carrier?


@dataclass
class Config:
    base_url: str
    api_key: str
    gateway_id: str = "sms-gateway-1"
    batch: int = 20
    lease_seconds: int = 60
    idle_seconds: float = 2.0


class SmsGateway:
    """Forward inbound texts to callgate; lease, send and report outbound ones."""

    def __init__(self, cfg: Config, send: Send, http: httpx.Client | None = None) -> None:
        self.cfg, self.send = cfg, send
        self.http = http or httpx.Client(
            base_url=cfg.base_url, timeout=30,
            headers={"Authorization": f"Bearer {cfg.api_key}"})
        self.stats: Counter[str] = Counter()

    # -- inbound ---------------------------------------------------------------------------

    def forward(self, message_id: str, from_: str, to: str, body: str,
                received_at: datetime | None = None) -> dict[str, Any]:
        """An inbound text as the provider delivered it (at once: a STOP takes effect when
        callgate has it). Safe to resend: the same ``message_id`` is decided once."""
        r = self.http.post("/v1/sms/inbound", json={
            "message_id": message_id, "from": from_, "to": to, "body": body,
            "received_at": (received_at or datetime.now(UTC)).isoformat()})
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        self.stats[f"inbound_{out['action']}"] += 1
        log.info("inbound %s: %s", message_id, out["action"])
        return out

    # -- outbound --------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Lease texts and handle each; returns how many were leased."""
        r = self.http.post("/v1/queue/lease", json={
            "dialer_id": self.cfg.gateway_id, "limit": self.cfg.batch,
            "lease_seconds": self.cfg.lease_seconds, "channels": ["sms"]})
        r.raise_for_status()
        tasks: list[dict[str, Any]] = r.json()["tasks"]
        for task in tasks:
            if task["kind"] == "call":
                self._campaign_text(task)
            else:
                self._reply(task)
        return len(tasks)

    def _reply(self, task: dict[str, Any]) -> None:
        ok = self.send(task["phone"], task["text"])
        r = self.http.post(f"/v1/sms/replies/{task['call_id']}/outcome", json={
            "lease_id": task["lease_id"], "result": "sent" if ok else "failed",
            "sent_at": datetime.now(UTC).isoformat()})
        # 409: its five minutes ran out (or another gateway reported it): nothing to do.
        self.stats[f"{task['kind']}_{'sent' if ok and r.status_code == 200 else 'not_sent'}"] += 1
        log.info("%s %s: %s", task["kind"], task["call_id"], r.status_code)

    def _campaign_text(self, task: dict[str, Any]) -> None:
        r = self.http.post(f"/v1/queue/{task['call_id']}/dial",
                           json={"lease_id": task["lease_id"]})
        if r.status_code == 409:
            self.stats["withheld"] += 1  # revoked (a STOP, say) since the lease
            log.info("text %s withheld: %s", task["call_id"], r.json()["error"]["code"])
            return
        r.raise_for_status()
        started = datetime.now(UTC)
        ok = self.send(task["phone"], task["text"])
        r = self.http.post(f"/v1/queue/{task['call_id']}/outcome", json={
            "lease_id": task["lease_id"], "agent_id": self.cfg.gateway_id,
            "agent_name": "SMS gateway",
            "disclosed_callback_number": task["callback_number"],
            "started_at": started.isoformat(), "ended_at": datetime.now(UTC).isoformat(),
            "result": "connected" if ok else "failed"})
        self.stats["text_sent" if ok and r.status_code == 200 else "text_not_sent"] += 1
        log.info("text %s: %s", task["call_id"], r.status_code)

    def run(self, iterations: int | None = None) -> Counter[str]:
        n = 0
        while iterations is None or n < iterations:
            n += 1
            if not self.poll_once():
                time.sleep(self.cfg.idle_seconds)
        return self.stats


def _print_send(phone: str, text: str) -> bool:
    print(f"send a text of {len(text)} characters")  # your provider's API goes here
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("CALLGATE_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("CALLGATE_KEY", ""))
    p.add_argument("--gateway-id", default="sms-gateway-1")
    p.add_argument("--iterations", type=int, default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    gw = SmsGateway(Config(a.url, a.key, a.gateway_id), _print_send)
    print(dict(gw.run(a.iterations)))


if __name__ == "__main__":
    main()
