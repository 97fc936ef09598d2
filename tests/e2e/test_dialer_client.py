"""The reference dialer client (examples/dialer_client.py), loaded by path, runs its loop against
a real uvicorn server on a fake clock: calls complete with agent identification, late leases are
released, a lost outcome answer is resent without a second record, 5xx is retried, a revocation
between lease and dial stops the call, and a dry run leaves nothing counted."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from config.clock import FakeClock
from core.models import Attempt, Call
from core.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
CALLBACK = "+13145550199"


def _load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "callgate_example_dialer_client", ROOT / "examples" / "dialer_client.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


dc = _load_client()


@pytest.fixture
def server(runtime: Runtime) -> Iterator[str]:
    import uvicorn

    from api.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(
        create_app(runtime, migrate=False), host="127.0.0.1", port=port, log_level="warning",
        log_config=None,
    ))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _seed(url: str, admin: dict[str, str], n_agent: int = 4, n_ivr: int = 2) -> list[str]:
    """Written consents, an agent campaign and a prerecorded one, one call per number."""
    with httpx.Client(base_url=url, headers=admin) as c:
        phones = [f"+1314555{100 + i:04d}" for i in range(n_agent + n_ivr)]
        for i, phone in enumerate(phones):
            r = c.post("/v1/consents", json={
                "patient_ref": f"MRN-{i}", "phone": phone,
                "channels": ["autodialed_voice", "prerecorded_voice"], "purposes": ["*"],
                "method": "written", "obtained_at": "2026-11-01T15:00:00Z",
                "evidence_ref": f"scan://consents/{i}.pdf",
            })
            assert r.status_code == 201, r.text
        ids = []
        for channel, part in (("autodialed_voice", phones[:n_agent]),
                              ("prerecorded_voice", phones[n_agent:])):
            r = c.post("/v1/campaigns", json={
                "name": channel, "purpose": "discharge_followup", "channel": channel,
                "provider_name": "Mercy", "callback_number": CALLBACK,
            })
            assert r.status_code == 201, r.text
            rows = [{"external_id": f"{channel}-{i}", "phone": p} for i, p in enumerate(part)]
            r = c.post(f"/v1/campaigns/{r.json()['id']}/calls", json=rows)
            assert r.status_code == 200 and r.json()["accepted"] == len(part), r.text
            ids += [res["call_id"] for res in r.json()["results"]]
        return ids


def _config(url: str, key: str, **kw: Any) -> Any:
    return dc.Config(base_url=url, api_key=key, dialer_id="acme-1", agent_id="A-17",
                     agent_name="Dana", batch=3, lease_seconds=120, safety_seconds=20,
                     expected_call_seconds=30, idle_seconds=0, backoff_seconds=0.01,
                     **kw)


def _connected(clock: FakeClock) -> Any:
    def dial(task: dict[str, Any]) -> Any:
        start = clock.now()
        return dc.CallResult("connected", start, start + timedelta(seconds=40))

    return dial


def _loop(cfg: Any, clock: FakeClock, http: httpx.Client | None = None, **kw: Any) -> Any:
    api = dc.Callgate(cfg, http=http, sleep=lambda _s: None)
    return dc.DialerLoop(cfg, api, dial=kw.pop("dial", _connected(clock)),
                         now=kw.pop("now", clock.now), sleep=lambda _s: None, **kw)


def _attempts(runtime: Runtime) -> list[Attempt]:
    with runtime.db.read() as s:
        return list(s.scalars(select(Attempt)))


def _statuses(runtime: Runtime) -> dict[str, str]:
    with runtime.db.read() as s:
        return {cid: status for cid, status in s.execute(select(Call.id, Call.status))}


def test_loop_completes_calls_with_agent_identification(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    ids = _seed(server, keys["admin"])
    cfg = _config(server, _key(keys["dialer"]), iterations=4)
    stats = _loop(cfg, clock).run()
    assert stats["reported"] == len(ids)
    assert set(_statuses(runtime).values()) == {"completed"}
    reported = [a for a in _attempts(runtime) if a.state == "reported"]
    assert len(reported) == len(ids)
    assert sorted(a.agent_id or "" for a in reported) == ["A-17"] * 4 + ["ivr"] * 2
    assert all(a.agent_name and a.disclosed_callback_number == CALLBACK for a in reported)
    assert all(a.dialer_id == "acme-1" and not a.flags for a in reported)


def test_lease_too_close_to_expiry_is_released_not_dialled(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    ids = _seed(server, keys["admin"], n_agent=3, n_ivr=0)
    cfg = _config(server, _key(keys["dialer"]), iterations=1)
    dialled: list[str] = []

    def dial(task: dict[str, Any]) -> Any:  # pragma: no cover - must not be reached
        dialled.append(task["call_id"])
        raise AssertionError("dialled a call whose lease was about to end")

    # The dialer's clock reads 110 s after the lease: 10 s left, inside the safety margin.
    loop = _loop(cfg, clock, dial=dial, now=lambda: clock.now() + timedelta(seconds=110))
    stats = loop.run()
    assert stats["leased"] == 3 and stats["released"] == 3 and not dialled
    assert set(_statuses(runtime).values()) == {"queued"}
    assert not any(a.counted for a in _attempts(runtime))  # released: not an attempt
    assert len(ids) == 3


def test_outcome_resent_after_a_lost_answer_is_recorded_once(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    ids = _seed(server, keys["admin"], n_agent=2, n_ivr=0)

    class LoseFirstOutcomeAnswer(httpx.HTTPTransport):
        lost = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.url.path.endswith("/outcome") and not self.lost:
                response.read()
                response.close()
                self.lost += 1  # the server recorded it; the answer never arrives
                raise httpx.ReadError("connection reset by peer", request=request)
            return response

    transport = LoseFirstOutcomeAnswer()
    http = httpx.Client(base_url=server, transport=transport)
    cfg = _config(server, _key(keys["dialer"]), iterations=1)
    stats = _loop(cfg, clock, http=http).run()
    http.close()
    assert transport.lost == 1
    assert stats["reported (confirmed by 409 on resend)"] == 1
    assert stats["reported"] == 1
    assert set(_statuses(runtime).values()) == {"completed"}
    reported = [a for a in _attempts(runtime) if a.state == "reported"]
    assert len(reported) == len(ids) == 2


def test_5xx_and_connection_errors_are_retried(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    _seed(server, keys["admin"], n_agent=2, n_ivr=0)

    class Flaky(httpx.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            self.failures = {"/v1/queue/lease": 2, "dial": 1}

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            path = request.url.path
            key = path if path == "/v1/queue/lease" else path.rsplit("/", 1)[-1]
            if self.failures.get(key):
                self.failures[key] -= 1
                if key == "dial":
                    raise httpx.ConnectError("connection refused", request=request)
                return httpx.Response(503, json={"error": {"code": "UNAVAILABLE",
                                                           "message": "try again"}})
            return super().handle_request(request)

    http = httpx.Client(base_url=server, transport=Flaky())
    cfg = _config(server, _key(keys["dialer"]), iterations=1)
    stats = _loop(cfg, clock, http=http).run()
    http.close()
    assert stats["reported"] == 2
    assert set(_statuses(runtime).values()) == {"completed"}


def test_revocation_between_lease_and_dial_stops_the_call(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    _seed(server, keys["admin"], n_agent=2, n_ivr=0)
    cfg = _config(server, _key(keys["dialer"]), iterations=1)
    loop = _loop(cfg, clock)
    lease = loop.lease

    def lease_then_patient_texts_stop() -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = lease()
        r = httpx.post(f"{server}/v1/consents/revocations", headers=keys["admin"],
                       json={"phone": tasks[0]["phone"], "source": "sms_stop"})
        assert r.status_code == 201 and r.json()["withdrawn_calls"] == 1
        return tasks

    loop.lease = lease_then_patient_texts_stop
    stats = loop.run()
    assert stats["dial check CONSENT_REVOKED"] == 1
    assert stats["reported"] == 1
    assert sorted(_statuses(runtime).values()) == ["completed", "withdrawn"]


def test_dry_run_releases_everything(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    ids = _seed(server, keys["admin"], n_agent=3, n_ivr=0)
    cfg = _config(server, _key(keys["dialer"]), iterations=1, dry_run=True)
    stats = _loop(cfg, clock).run()
    assert stats["leased"] == stats["released"] == len(ids)
    assert stats["reported"] == 0
    assert set(_statuses(runtime).values()) == {"queued"}
    assert not any(a.counted for a in _attempts(runtime))


def test_cli_requires_agent_identification() -> None:
    with pytest.raises(SystemExit):
        dc.parse_args(["--key", "cg_x"])
    cfg = dc.parse_args(["--key", "cg_x", "--agent-id", "A-1", "--agent-name", "Dana"])
    assert cfg.agent_id == "A-1" and not cfg.dry_run
    assert dc.parse_args(["--key", "cg_x", "--dry-run"]).dry_run


def test_the_agent_desktop_records_and_discloses_by_the_rules(
    server: str, runtime: Runtime, clock: FakeClock, keys: dict[str, dict[str, str]]
) -> None:
    """The reference desktop records only a call whose task allows it and verifies the
    task's identifiers before disclosing: nothing is flagged. A caller who confirms only one
    identifier hears no health information, and the outcome says so."""
    _seed(server, keys["admin"], n_agent=3, n_ivr=0)
    # One number's patient also consented to recording.
    with httpx.Client(base_url=server, headers=keys["admin"]) as c:
        r = c.post("/v1/consents", json={
            "patient_ref": "MRN-0", "phone": "+13145550100", "channels": ["autodialed_voice"],
            "purposes": ["*"], "method": "written", "obtained_at": "2026-11-02T15:00:00Z",
            "evidence_ref": "scan://consents/0b.pdf", "recording": True})
        assert r.status_code == 201, r.text
    seen: list[dict[str, Any]] = []

    def dial(task: dict[str, Any]) -> Any:
        seen.append(task)
        start = clock.now()
        confirmed = 1 if task["phone"] == "+13145550102" else None
        return dc.CallResult("connected", start, start + timedelta(seconds=40),
                             **dc.on_the_call(task, "connected", confirmed=confirmed))

    cfg = _config(server, _key(keys["dialer"]), iterations=2)
    stats = _loop(cfg, clock, dial=dial).run()
    assert stats["reported"] == 3
    assert {t["phone"]: t["recording"] for t in seen} == {
        "+13145550100": "allowed", "+13145550101": "forbidden", "+13145550102": "forbidden"}
    assert {t["identity_identifiers"] for t in seen} == {2}
    by_phone = {a.phone: a for a in _attempts(runtime)}
    assert by_phone["+13145550100"].recorded is True
    assert by_phone["+13145550101"].recorded is False
    assert by_phone["+13145550101"].phi_disclosed is True
    assert by_phone["+13145550101"].identity_verified_with == ["date_of_birth", "address"]
    assert by_phone["+13145550102"].phi_disclosed is False
    assert not any(a.flags for a in by_phone.values())
    assert not any(k.startswith("flagged") for k in stats.counts)
