"""The reference SMS gateway (examples/sms_gateway.py), loaded by path, against a real uvicorn
server on a fake clock: a STOP forwarded before the poll revokes at once; the confirmation is
the first text leased; campaign texts go out rendered, one segment each; a repeated STOP
changes nothing; a HELP gets its answer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from sqlalchemy import select

from config.clock import FakeClock
from core.models import Call, SmsReply
from core.runtime import Runtime
from tests.e2e.test_dialer_client import server  # noqa: F401 -- the served app (fixture)
from texts.rules import fits_one_segment

ROOT = Path(__file__).resolve().parents[2]
CALLBACK = "+13145550199"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "callgate_example_sms_gateway", ROOT / "examples" / "sms_gateway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gw_mod = _load()


def _seed(url: str, admin: dict[str, str], phones: list[str]) -> str:
    with httpx.Client(base_url=url, headers=admin) as c:
        for i, phone in enumerate(phones):
            assert c.post("/v1/consents", json={
                "patient_ref": f"MRN-{i}", "phone": phone, "channels": ["sms"],
                "purposes": ["*"], "method": "written", "obtained_at": "2026-11-01T15:00:00Z",
                "evidence_ref": f"scan://consents/{i}.pdf"}).status_code == 201
        tpl = c.post("/v1/templates", json={
            "name": "reminder", "channel": "sms", "purpose": "appointment_reminder",
            "text": "{provider_name}: see you {appointment_date} at {appointment_time}. "
                    "Call {callback_number} to change. Reply STOP to opt out."})
        assert tpl.status_code == 201, tpl.text
        camp = c.post("/v1/campaigns", json={
            "name": "reminders", "purpose": "appointment_reminder", "channel": "sms",
            "provider_name": "Mercy Heart Clinic", "callback_number": CALLBACK,
            "template_id": tpl.json()["id"]})
        assert camp.status_code == 201, camp.text
        rows = [{"external_id": f"e-{i}", "phone": p, "appointment_at": "2026-11-27T15:00:00Z"}
                for i, p in enumerate(phones)]
        r = c.post(f"/v1/campaigns/{camp.json()['id']}/calls", json=rows)
        assert r.json()["accepted"] == len(phones), r.text
        return str(camp.json()["id"])


def test_gateway_loop(server: str, keys: dict[str, dict[str, str]], runtime: Runtime,  # noqa: F811
                      clock: FakeClock) -> None:
    phones = [f"+1314555{200 + i:04d}" for i in range(3)]
    cid = _seed(server, keys["admin"], phones)
    sent: list[tuple[str, str]] = []

    def send(phone: str, text: str) -> bool:
        sent.append((phone, text))
        return True

    key = keys["dialer"]["Authorization"].removeprefix("Bearer ")
    gw = gw_mod.SmsGateway(gw_mod.Config(server, key, "sms-1", batch=10), send)
    out = gw.forward("SM-1", phones[0], CALLBACK, "Stop", clock.now())
    assert (out["action"], out["withdrawn_calls"]) == ("revoked", 1)
    assert gw.forward("SM-1", phones[0], CALLBACK, "Stop", clock.now())["duplicate"] is True
    assert gw.forward("SM-2", phones[1], CALLBACK, "help", clock.now())["action"] == "help"
    assert gw.poll_once() == 4
    assert gw.poll_once() == 0
    kinds = [t for _, t in sent]
    assert sent[0][0] == phones[0] and "opted out" in kinds[0]
    assert sent[1][0] == phones[1] and "Reply STOP" in kinds[1] and "(314) 555-0199" in kinds[1]
    assert sorted(p for p, _ in sent[2:]) == phones[1:]
    for _, text in sent:
        assert fits_one_segment(text)
    assert "Fri, Nov 27 at 9:00 AM" in sent[2][1]
    stats: dict[str, Any] = dict(gw.stats)
    assert stats["text_sent"] == 2 and stats["sms_confirmation_sent"] == 1
    with runtime.db.read() as s:
        statuses = sorted(s.scalars(select(Call.status).where(Call.campaign_id == cid)))
        assert statuses == ["completed", "completed", "withdrawn"]
        assert sorted(s.scalars(select(SmsReply.status))) == ["sent", "sent"]
