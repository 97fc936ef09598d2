"""Generated clients work at first contact (issue 20, point 1).

A real ``callgate serve``; its *served* ``/openapi.json`` is handed to

* openapi-python-client (pinned in constraints.txt): generation must print no warning; the
  generated package is imported and drives the whole flow;
* openapi-typescript + openapi-fetch (clients/ts, package-lock.json; ``npm ci`` when
  clients/ts/node_modules is missing): generation must print no warning, ``tsc --noEmit``
  checks clients/ts/flow.ts against the generated types, and tsx runs it under Node.

The flow, each time: consent (with an Idempotency-Key, replayed), campaign, call list (JSON;
the CSV upload too in Python), lease, dial check, outcome without the agent's identification
(the typed 422 ``AGENT_ID_MISSING`` read from the client) and with it, revocation (the
leased call withdrawn, the dial check's typed 409 ``CONSENT_REVOKED``), the refusal log, and
the Retry-After of an empty lease.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.serverproc import Server, make_keys, write_policy

ROOT = Path(__file__).resolve().parents[2]
TS_DIR = ROOT / "clients" / "ts"
WARNING_WORDS = ("warning", "warn ", "⚠")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    db_url = f"sqlite:///{tmp_path / 'clients.db'}"
    srv = Server(tmp_path, db_url, policy=write_policy(tmp_path, per_day=3, per_week=9),
                 env={"CALLGATE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "cp")})
    srv.start()
    try:
        keys = {role: h["Authorization"].split(" ", 1)[1]
                for role, h in make_keys(db_url).items()}
        yield srv, keys
    finally:
        srv.stop()


def _served_document(srv: Server, directory: Path) -> Path:
    r = httpx.get(f"{srv.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    path = directory / "openapi.json"
    path.write_bytes(r.content)
    return path


def _no_warnings(output: str) -> None:
    lowered = output.lower()
    assert not any(w in lowered for w in WARNING_WORDS), output


# --- Python: openapi-python-client ---------------------------------------------------------------


def test_python_client_generated_from_the_served_document_drives_the_flow(
    server: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    srv, keys = server
    doc = _served_document(srv, tmp_path)
    exe = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert exe, "openapi-python-client is a test dependency (pyproject.toml [test])"
    out = tmp_path / "gen"
    out.mkdir()
    package = f"callgate_client_{os.getpid()}"
    proc = subprocess.run(
        [exe, "generate", "--path", str(doc), "--output-path", str(out / package),
         "--meta", "none"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _no_warnings(proc.stdout + proc.stderr)
    sys.path.insert(0, str(out))
    try:
        _python_flow(package, srv.url, keys)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]


def _python_flow(package: str, url: str, keys: dict[str, str]) -> None:
    def mod(name: str) -> Any:
        return importlib.import_module(f"{package}.{name}")

    client_mod, models, types = mod("client"), mod("models"), mod("types")

    def op(area: str, name: str) -> Any:
        return importlib.import_module(f"{package}.api.{area}.{name}")

    def as_(role: str) -> Any:
        return client_mod.AuthenticatedClient(base_url=url, token=keys[role])

    mgr, dialer, compliance = as_("campaign_manager"), as_("dialer"), as_("compliance")
    now = datetime.now(UTC)
    phone_a, phone_b, phone_c, phone_none = (
        "+13145550200", "+13145550201", "+13145550202", "+13145550209")

    # Consents (the first with an Idempotency-Key, sent twice: one consent).
    def consent(phone: str, ref: str) -> Any:
        return models.ConsentIn(
            patient_ref=ref, phone=phone, channels=[models.Channel.AUTODIALED_VOICE],
            purposes=[models.ConsentPurpose.VALUE_0], method=models.ConsentMethod.WRITTEN,
            obtained_at=now - timedelta(days=1), evidence_ref=f"scan://consents/{ref}.pdf")
    record = op("consents", "record_consent")
    first = record.sync_detailed(client=mgr, body=consent(phone_a, "MRN-PY-1"),
                                 idempotency_key="py-consent-1")
    assert first.status_code == 201, first.content
    assert isinstance(first.parsed, models.ConsentOut) and first.parsed.phone == phone_a
    again = record.sync_detailed(client=mgr, body=consent(phone_a, "MRN-PY-1"),
                                 idempotency_key="py-consent-1")
    assert again.headers["idempotent-replayed"] == "true" and again.parsed.id == first.parsed.id
    assert first.headers["x-request-id"]
    for phone, ref in ((phone_b, "MRN-PY-2"), (phone_c, "MRN-PY-3")):
        assert record.sync_detailed(client=mgr, body=consent(phone, ref)).status_code == 201

    # A campaign: the purpose is an enum of the catalogue.
    created = op("campaigns", "create_campaign").sync_detailed(client=mgr, body=models.CampaignIn(
        name="PY discharge follow-up", purpose=models.PurposeCode.DISCHARGE_FOLLOWUP,
        channel=models.Channel.AUTODIALED_VOICE, provider_name="Mercy Heart Clinic",
        callback_number="+1 314 555 0199", max_attempts=3))
    assert created.status_code == 201, created.content
    campaign_id = created.parsed.id

    # The call list as JSON, and a CSV file through the upload route.
    submitted = op("calls", "submit_calls").sync_detailed(
        campaign_id, client=mgr, body=[
            models.IntakeRowIn(external_id="py-1", phone=phone_a, patient_ref="MRN-PY-1"),
            models.IntakeRowIn(external_id="py-2", phone=phone_b, patient_ref="MRN-PY-2"),
            models.IntakeRowIn(external_id="py-9", phone=phone_none),
        ])
    assert submitted.status_code == 200, submitted.content
    assert [r.status for r in submitted.parsed.results] == [
        models.RowStatus.QUEUED, models.RowStatus.QUEUED, models.RowStatus.REFUSED]
    csv = f"external_id,phone,patient_ref\npy-3,{phone_c},MRN-PY-3\n".encode()
    uploaded = op("calls", "upload_calls").sync_detailed(
        campaign_id, client=mgr, body=models.CsvUpload(file=types.File(
            payload=io.BytesIO(csv), file_name="calls.csv", mime_type="text/csv")))
    assert uploaded.status_code == 200, uploaded.content
    assert [r.status for r in uploaded.parsed.results] == [models.RowStatus.QUEUED]
    raw = op("calls", "upload_calls").sync_detailed(
        campaign_id, client=mgr, body=types.File(payload=io.BytesIO(csv)))
    assert [r.status for r in raw.parsed.results] == [models.RowStatus.DUPLICATE]

    # A lease: three calls.
    leased = op("queue", "lease_calls").sync_detailed(
        client=dialer, body=models.LeaseIn(dialer_id="py-dialer", limit=10))
    assert leased.status_code == 200, leased.content
    tasks = {t.phone: t for t in leased.parsed.tasks}
    assert set(tasks) == {phone_a, phone_b, phone_c}
    a, b, c = tasks[phone_a], tasks[phone_b], tasks[phone_c]

    # The dial check.
    dial = op("queue", "dial_check")
    go = dial.sync_detailed(a.call_id, client=dialer, body=models.DialIn(lease_id=a.lease_id))
    assert go.status_code == 200 and go.parsed.go is True

    # The outcome without identification: the typed 422; then complete.
    report = op("queue", "report_outcome")

    def outcome(task: Any, **kw: Any) -> Any:
        return models.OutcomeIn(
            lease_id=task.lease_id, result=models.CallResult.CONNECTED, agent_name="Dana",
            disclosed_callback_number=task.callback_number, started_at=now,
            ended_at=now + timedelta(seconds=40), **kw)
    missing = report.sync_detailed(a.call_id, client=dialer, body=outcome(a))
    assert missing.status_code == 422
    assert isinstance(missing.parsed, models.ErrorEnvelope)
    assert missing.parsed.error.code == "AGENT_ID_MISSING"
    ok = report.sync_detailed(a.call_id, client=dialer, body=outcome(a, agent_id="A-17"))
    assert ok.status_code == 200 and isinstance(ok.parsed, models.OutcomeOut), ok.content
    # The lease is gone now: the typed 409.
    gone = report.sync_detailed(a.call_id, client=dialer, body=outcome(a, agent_id="A-17"))
    assert gone.status_code == 409 and gone.parsed.error.code == "LEASE_NOT_HELD"
    released = op("queue", "release_lease").sync_detailed(
        c.call_id, client=dialer, body=models.LeaseRefIn(lease_id=c.lease_id))
    assert released.status_code == 200, released.content

    # Revocation: B's leased call is withdrawn, and the dial check says why.
    rev = op("consents", "revoke_consent").sync_detailed(client=mgr, body=models.RevocationIn(
        phone=phone_b, source=models.RevocationSource.LETTER, received_at=now))
    assert rev.status_code == 201 and rev.parsed.withdrawn_calls == 1, rev.content
    stopped = dial.sync_detailed(b.call_id, client=dialer, body=models.DialIn(lease_id=b.lease_id))
    assert stopped.status_code == 409 and stopped.parsed.error.code == "CONSENT_REVOKED"

    # The refusal log.
    page = op("compliance", "list_refusals").sync_detailed(client=compliance,
                                                           campaign_id=campaign_id)
    assert page.status_code == 200, page.content
    assert sorted(f"{i.stage}:{i.code}" for i in page.parsed.items) == [
        "dispatch:CONSENT_REVOKED", "intake:NO_CONSENT"]
    intake_only = op("compliance", "list_refusals").sync_detailed(
        client=compliance, campaign_id=campaign_id, stage=models.RefusalStage.INTAKE)
    assert [i.code for i in intake_only.parsed.items] == ["NO_CONSENT"]

    # A wrong role, read as the typed 403.
    denied = op("queue", "lease_calls").sync_detailed(
        client=mgr, body=models.LeaseIn(dialer_id="x"))
    assert denied.status_code == 403 and denied.parsed.error.code == "FORBIDDEN"


# --- TypeScript: openapi-typescript + openapi-fetch -------------------------------------------


def _npm_ready() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not installed (.ci/run installs them: apt-get nodejs npm)")
    modules = TS_DIR / "node_modules"
    if not (modules / ".bin" / "tsx").exists():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_DIR,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return modules / ".bin"


def test_typescript_client_generated_from_the_served_document_drives_the_flow(
    server: tuple[Server, dict[str, str]]
) -> None:
    bin_dir = _npm_ready()
    srv, keys = server
    generated = TS_DIR / "generated"
    generated.mkdir(exist_ok=True)
    gen = subprocess.run(
        [str(bin_dir / "openapi-typescript"), f"{srv.url}/openapi.json",
         # A field with a default is optional in a request (openapi-typescript 7 makes it
         # required unless told: docs/integration.md, "Generated clients").
         "--default-non-nullable", "false", "-o", str(generated / "schema.d.ts")],
        cwd=TS_DIR, capture_output=True, text=True, timeout=120, check=False,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    _no_warnings(gen.stdout + gen.stderr)
    check = subprocess.run([str(bin_dir / "tsc"), "--noEmit", "-p", "tsconfig.json"],
                           cwd=TS_DIR, capture_output=True, text=True, timeout=180, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    env = {
        **os.environ,
        "CALLGATE_URL": srv.url,
        "CALLGATE_KEYS": json.dumps(keys),
        "CALLGATE_PHONES": json.dumps(["+13145550300", "+13145550301", "+13145550309"]),
    }
    run = subprocess.run([str(bin_dir / "tsx"), "flow.ts"], cwd=TS_DIR, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["refusals"] == ["dispatch:CONSENT_REVOKED", "intake:NO_CONSENT"]
    assert 1 <= result["retry"] <= 60
