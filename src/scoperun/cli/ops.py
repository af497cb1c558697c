"""CLI operations: `ps`, `stop`, `gc`, `metrics`. Only scoperun's containers (label
`org.scoperun.managed=1`), and only this workspace's unless `--any-workspace`.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from scoperun.cli.common import (
    EXIT_ENGINE,
    EXIT_PROBLEM,
    EXIT_REJECTED,
    Col,
    JsonOpt,
    err,
    fail,
    fail_on,
    is_quiet,
    out,
    print_table,
    safe,
    settings_of,
)
from scoperun.errors import EngineError, ScopeRunError

AnyWsOpt = Annotated[bool, typer.Option("--any-workspace", help="Act on scoperun containers of every workspace.")]


def ps(ctx: typer.Context, any_workspace: AnyWsOpt = False, as_json: JsonOpt = False) -> None:
    """Runs in progress: id, case, script, elapsed time, memory."""
    from scoperun.config import format_size
    from scoperun.ops import list_pool, list_runs

    settings = settings_of(ctx)
    try:
        runs = list_runs(settings, any_workspace=any_workspace, memory=not is_quiet(ctx))
        idle = list_pool(settings, any_workspace=any_workspace)
    except ScopeRunError as exc:
        raise fail_on(exc) from None
    if as_json:
        sys.stdout.write(json.dumps([r.model_dump() for r in runs], indent=2) + "\n")
        return
    if is_quiet(ctx):
        for r in runs:
            out.print(r.execution_id, highlight=False)
        return
    if idle:
        owners = sorted({r.pool or "?" for r in idle})
        err.print(f"warm pool: {len(idle)} idle container(s), serving no run yet (owner {', '.join(owners)})")
    if not runs:
        out.print("no scoperun runs in progress" + ("" if any_workspace else " in this workspace"))
        return
    cols = [Col("execution id", keep=True), Col("case"), Col("script"), Col("elapsed", keep=True, justify="right"),
            Col("memory", drop=1, justify="right")]
    if any_workspace:
        cols.append(Col("workspace", drop=2))
    print_table(out, cols, [[safe(r.execution_id), safe(r.case), safe(r.script), f"{r.elapsed:.0f} s",
                             format_size(r.memory_bytes), safe(r.workspace)][: len(cols)] for r in runs])


def stop(
    ctx: typer.Context,
    execution_ids: Annotated[list[str] | None, typer.Argument(help="Execution ids to stop (see `scoperun ps`).")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Stop every run of this workspace.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; written into each stopped run's record.")] = "stopped by an operator",
    any_workspace: AnyWsOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop runs (scoperun's containers only); each ends `cancelled` with the reason in its record."""
    from scoperun.ops import stop_runs

    if bool(execution_ids) == all_runs:
        raise fail("give execution ids or --all (not both)", EXIT_REJECTED)
    settings = settings_of(ctx)
    try:
        outcomes = stop_runs(settings, None if all_runs else list(execution_ids or []), reason=reason,
                             by=f"scoperun stop ({getpass.getuser()})", any_workspace=any_workspace)
    except ScopeRunError as exc:  # an unknown id is bad usage (2); the engine failing is 125
        raise fail_on(exc) from None
    if as_json:
        sys.stdout.write(json.dumps([o.model_dump() for o in outcomes], indent=2) + "\n")
    else:
        if not outcomes:
            out.print("no scoperun runs to stop" + ("" if any_workspace else " in this workspace"))
        for o in outcomes:
            mark = "[green]stopped[/]" if o.stopped else "[yellow]not stopped[/]"
            out.print(f"{mark} {safe(o.execution_id)} ({safe(o.container)}): {safe(o.detail)}")
    raise typer.Exit(0 if all(o.stopped for o in outcomes) else EXIT_PROBLEM)


def gc(
    ctx: typer.Context,
    any_workspace: AnyWsOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be cleaned; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark runs whose scoperun process died `abandoned`; remove leftover and overdue scoperun containers."""
    from scoperun.engine.docker import connect
    from scoperun.ops import collect_garbage

    settings = settings_of(ctx)
    try:  # gc still marks abandoned records without an engine; the exit code says the engine failed
        connect(settings.docker_host, timeout=30).close()
        engine_down = False
    except EngineError:
        engine_down = True
    report = collect_garbage(settings, any_workspace=any_workspace, dry_run=dry_run)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        verb = "would mark" if dry_run else "marked"
        for execution_id in report.abandoned:
            out.print(f"{verb} abandoned: {execution_id}")
        for c in report.containers_removed:
            out.print(f"{'would remove' if dry_run else 'removed'} container {escape(c['container'])}: {escape(c['reason'])}")
        for volume in report.volumes_removed:
            out.print(f"{'would remove' if dry_run else 'removed'} staging volume {escape(volume)}")
        for name, items in report.hooks.items():
            for item in items:
                out.print(f"{escape(name)}: {escape(item)}")
        for e in report.errors:
            err.print(f"[red]error:[/] {escape(e)}")
        if not (report.abandoned or report.containers_removed or report.volumes_removed
                or any(report.hooks.values()) or report.errors):
            out.print("nothing to clean")
    raise typer.Exit(EXIT_ENGINE if engine_down else EXIT_PROBLEM if report.errors else 0)


def metrics(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port (0 = any free port).")] = 9464,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    refresh: Annotated[float, typer.Option("--refresh", min=0, help="Re-read new records at most every N seconds.")] = 5.0,
) -> None:
    """Serve Prometheus metrics (runs, durations, container start, engine, disk, audit verify) at /metrics."""
    from scoperun.alerts import HealthCollector
    from scoperun.audit.metrics import serve_metrics

    settings = settings_of(ctx)

    def ready(url: str) -> None:
        err.print(f"serving scoperun metrics at {url}")
        sys.stderr.flush()

    try:
        serve_metrics(settings, host=host, port=port, refresh=refresh, ready=ready,
                      extra=[HealthCollector(settings)])
    except KeyboardInterrupt:
        pass
    except ScopeRunError as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    """Add `ps`, `stop`, `gc` and `metrics` to the main app."""
    app.command("ps")(ps)
    app.command("stop")(stop)
    app.command("gc")(gc)
    app.command("metrics")(metrics)
