"""CLI commands over the audit trail: `audit list|show|reindex|verify` and `stats`.

Registered on the main typer app by `register(app)` (see cli/main.py).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from scoperun.cli.common import EXIT_PROBLEM, JsonOpt, fail, out, plain, settings_of, shown
from scoperun.errors import ScopeRunError

if TYPE_CHECKING:
    from scoperun.audit.log import AuditLog
    from scoperun.config import Settings

audit_app = typer.Typer(no_args_is_help=True, help="Query, index and verify the audit trail.")
SinceOpt = Annotated[str | None, typer.Option("--since", help="Only runs started since: 7d, 24h, 30m, or an ISO date.")]


def _audit(settings: Settings, *, reindex: bool = False) -> AuditLog:
    from scoperun.audit.log import AuditLog

    audit = AuditLog.from_settings(settings, Path(settings.workspace).expanduser().resolve())
    if reindex and audit.index is not None:
        audit.index.reindex()
    return audit


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "?"


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


_STATUS_STYLE = {"succeeded": "green", "running": "cyan", "rejected": "yellow"}


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    case: Annotated[str | None, typer.Option("--case", "-c", help="Only this case.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status (succeeded, failed, ...).")] = None,
    script: Annotated[str | None, typer.Option("--script", help="Only this script (workspace-relative path).")] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many runs, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List runs from the index (caught up with the records first), newest first."""
    from scoperun.audit.stats import parse_since

    settings = settings_of(ctx)
    try:
        since_epoch = parse_since(since)
        rows = _audit(settings, reindex=True).index.query(  # type: ignore[union-attr]
            case=case, status=status, script=script, since=since_epoch, limit=limit)
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("started (UTC)", "case", "script", "status", "exit", "duration", box=None)
    table.columns.insert(0, Column("execution id", no_wrap=True))
    for r in rows:
        style = _STATUS_STYLE.get(r["status"], "red")
        table.add_row(shown(r["execution_id"]), _when(r["started"]), shown(r["case_name"] or ""),
                      shown(r["script_path"] or ""), f"[{style}]{shown(r['status'])}[/]",
                      "" if r["exit_code"] is None else str(r["exit_code"]), _secs(r["duration"]))
    out.print(table if rows else "no runs match")


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(help="The run's execution id (exec_...).")],
    max_bytes: Annotated[int, typer.Option("--max-bytes", help="Show at most this many bytes of each output.")] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Show one run's record and its captured output (kept beside the record)."""
    settings = settings_of(ctx)
    audit = _audit(settings)
    try:
        record = audit.read(execution_id)
        outputs = {s: audit.read_output(execution_id, s, limit=max_bytes) for s in ("stdout", "stderr")}
    except ScopeRunError as exc:
        raise fail(f"{exc}. List runs with `scoperun audit list`.") from None
    texts = {s: (b.decode("utf-8", "replace") if b is not None else None) for s, b in outputs.items()}
    if as_json:
        sys.stdout.write(json.dumps({"record": record, "output": texts}, indent=2, default=str) + "\n")
        return
    table = Table(box=None, show_header=False)
    for key, value in record.items():
        if value in (None, [], {}, ""):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        table.add_row(f"[bold]{shown(key)}[/]", shown(text))
    out.print(table)
    for stream, text in texts.items():
        length = record.get(f"{stream}_length")
        if text is None:
            note = "nothing kept" if not length else f"{length} bytes, not kept (full_output_limit = 0 or older run)"
            out.print(f"\n[bold]{stream}[/]: {note}")
            continue
        out.print(f"\n[bold]{stream}[/] ({length} bytes; shown {min(len(outputs[stream] or b''), max_bytes)}):")
        sys.stdout.flush()
        text = plain(text, lines=True)  # the run's output: ESC sequences shown, never obeyed
        out.file.write(text if text.endswith("\n") else text + "\n")


