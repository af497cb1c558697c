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

from scoperun.cli.common import (
    EXIT_PROBLEM,
    EXIT_REJECTED,
    Col,
    JsonOpt,
    fail,
    fail_on,
    is_quiet,
    out,
    plain,
    print_table,
    safe,
    settings_of,
    status_parts,
)
from scoperun.errors import ScopeRunError
from scoperun.policies import Status

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


_STATUS_STYLE = {"succeeded": "green", "running": "cyan", "rejected": "yellow", "cancelled": "yellow"}
STATUSES = tuple(s.value for s in Status)


def _styled(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'red')}]{safe(status)}[/]"


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    case: Annotated[str | None, typer.Option("--case", "-c", help="Only this case.")] = None,
    status: Annotated[str | None, typer.Option("--status", help=f"Only this status: {', '.join(STATUSES)}.")] = None,
    script: Annotated[str | None, typer.Option("--script", help="Only this script (workspace-relative path).")] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many runs, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List runs from the index (caught up with the records first), newest first."""
    from scoperun.audit.stats import parse_since

    if status is not None and status not in STATUSES:
        raise fail(f"--status {status!r} is not a status; use one of {', '.join(STATUSES)}", EXIT_REJECTED)
    settings = settings_of(ctx)
    try:
        since_epoch = parse_since(since)
        rows = _audit(settings, reindex=True).index.query(  # type: ignore[union-attr]
            case=case, status=status, script=script, since=since_epoch, limit=limit)
    except ScopeRunError as exc:
        raise fail_on(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if is_quiet(ctx):
        for r in rows:
            out.print(r["execution_id"], highlight=False)
        return
    if not rows:
        out.print("no runs match")
        return
    cols = [Col("execution id", keep=True), Col("status", keep=True), Col("case"), Col("script"),
            Col("exit", drop=2, justify="right"), Col("duration", drop=1, justify="right"),
            Col("started (UTC)", drop=3)]
    print_table(out, cols, [[safe(r["execution_id"]), _styled(r["status"]), safe(r["case_name"] or ""),
                             safe(r["script_path"] or ""), "" if r["exit_code"] is None else str(r["exit_code"]),
                             _secs(r["duration"]), _when(r["started"])] for r in rows])


def _finding_text(item: Any) -> str:
    """One finding of a record as stored (an edited record may lack fields or hold odd ones: shown escaped)."""
    get = item.get if isinstance(item, dict) else {}.get
    return f"line {safe(get('line'))}: {safe(get('rule'))} {safe(get('message'))}"


def _hazard_text(item: Any) -> str:
    """One hazard of a record as stored (an edited record may lack fields or hold odd ones: shown escaped)."""
    get = item.get if isinstance(item, dict) else {}.get
    return f"{safe(get('kind'))} {safe(get('path'))}: {safe(get('detail'))}"


def _shell_words(args: list[Any]) -> str:
    import shlex

    return " ".join(shlex.quote(str(a)) for a in args)


def _record_summary(record: dict[str, Any], root: Path) -> list[str]:
    """A run's record as a few readable lines (every field stays in `audit show --json`)."""
    status = str(record.get("status") or "?")
    colour = _STATUS_STYLE.get(status, "red")
    word, rest = status_parts(status, str(record.get("message") or ""))
    lines = [f"[bold]{safe(record.get('execution_id'))}[/]  [bold {colour}]{safe(word)}[/]{safe(rest)}"]

    def row(label: str, value: str) -> None:
        lines.append(f"  [bold]{label:<10}[/] {value}")

    row("case", safe(record.get("case_name") or "?"))
    script = safe(record.get("script_path") or "?")
    if record.get("args"):
        script += " " + safe(_shell_words(record["args"]))
    row("script", script)
    if record.get("script_sha256"):
        row("sha256", safe(record["script_sha256"]))
    if record.get("working_dir"):
        row("folder", safe(record["working_dir"]))
    who = [f"by {safe(record['requested_by'])}" if record.get("requested_by") else "",
           f"on {safe(record['host'])}" if record.get("host") else "",
           f"pid {record['pid']}" if record.get("pid") else ""]
    if any(who):
        row("asked", " ".join(w for w in who if w))
    started, finished = record.get("started_at") or record.get("timestamp"), record.get("finished_at")
    when = safe(started or "?") + (f" -> {safe(finished)}" if finished else " (not finished)")
    row("when", when)
    d = record.get("durations") or {}
    if record.get("duration") is not None:
        parts = [f"{record['duration']:.2f} s"]
        detail = ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in d.items() if k != "total" and v)
        row("took", parts[0] + (f" ({detail})" if detail else ""))
    if record.get("exit_code") is not None:
        row("exit", str(record["exit_code"]))
    limits = record.get("limits") or {}
    bits = [f"{k.replace('_limit', '')} {v}" for k, v in limits.items() if v is not None]
    bits += [f"network {safe(record['network'])}" if record.get("network") else "",
             f"{safe(record['write_mode'])} case" if record.get("write_mode") else ""]
    row("limits", " · ".join(b for b in bits if b))
    if record.get("image"):
        row("image", safe(record["image"]) + (f" {safe(record['image_id'])}" if record.get("image_id") else ""))
    if record.get("env_names"):
        row("env", safe(", ".join(record["env_names"])) + " [dim](names only)[/]")
    changes = record.get("changes")
    if isinstance(changes, dict):
        row("changes", safe(changes.get("summary") or "") + f" · {safe(changes.get('status') or '')}")
    for f in record.get("findings") or []:
        row("finding", _finding_text(f))
    for h in record.get("hazards") or []:
        row("hazard", _hazard_text(h))
    for event in record.get("events") or []:
        if isinstance(event, dict):
            row("event", " ".join(safe(event.get(k)) for k in ("at", "action", "by") if event.get(k)))
    chain = record.get("chain")
    if isinstance(chain, dict) and chain:
        row("chain", f"#{chain.get('seq')} of chain {safe(chain.get('id'))} on {safe(chain.get('host'))}")
    return lines


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(help="The run's execution id (exec_...).")],
    max_bytes: Annotated[int, typer.Option("--max-bytes", help="Show at most this many bytes of each output.")] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: a readable summary and its captured output (`--json`: the whole record)."""
    settings = settings_of(ctx)
    audit = _audit(settings)
    try:
        record = audit.view(execution_id)
        outputs = {s: audit.read_output(execution_id, s, limit=max_bytes) for s in ("stdout", "stderr")}
    except ScopeRunError as exc:
        raise fail(f"{exc}. List runs with `scoperun audit list`.") from None
    texts = {s: (b.decode("utf-8", "replace") if b is not None else None) for s, b in outputs.items()}
    if as_json:
        sys.stdout.write(json.dumps({"record": record, "output": texts}, indent=2, default=str) + "\n")
        return
    root = Path(settings.workspace).expanduser().resolve()
    for line in _record_summary(record, root):
        out.print(line, highlight=False)
    for stream, text in texts.items():
        length = record.get(f"{stream}_length")
        if text is None:
            if length:
                from scoperun.audit.retention import removed_entry

                gone = removed_entry(settings, root, f"{record.get(f'{stream}_file') or ''}")
                why = (f"removed by retention at {gone.get('at')} ({gone.get('reason')}); it had "
                       f"{gone.get('bytes')} bytes, sha256 {gone.get('sha256')}") if gone else (
                    "not kept (full_output_limit = 0, or an older run)")
                out.print(f"\n[bold]{stream}[/]: {length} bytes, {safe(why)}")
            continue
        shown = len(outputs[stream] or b"")
        more = "" if shown >= (length or 0) else f"; first {shown} shown (--max-bytes)"
        out.print(f"\n[bold]{stream}[/] ({length} bytes{more}):")
        sys.stdout.flush()
        text = plain(text, lines=True)  # the run's own output: ESC sequences shown, never obeyed
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
    from scoperun.audit.chain import FAILING_KINDS, HostChain
    from scoperun.audit.state import state_dir

    settings = settings_of(ctx)
    audit = _audit(settings)
    # This host's head, even when the settings leave new records unchained.
    audit.chain = HostChain(state_dir(settings), audit.directory)
    try:
        report = audit.verify(grace=settings.gc_grace, default_timeout=settings.timeout,
                              allow_unchained=allow_unchained)
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_PROBLEM) from None
    failing = FAILING_KINDS - ({"unchained"} if allow_unchained else set())
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        for f in report.findings:
            style = "red" if f.kind in failing else "yellow"
            where = f" #{f.seq}" if f.seq is not None else ""
            out.print(f"[{style}]{f.kind:<10}[/] {safe(f.execution_id or '-')}{where}: {safe(f.detail)}")
        verdict = "[green]ok[/]" if report.ok else "[bold red]PROBLEMS FOUND[/]"
        events = f" and {report.events} events" if report.events else ""
        out.print(f"{verdict}: {report.records} records{events}, {report.chained} chained in {len(report.chains)} chain(s)")
    raise typer.Exit(0 if report.ok else EXIT_PROBLEM)


def stats_command(
    ctx: typer.Context,
    since: SinceOpt = None,
    case: Annotated[str | None, typer.Option("--case", "-c", help="Only this case.")] = None,
    max_age: Annotated[float, typer.Option("--max-age", min=0, help="Catch the index up with the records first "
                                           "when it last did more than N seconds ago (0 = always).")] = 30.0,
    as_json: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the markdown agents get.")] = False,
) -> None:
    """Run statistics and the plan's success metrics, from the local index."""
    from scoperun.audit.stats import stats_for_settings

    settings = settings_of(ctx)
    try:
        stats = stats_for_settings(settings, since=since, case=case, max_age=max_age)
    except ScopeRunError as exc:
        raise fail_on(exc) from None
    if as_json:
        sys.stdout.write(stats.model_dump_json(indent=2) + "\n")
        return
    if markdown:
        from scoperun.audit.stats import render_stats_markdown

        out.file.write(render_stats_markdown(stats) + "\n")
        return
    _print_stats_tables(out, stats)


