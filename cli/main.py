"""The ``callgate`` command line. Like the routers, it only translates to domain calls."""

from __future__ import annotations

import json
import logging.config
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.logconfig import log_config
from config.clock import SystemClock
from config.policy import PolicyError, format_hhmm, load_policy
from config.settings import get_settings

if TYPE_CHECKING:
    from core.db import Database

app = typer.Typer(
    help="callgate: outbound-call compliance engine for healthcare.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
policy_app = typer.Typer(help="Validate and show policy files.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(policy_app, name="policy")
calls_app = typer.Typer(help="Submit call lists from the shell.", no_args_is_help=True)
app.add_typer(calls_app, name="calls")
rnd_app = typer.Typer(
    help="FCC Reassigned Numbers Database (47 CFR 64.1200(m)): write the numbers to ask "
    "about, load the answers.", no_args_is_help=True)
app.add_typer(rnd_app, name="rnd")
audit_app = typer.Typer(help="Check the audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:64]
    except Exception:  # no user name (a container without one)
        return "cli:unknown"


def _policy_version() -> str:
    return load_policy(get_settings().policy_file).policy_version


def _audit_keys() -> None:
    """Load the audit signing and pseudonym keys before the workers start, creating them
    (mode 0600) on a first start, loudly: they belong off this host too."""
    from core.auditlog import KEY_WARNING, load_signer
    from core.pseudonyms import PseudonymKeyError, Pseudonyms
    from core.signednote import KeyFileError, NoteError

    settings = get_settings()
    try:
        signer, created = load_signer(settings)
        _pseudonyms, created_p = Pseudonyms.load_or_create(settings.pseudonym_key_path)
    except (KeyFileError, PseudonymKeyError, NoteError, OSError) as exc:
        _fail(f"audit keys: {exc}")
        return
    if created:
        err.print("[bold red on yellow] AUDIT KEY CREATED [/] "
                  + KEY_WARNING.format(path=settings.audit_key_file, vkey=signer.vkey),
                  highlight=False)
    if created_p:
        err.print("[bold red on yellow] PSEUDONYM KEY CREATED [/] "
                  f"{settings.pseudonym_key_path} (mode 0600) names patients' numbers in the "
                  "audit log: copy it to every instance and keep a copy off this host.",
                  highlight=False)
    err.print(f"callgate: audit     origin {signer.origin}; checkpoints in "
              f"{settings.audit_checkpoint_dir}", highlight=False)
    err.print(f"callgate: audit     verifier key {signer.vkey}", highlight=False)


def _database() -> Database:
    from core.db import Database
    from core.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    return Database(url)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
) -> None:
    """Run the HTTP API (migrates the database first)."""
    import uvicorn

    from core.db import Database
    from core.migrate import upgrade

    settings = get_settings()
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        _fail(str(exc))
        return
    for warning in policy.warnings():
        err.print(f"[bold red on yellow] POLICY WARNING [/] {warning}", highlight=False)
    db = Database(settings.database_url)
    err.print(f"callgate: database  {db.describe()}", highlight=False)
    err.print(
        f"callgate: policy    {settings.policy_file or 'config/policy.toml (shipped default)'}"
        f"  version {policy.policy_version}",
        highlight=False,
    )
    db.dispose()
    upgrade(settings.database_url)
    _audit_keys()
    err.print(
        "callgate: first key? callgate keys create --role admin --name me", highlight=False
    )
    err.print(f"callgate: listening on http://{host}:{port}", highlight=False)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # GET /metrics sums the workers' counters (core/metrics.py): prometheus-client's
        # multiprocess mode, a fresh directory per start, set before the workers spawn.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="callgate-metrics-")
    uvicorn.run(
        "api.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=log_config(settings.log_level),
        access_log=False,
        server_header=False,
        # X-Forwarded-For/-Proto only from these (CALLGATE_TRUSTED_PROXIES): the client
        # address and the https scheme behind the TLS load balancer (docs/deployment.md).
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin | campaign_manager | dialer | compliance")],
    name: Annotated[str, typer.Option(help="A unique name, e.g. acme-dialer-1")],
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from core.keys import KeyError_, Role, create_key

    try:
        role_ = Role(role)
    except ValueError:
        _fail(f"unknown role {role!r}; one of: {', '.join(r.value for r in Role)}")
        return
    if not name.strip() or len(name) > 128:
        _fail("--name must be 1-128 characters")
    try:
        row, plaintext = create_key(_database(), role_, name.strip(), SystemClock().now(),
                                    by=_cli_actor(), policy_version=_policy_version())
    except KeyError_ as exc:
        _fail(str(exc))
        return
    err.print(f"created key {row.name!r} (role {row.role}, id {row.id}); it is shown once:")
    print(plaintext)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (names, roles, ids; never the keys)."""
    from core.keys import list_keys

    table = Table("name", "role", "id", "prefix", "created", "revoked")
    for k in list_keys(_database()):
        table.add_row(
            k.name,
            k.role,
            k.id,
            k.prefix + "...",
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key by name (it stops working at once)."""
    from core.keys import KeyError_, revoke_key

    try:
        revoke_key(_database(), name, SystemClock().now(), by=_cli_actor(),
                   policy_version=_policy_version())
    except KeyError_ as exc:
        _fail(str(exc))
    err.print(f"revoked key {name!r}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply Alembic migrations to CALLGATE_DATABASE_URL."""
    from core.migrate import current_revision, upgrade

    url = get_settings().database_url
    upgrade(url, revision)
    err.print(f"database at revision {current_revision(url)}")


@policy_app.command("check")
def policy_check(
    file: Annotated[
        Path | None, typer.Argument(help="Policy TOML (default: the shipped one)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Validate a policy file and print the effective policy."""
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        _fail(str(exc), 1)
        return
    for warning in policy.warnings():
        err.print(f"[bold red on yellow] POLICY WARNING [/] {warning}", highlight=False)
    data = policy.model_dump(mode="json")
    data["policy_version"] = policy.policy_version
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(f"[bold]policy[/] {policy.policy_version}  (valid)")
    ch = policy.calling_hours
    console.print(f"calling hours {ch.start}-{ch.end}; caps {policy.caps.per_day}/day "
                  f"{policy.caps.per_week}/week ({policy.caps.period})")
    states = Table("state", *("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    for code, level in sorted(ch.states.items()):
        cells = []
        for d in range(7):
            w = level.for_weekday(d)
            cells.append(f"{format_hhmm(w.start_min)}-{format_hhmm(w.end_min)}" if w else "-")
        states.add_row(code, *cells)
    console.print(states)
    purposes = Table("purpose", "allowed", "channels", "rule")
    for code, spec in sorted(policy.purposes.items()):
        purposes.add_row(code, "yes" if spec.allowed else "NO", ",".join(spec.channels), spec.rule)
    console.print(purposes)
    console.print(
        f"quiet days: holidays={policy.quiet_days.holidays or 'none'} "
        f"rules={policy.quiet_days.rules}"
    )


@calls_app.command("submit")
def calls_submit(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id")],
    file: Annotated[Path, typer.Argument(help="CSV with a header row (external_id, phone, ...)",
                                         exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide every row, store nothing")]
    = False,
) -> None:
    """Submit a CSV call list; prints a summary; exits 1 when any row was invalid."""
    import getpass
    from collections import Counter

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from config.errors import DomainError
    from core.keys import Identity, Role
    from core.runtime import build_runtime
    from dialer.intake import parse as intake_parse
    from dialer.intake import service as intake

    db = _database()
    db.dispose()
    rt = build_runtime()
    who = Identity("cli", f"cli:{getpass.getuser()}", Role.admin)
    body = file.read_bytes()
    total = intake_parse.count_csv_rows(intake_parse.decode_text(body))
    try:
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err,
        ) as bar:
            task = bar.add_task("deciding rows", total=total)
            result = intake.submit_body(
                rt, who, campaign_id, body, "csv", dry_run=dry_run,
                progress=lambda n: bar.advance(task, n),
            )
    except DomainError as exc:
        _fail(f"{exc.code}: {exc.message}")
        return
    counts = result.counts()
    table = Table("status", "rows", title="dry run: nothing stored" if dry_run else "submitted")
    for key in ("accepted", "refused", "invalid", "duplicates"):
        table.add_row(key, str(counts[key]))
    console.print(table)
    reasons = Counter(r.code.value for res in result.results for r in res.reasons)
    if reasons:
        rt_table = Table("reason", "rows")
        for code, n in reasons.most_common():
            rt_table.add_row(code, str(n))
        console.print(rt_table)
    if counts["invalid"]:
        raise typer.Exit(1)


def _cli_runtime() -> tuple[Any, Any]:
    """The runtime of CALLGATE_DATABASE_URL (migrated) and the CLI's admin identity."""
    import getpass

    from core.keys import Identity, Role
    from core.runtime import build_runtime

    _database().dispose()
    return build_runtime(), Identity("cli", f"cli:{getpass.getuser()}", Role.admin)


@rnd_app.command("export")
def rnd_export(
    file: Annotated[Path, typer.Argument(help="CSV to write (more than 250,000 rows: "
                                              "FILE, then FILE's name with -2, -3, ...)",
                                         dir_okay=False)],
    pending_only: Annotated[bool, typer.Option(
        "--pending-only", help="Only numbers with a queued or leased call")] = False,
) -> None:
    """Write the numbers to query, each with its consent's date (telephone_number,date:
    10-digit US number, YYYY-MM-DD), for the RND's bulk query upload."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from consent import rnd_service

    rt, who = _cli_runtime()
    total = rnd_service.count_numbers(rt, who)
    opened: list[Any] = []

    def open_part(i: int) -> Any:
        path = file if i == 1 else file.with_name(f"{file.stem}-{i}{file.suffix}")
        if opened:
            opened[-1].close()
        opened.append(path.open("w", encoding="utf-8", newline=""))
        return opened[-1]

    try:
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("numbers", total=total)
            out = rnd_service.export_queries(rt, who, open_part, pending_only=pending_only,
                                             progress=lambda n: bar.advance(task, n))
    finally:
        for f in opened:
            f.close()
    if not out.files:
        file.write_bytes(b"telephone_number,date\r\n")
    err.print(f"wrote {out.rows:,} rows for {out.numbers:,} numbers in {max(1, out.files)} "
              f"file(s); left out: {out.skipped_not_us:,} not US, {out.skipped_reassigned:,} "
              f"already found reassigned", highlight=False)


@rnd_app.command("import")
def rnd_import(
    file: Annotated[Path, typer.Argument(help="JSON array or CSV of phone,date,answer,"
                                              "queried_at", exists=True, dir_okay=False,
                                         readable=True)],
) -> None:
    """Load RND answers (any size: read a chunk at a time). Numbers found reassigned since
    their consent leave the queue; exits 1 when a row was invalid."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from consent import rnd, rnd_service

    rt, who = _cli_runtime()
    size = file.stat().st_size
    with file.open("rb") as f:
        kind = rnd.sniff_kind(f.read(64))
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[rows]}"))
    try:
        with Progress(*columns, console=err) as bar:
            if kind == "json":
                check = bar.add_task("checking JSON", total=size, rows="")
                with file.open("rb") as f:
                    rnd.check_json(bar.wrap_file(f, total=size, task_id=check))
            task = bar.add_task(f"importing {kind.upper()}", total=size, rows="0 answers")
            counted = 0

            def advance(n: int) -> None:
                nonlocal counted
                counted += n
                bar.update(task, rows=f"{counted:,} answers")

            with file.open("rb") as f:
                reader = bar.wrap_file(f, total=size, task_id=task)
                rows = rnd.json_rows(reader) if kind == "json" else rnd.csv_rows(reader)
                result = rnd_service.import_answers(rt, who, rows, progress=advance)
    except rnd.FileError as exc:
        _fail(str(exc))
        return
    table = Table("answers", "rows", title=f"{file.name}: {result.rows:,} rows")
    for key in ("stored", "duplicates", "invalid"):
        table.add_row(key, f"{getattr(result, key):,}")
    for a in rnd.ANSWERS:
        table.add_row(f"answer {a}", f"{result.answers.get(a, 0):,}")
    table.add_row("calls withdrawn (NUMBER_REASSIGNED)", f"{result.withdrawn_calls:,}")
    table.add_row("calls returned to the queue", f"{result.requeued_calls:,}")
    console.print(table)
    for e in result.errors[:20]:
        err.print(f"row {e.row}: {e.field}: {e.message}", highlight=False)
    if result.invalid:
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option("--checkpoints", help="Checkpoint files to check the log against "
                     "(default: CALLGATE_AUDIT_CHECKPOINT_DIR)", file_okay=False),
    ] = None,
    vkey: Annotated[
        str | None,
        typer.Option("--vkey", help="The log's verifier key (default: from "
                     "CALLGATE_AUDIT_KEY_FILE)"),
    ] = None,
) -> None:
    """Rebuild the audit log's Merkle tree from the database and check it against every
    checkpoint (files and database): exit 0 when all hold, 1 naming the first index that
    disagrees."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from core.auditlog import load_signer
    from core.auditverify import verify_full
    from core.signednote import KeyFileError, NoteError, parse_vkey

    settings = get_settings()
    directory = checkpoints or settings.audit_checkpoint_dir
    try:
        if vkey:
            verifier, origin = parse_vkey(vkey), None
        else:
            signer, _ = load_signer(settings)
            verifier, origin = signer.verifier, signer.origin
    except (KeyFileError, NoteError, OSError) as exc:
        _fail(f"audit key: {exc}")
        return
    db = _database()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("rebuilding the tree", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = verify_full(db, verifier, origin, directory if directory.is_dir() else None,
                             progress)
    db.dispose()
    largest = "none" if report.largest is None else f"{report.largest:,}"
    console.print(f"checked {report.files:,} checkpoint file(s) in {directory} (largest size "
                  f"{largest}) and {report.db_checkpoints:,} checkpoint(s) in the database; "
                  f"tree of {report.size:,} entries rebuilt"
                  + (f"; {report.erased:,} payload(s) erased past retention" if report.erased
                     else "")
                  + (f"; {report.pending:,} not yet integrated" if report.pending else ""),
                  highlight=False)
    if report.ok:
        console.print("[bold green]OK[/]: every checkpoint holds", highlight=False)
        return
    where = ("" if report.index is None else f" at index {report.index}"
             if report.index_to is None
             else f" at an index from {report.index} to {report.index_to - 1}")
    err.print(f"[bold red]FAILED[/]{where}: {report.problem}", highlight=False)
    raise typer.Exit(1)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Random seed for the synthetic data")] = 7,
    patients: Annotated[int, typer.Option(help="Synthetic patients", min=50, max=4100)] = 3000,
    days: Annotated[int, typer.Option(help="Simulated days", min=1, max=14)] = 7,
    agents: Annotated[int, typer.Option(help="Simulated dialer agents", min=1, max=10)] = 6,
    keep: Annotated[bool, typer.Option("--keep", help="Keep serving until Ctrl-C")] = False,
) -> None:
    """A synthetic organisation and a simulated dialer week against a real HTTP server
    (throwaway SQLite database, simulated clock); exits 1 if a cap or the audit log check fails."""
    from cli.demo.data import DemoOptions
    from cli.demo.run import run_demo

    opts = DemoOptions(seed=seed, patients=patients, days=days, agents=agents, keep=keep)
    code = run_demo(opts, console)
    if code:
        raise typer.Exit(code)


def main() -> None:
    logging.config.dictConfig(
        log_config(get_settings().log_level)
    )
    try:
        app()
    except PolicyError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