@audit_app.command("reindex")
def audit_reindex(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option("--full", help="Re-read every record, not only new or changed ones.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Catch the local index up with the JSON records (other hosts' included)."""
    settings = settings_of(ctx)
    try:
        audit = _audit(settings)
        report = audit.index.reindex(full=full)  # type: ignore[union-attr]
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps({**report.__dict__, "index": str(audit.index.path)}, indent=2) + "\n")  # type: ignore[union-attr]
        return
    out.print(f"indexed {report.scanned} records in {report.seconds:.2f} s: {report.added} added, "
              f"{report.updated} updated, {report.removed} removed, {report.unreadable} unreadable "
              f"([dim]{escape(str(audit.index.path))}[/])")  # type: ignore[union-attr]


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    allow_unchained: Annotated[bool, typer.Option("--allow-unchained", help="Accept finished records without a "
                                                  "chain link (written before chaining, or with audit_chain off).")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the hash chains: modified, deleted, re-ordered records and runs never finished (exit 1 if any)."""
    from scoperun.audit.chain import FAILING_KINDS, HostChain, verify_records
    from scoperun.audit.index import read_json_file
    from scoperun.audit.state import state_dir

    settings = settings_of(ctx)
    audit = _audit(settings)
    stems = sorted(p.name[:-5] for p in audit.directory.glob("*.json") if not p.name.startswith("."))
    loaded = [(stem, read_json_file(audit.directory / f"{stem}.json")) for stem in stems]
    chain = HostChain(state_dir(settings), audit.directory)
    try:
        head = chain.head()
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_PROBLEM) from None
    report = verify_records(loaded, heads=[head] if head else [], grace=settings.gc_grace,
                            default_timeout=settings.timeout, allow_unchained=allow_unchained)
    failing = FAILING_KINDS - ({"unchained"} if allow_unchained else set())
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        for f in report.findings:
            style = "red" if f.kind in failing else "yellow"
            where = f" #{f.seq}" if f.seq is not None else ""
            out.print(f"[{style}]{f.kind:<10}[/] {shown(f.execution_id or '-')}{where}: {shown(f.detail)}")
        verdict = "[green]ok[/]" if report.ok else "[bold red]PROBLEMS FOUND[/]"
        out.print(f"{verdict}: {report.records} records, {report.chained} chained in {len(report.chains)} chain(s)")
    raise typer.Exit(0 if report.ok else EXIT_PROBLEM)


def stats_command(
    ctx: typer.Context,
    since: SinceOpt = None,
    case: Annotated[str | None, typer.Option("--case", "-c", help="Only this case.")] = None,
    max_age: Annotated[float, typer.Option("--max-age", min=0, help="Catch the index up with the records first "
                                           "when it last did more than N seconds ago (0 = always).")] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Run statistics and the plan's success metrics, from the local index."""
    from scoperun.audit.stats import stats_for_settings

    settings = settings_of(ctx)
    try:
        stats = stats_for_settings(settings, since=since, case=case, max_age=max_age)
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(stats.model_dump_json(indent=2) + "\n")
        return
    if not out.is_terminal:
        from scoperun.audit.stats import render_stats_markdown

        out.file.write(render_stats_markdown(stats) + "\n")
        return
    _print_stats_tables(out, stats)


def _print_stats_tables(out: Any, stats: Any) -> None:
    from scoperun.audit.stats import _pct, _sec

    summary = Table(title=f"{stats.total} runs" + (f" since {stats.since:%Y-%m-%d %H:%M}" if stats.since else "")
                    + (f", case {shown(stats.case)}" if stats.case else ""), show_header=False)
    for status, n in sorted(stats.by_status.items(), key=lambda kv: -kv[1]):
        summary.add_row(status, str(n))
    summary.add_row("success rate", _pct(stats.success_rate))
    summary.add_row("duration mean / p50 / p95",
                    f"{_sec(stats.duration.mean)} / {_sec(stats.duration.p50)} / {_sec(stats.duration.p95)}")
    summary.add_row("container start p50 / p95", f"{_sec(stats.container_start.p50)} / {_sec(stats.container_start.p95)}")
    summary.add_row("in progress", str(stats.in_progress))
    out.print(summary)
    targets = Table("plan's metric", "target", "value", "met", title="Success metrics")
    for t in stats.targets:
        value = _pct(t.value) if "rate" in t.name or "completeness" in t.name else _sec(t.value)
        met = "n/a" if t.met is None else ("[green]yes[/]" if t.met else "[red]NO[/]")
        targets.add_row(t.name, t.target, value, met)
    out.print(targets)
    recent = Table("started (UTC)", "script", "case", "status", "duration", title="Recent runs")
    for r in stats.recent:
        style = _STATUS_STYLE.get(r.status, "red")
        recent.add_row(f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "?", shown(r.script or ""),
                       shown(r.case or ""), f"[{style}]{r.status}[/]", _sec(r.duration))
    out.print(recent)
    for title, items in (("Busiest scripts", stats.busiest_scripts), ("Busiest cases", stats.busiest_cases)):
        table = Table("name", "runs", "succeeded", "mean duration", title=title)
        for b in items:
            table.add_row(shown(b.name), str(b.runs), str(b.succeeded), _sec(b.mean_duration))
        out.print(table)


def register(app: typer.Typer) -> None:
    """Add `audit ...` and `stats` to the main app."""
    app.add_typer(audit_app, name="audit")
    app.command("stats")(stats_command)
