"""``callgate rnd export`` and ``callgate rnd import`` against a real database (both), with the
environment a shell would give them; the export's file parts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from config.settings import get_settings
from consent import rnd_service
from consent.schemas import ConsentIn, RevocationIn
from consent.service import record_consent, revoke
from core.keys import Role
from core.models import AuditEntry, Call
from core.runtime import Runtime
from tests.conftest import T0
from tests.helpers import days, new_identity

Invoke = Callable[..., Result]
AT = T0 - days(20)


@pytest.fixture
def cli(db_url: str) -> Iterator[Invoke]:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        get_settings.cache_clear()
        try:
            return runner.invoke(app, list(args), catch_exceptions=False,
                                 env={"COLUMNS": "200", "CALLGATE_DATABASE_URL": db_url})
        finally:
            get_settings.cache_clear()

    yield invoke


def num(i: int) -> str:
    return f"+1314555{100 + i:04d}"


def _consent(rt: Runtime, phone: str, method: str = "written", obtained_days: int = 20) -> None:
    who = new_identity(rt, Role.campaign_manager, f"m-{phone}-{method}-{obtained_days}")
    record_consent(rt, who, ConsentIn(
        patient_ref="MRN-1", phone=phone, channels=["autodialed_voice"], purposes=["*"],
        method=method, obtained_at=T0 - days(obtained_days), evidence_ref="scan://1"))  # type: ignore[arg-type]


def _registry(rt: Runtime) -> None:
    _consent(rt, num(1))
    _consent(rt, num(1), obtained_days=300)  # two consents: two dates to ask about
    _consent(rt, num(2), method="oral")
    _consent(rt, num(3))
    revoke(rt, new_identity(rt, Role.campaign_manager, "rev"),
           RevocationIn(phone=num(3), source="letter"))
    _consent(rt, num(4))
    who = new_identity(rt, Role.campaign_manager, "rnd")
    rnd_service.import_answers(rt, who, [(1, {
        "phone": num(4), "date": AT.date().isoformat(), "answer": "yes",
        "queried_at": (T0 - timedelta(hours=1)).isoformat()})])


def test_export_writes_the_numbers_with_their_consent_dates(
    cli: Invoke, runtime: Runtime, tmp_path: Path
) -> None:
    _registry(runtime)
    out = tmp_path / "rnd-query.csv"
    r = cli("rnd", "export", str(out))
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows == [["telephone_number", "date"],
                    ["3145550101", (T0 - days(300)).date().isoformat()],
                    ["3145550101", AT.date().isoformat()]]
    assert "1 already found reassigned" in r.output
    with runtime.db.read() as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.kind == "patient_data.read"))
    assert json.loads(entry.payload) == {"view": "rnd.export", "numbers": 1, "rows": 2,
                                         "files": 1, "pending_only": False}
    r = cli("rnd", "export", "--pending-only", str(out))
    assert r.exit_code == 0 and out.read_bytes() == b"telephone_number,date\r\n"


def test_export_splits_at_the_rnd_file_limit(runtime: Runtime) -> None:
    for i in range(5):
        _consent(runtime, num(10 + i))
    parts: list[io.StringIO] = []

    def open_part(i: int) -> io.StringIO:
        assert i == len(parts) + 1
        parts.append(io.StringIO())
        return parts[-1]

    who = new_identity(runtime, Role.admin, "x")
    got = rnd_service.export_queries(runtime, who, open_part, rows_per_file=2)
    assert (got.rows, got.files) == (5, 3)
    assert [p.getvalue().count("\r\n") for p in parts] == [3, 3, 2]  # each with its header


def test_import_json_and_csv_files(cli: Invoke, runtime: Runtime, tmp_path: Path) -> None:
    from dialer.campaigns import create_campaign
    from dialer.intake.service import submit
    from dialer.schemas import CampaignIn

    _consent(runtime, num(1))
    who = new_identity(runtime, Role.campaign_manager, "c")
    camp = create_campaign(runtime, who, CampaignIn(
        name="c", purpose="discharge_followup", provider_name="p",
        callback_number="+13145550199"))
    submit(runtime, who, camp.id, [{"external_id": "e1", "phone": num(1)}])
    answers = [{"phone": num(1)[2:], "date": AT.date().isoformat(), "answer": "yes",
                "queried_at": "2026-11-20T12:00:00Z"},
               {"phone": num(2), "date": "2026-01-05", "answer": "no",
                "queried_at": "2026-11-20T12:00:00Z"}]
    f = tmp_path / "answers.json"
    f.write_text(json.dumps(answers))
    r = cli("rnd", "import", str(f))
    assert r.exit_code == 0, r.output
    assert "calls withdrawn (NUMBER_REASSIGNED)" in r.stdout and "2 rows" in r.stdout
    with runtime.db.read() as s:
        assert s.scalars(select(Call.status)).all() == ["withdrawn"]
    f = tmp_path / "answers.csv"
    f.write_text("phone,date,answer,queried_at\n"
                 f"{num(3)},2026-01-05,no,2026-11-20T12:00:00Z\n"
                 f"{num(3)},bad,no,2026-11-20T12:00:00Z\n")
    r = cli("rnd", "import", str(f))
    assert r.exit_code == 1
    assert "row 2: date: is not a date" in r.output
    f.write_text("[1, 2")
    r = cli("rnd", "import", str(f))
    assert r.exit_code == 2 and "not valid JSON" in r.output
