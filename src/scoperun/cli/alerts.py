"""`scoperun alerts check | list`: evaluate the alert rules (for a timer) and show what fired.

Exit status of `check`: 0 evaluated (whatever fired: the webhook is how a firing alert is told);
1 an alert could not be delivered to the webhook; 2 bad settings.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from scoperun.cli.common import EXIT_PROBLEM, EXIT_REJECTED, fail, out, settings_of
from scoperun.errors import ScopeRunError

app = typer.Typer(no_args_is_help=True,
                  help="Alerts when the plan's targets slip (success rate, durations, engine, disk).")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


@app.command("check")
def check(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    verify: Annotated[bool | None, typer.Option("--verify/--no-verify", help="Also run `audit verify` (reads every "
                                                "record; default: the alert_verify setting).")] = None,
) -> None:
    """Evaluate every rule once: fire new alerts, resolve recovered ones, deliver them to the webhook."""
    from scoperun.alerts import evaluate_alerts

    settings = settings_of(ctx)
    try:
        report = evaluate_alerts(settings, verify=verify)
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2, exclude={"history"}) + "\n")
    else:
        for alert in report.active:
            tag = "new " if alert.name in report.fired else ""
            out.print(f"[bold red]FIRING[/] {tag}{alert.name} ({alert.severity}): {escape(alert.description)}")
        for name in report.resolved:
            out.print(f"[green]RESOLVED[/] {name}")
        if not report.active:
            out.print("[green]ok[/]: no alert firing")
        if report.undelivered:
            out.print(f"[yellow]{report.undelivered} alert message(s) not delivered; retried at the next check[/]")
    raise typer.Exit(EXIT_PROBLEM if report.undelivered else 0)


@app.command("list")
def list_alerts(ctx: typer.Context, as_json: JsonOpt = False,
                limit: Annotated[int, typer.Option(help="Past alerts shown.")] = 20) -> None:
    """Alerts firing now and the past ones, as the last evaluation left them."""
    from scoperun.alerts import load_alert_state

    state = load_alert_state(settings_of(ctx))
    if as_json:
        sys.stdout.write(state.model_dump_json(indent=2) + "\n")
        return
    when = f"{state.evaluated_at:%Y-%m-%d %H:%M:%S} UTC" if state.evaluated_at else "never"
    out.print(f"last evaluated: {when}")
    for alert in state.active.values():
        out.print(f"[bold red]FIRING[/] since {alert.starts_at:%Y-%m-%d %H:%M:%S} {alert.name}: "
                  f"{escape(alert.description)}")
    for alert in state.history[:limit]:
        end = f"{alert.ends_at:%Y-%m-%d %H:%M:%S}" if alert.ends_at else "?"
        out.print(f"[dim]resolved {end}[/] {alert.name}: {escape(alert.description)}")


def register(root: typer.Typer) -> None:
    """Add the `alerts` group to the main app."""
    root.add_typer(app, name="alerts")