def _print_stats_tables(out: Any, stats: Any) -> None:
    from scoperun.audit.stats import _pct, _sec

    scope = [f"since {stats.since:%Y-%m-%d %H:%M} UTC" if stats.since else "all time"]
    if stats.case:
        scope.append(f"case {safe(stats.case)}")
    from rich.table import Table

    summary = Table(title=f"{stats.total} runs ({', '.join(scope)})", show_header=False, title_justify="left",
                    title_style="bold", box=None, pad_edge=False)
    for status, n in sorted(stats.by_status.items(), key=lambda kv: -kv[1]):
        summary.add_row(_styled(status), str(n))
    summary.add_row("success rate", _pct(stats.success_rate))
    summary.add_row("duration mean / p50 / p95",
                    f"{_sec(stats.duration.mean)} / {_sec(stats.duration.p50)} / {_sec(stats.duration.p95)}")
    summary.add_row("container start p50 / p95", f"{_sec(stats.container_start.p50)} / {_sec(stats.container_start.p95)}")
    summary.add_row("in progress", str(stats.in_progress))
    if stats.file_access:
        summary.add_row("file accesses", ", ".join(f"{k} {n}" for k, n in stats.file_access.items()))
    out.print(summary)
    if not stats.total:
        return
    rows = []
    for t in stats.targets:
        value = _pct(t.value) if "rate" in t.name or "completeness" in t.name else _sec(t.value)
        met = "n/a" if t.met is None else ("[green]yes[/]" if t.met else "[bold red]NO[/]")
        rows.append([safe(t.name), safe(t.target), value, met])
    out.print()
    print_table(out, [Col("plan's metric"), Col("target"), Col("value", keep=True, justify="right"),
                      Col("met", keep=True)], rows, title="Success metrics")
    out.print()
    print_table(out, [Col("execution id", keep=True), Col("status", keep=True), Col("script"), Col("case"),
                      Col("duration", drop=1, justify="right")],
                [[safe(r.execution_id), _styled(r.status), safe(r.script or ""), safe(r.case or ""),
                  _sec(r.duration)] for r in stats.recent], title="Recent runs")
    for title, items in (("Busiest scripts", stats.busiest_scripts), ("Busiest cases", stats.busiest_cases)):
        out.print()
        print_table(out, [Col("name"), Col("runs", keep=True, justify="right"),
                          Col("succeeded", keep=True, justify="right"),
                          Col("mean duration", drop=1, justify="right")],
                    [[safe(b.name), str(b.runs), str(b.succeeded), _sec(b.mean_duration)] for b in items], title=title)


def register(app: typer.Typer) -> None:
    """Add `audit ...` and `stats` to the main app."""
    app.add_typer(audit_app, name="audit")
    app.command("stats")(stats_command)
