"""GET /metrics (issue 20, point 5): who may read it, what it counts (after commit only),
the database gauges, no patient data, and the workers' counters summed in multiprocess
mode."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from config.clock import FakeClock
from core.runtime import Runtime
from tests.conftest import T0
from tests.helpers import CALLBACK, campaign_body, consent_body, days

Keys = dict[str, dict[str, str]]
PHONE, NO_CONSENT = "+13145550520", "+13145550529"


def scrape(client: TestClient, keys: Keys) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers=keys["admin"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_who_may_read_metrics(client: TestClient, keys: Keys, runtime: Runtime) -> None:
    assert client.get("/metrics").status_code == 401
    for role in ("campaign_manager", "dialer", "compliance"):
        r = client.get("/metrics", headers=keys[role])
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert client.get("/metrics", headers=keys["admin"]).status_code == 200
    # The scrape token, when one is configured (and only then).
    bearer = {"Authorization": "Bearer scrape-secret-1"}
    assert client.get("/metrics", headers=bearer).status_code == 401
    runtime.settings.metrics_token = SecretStr("scrape-secret-1")
    assert client.get("/metrics", headers=bearer).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # The token opens nothing else.
    assert client.get("/v1/refusals", headers=bearer).status_code == 401


def test_counts_requests_leases_outcomes_refusals_and_gauges(
    client: TestClient, keys: Keys, clock: FakeClock
) -> None:
    mgr, dialer = keys["campaign_manager"], keys["dialer"]
    before = scrape(client, keys)
    assert client.post("/v1/consents", json=consent_body(T0 - days(5), PHONE),
                       headers=mgr).status_code == 201
    cid = client.post("/v1/campaigns", json=campaign_body(calling_window=None),
                      headers=mgr).json()["id"]
    rows = [{"external_id": "m-1", "phone": PHONE}, {"external_id": "m-2", "phone": NO_CONSENT}]
    # A dry run decides the same rows and keeps nothing: its refusal is not counted.
    dry = client.post(f"/v1/campaigns/{cid}/calls?dry_run=true", json=rows, headers=mgr)
    assert [x["status"] for x in dry.json()["results"]] == ["queued", "refused"]
    mid = scrape(client, keys)
    assert value(mid, "callgate_refusals_total", code="NO_CONSENT", stage="intake") == value(
        before, "callgate_refusals_total", code="NO_CONSENT", stage="intake")
    client.post(f"/v1/campaigns/{cid}/calls", json=rows, headers=mgr)
    queued = scrape(client, keys)
    assert value(queued, "callgate_queue_depth", state="queued_due") == 1
    assert value(queued, "callgate_queue_depth", state="leased") == 0
    [task] = client.post("/v1/queue/lease", json={"dialer_id": "d"}, headers=dialer).json()[
        "tasks"]
    leased = scrape(client, keys)
    assert value(leased, "callgate_queue_depth", state="leased") == 1
    out = client.post(f"/v1/queue/{task['call_id']}/outcome", headers=dialer, json={
        "lease_id": task["lease_id"], "agent_id": "A-1", "agent_name": "Dana",
        "disclosed_callback_number": CALLBACK, "result": "voicemail",
        "started_at": T0.isoformat(), "ended_at": (T0 + timedelta(seconds=20)).isoformat()})
    assert out.status_code == 200, out.text
    empty = client.post("/v1/queue/lease", json={"dialer_id": "d"}, headers=dialer)
    assert empty.json()["tasks"] == []
    clock.advance(timedelta(seconds=30))  # nothing integrates the audit log here
    after = scrape(client, keys)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("callgate_leased_tasks_total") == 1
    assert delta("callgate_lease_requests_total", result="tasks") == 1
    assert delta("callgate_lease_requests_total", result="empty") == 1
    assert delta("callgate_outcomes_total", result="voicemail") == 1
    assert delta("callgate_refusals_total", code="NO_CONSENT", stage="intake") == 1
    route = "/v1/queue/{call_id}/outcome"
    assert delta("callgate_http_requests_total", method="POST", route=route, status="200") == 1
    assert delta("callgate_http_request_duration_seconds_count", method="POST", route=route) == 1
    assert value(after, "callgate_queue_depth", state="leased") == 0
    assert value(after, "callgate_audit_integration_lag_seconds") >= 30
    # The webhook figures exist (filled when webhook deliveries land).
    assert ("callgate_webhook_delivery_failures_total", ()) in after
    assert ("callgate_webhook_delivery_lag_seconds", ()) in after


def test_no_patient_data_in_the_exposition(client: TestClient, keys: Keys) -> None:
    mgr = keys["campaign_manager"]
    client.post("/v1/consents", json=consent_body(T0 - days(5), PHONE), headers=mgr)
    client.get(f"/v1/dnc/{PHONE}", headers=mgr)
    client.get("/v1/consents", params={"phone": PHONE}, headers=mgr)
    client.request("BREW", f"/v1/dnc/{PHONE}", headers=mgr)  # a made-up method
    client.get(f"/no/such/{PHONE}")
    text = client.get("/metrics", headers=keys["admin"]).text
    assert "5550520" not in text and "MRN-" not in text and "BREW" not in text
    assert 'route="/v1/dnc/{phone}"' in text
    assert 'method="OTHER"' in text and 'route="(unmatched)"' in text


MULTI = textwrap.dedent("""
    import multiprocessing, os, sys
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]

    def worker(n):
        from core import metrics
        for _ in range(n):
            metrics.observe_request("GET", "/healthz", 200, 0.01)
        metrics.LEASED.inc(n)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(n,)) for n in (2, 5)]
        for p in procs: p.start()
        for p in procs: p.join()
        from core import metrics
        sys.stdout.write(metrics.render().decode())
""")


def test_workers_counters_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    script = tmp_path / "multi.py"
    script.write_text(MULTI)
    shared = tmp_path / "prom"
    shared.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(shared)], capture_output=True,
                          text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(proc.stdout) for s in f.samples}
    assert samples[("callgate_leased_tasks_total", ())] == 7
    key = ("callgate_http_requests_total",
           (("method", "GET"), ("route", "/healthz"), ("status", "200")))
    assert samples[key] == 7


def test_the_sample_dashboard_reads_metrics_that_exist(client: TestClient, keys: Keys) -> None:
    import json
    import re

    path = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
    exprs = [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"callgate_[a-z_]+", e)}
    served = {name for name, _ in scrape(client, keys)}
    # Families with no sample yet (a labelled counter never incremented) are named by HELP.
    text = client.get("/metrics", headers=keys["admin"]).text
    served |= set(re.findall(r"^# HELP (callgate_[a-z_]+)", text, re.M))
    served |= {f"{n}_total" for n in served} | {f"{n}_bucket" for n in served}
    assert used and used <= served, used - served
