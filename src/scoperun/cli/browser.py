"""`scoperun browse`: run a JSON action list in headless Chromium on one case (see docs/browser.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from scoperun.cli.common import (
    EXIT_ENGINE,
    EXIT_REJECTED,
    ByOpt,
    CaseOpt,
    JsonOpt,
    NetworkOpt,
    err,
    exit_code_for,
    fail,
    out,
    settings_of,
)
from scoperun.errors import AuditError, BrowserActionError, EngineError, ScopeRunError

__all__ = ["browse", "register"]


def _load_actions(path: Path) -> list[Any]:
    """The actions file: a JSON list of actions, or an object with an "actions" list."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}", EXIT_REJECTED) from None
    except ValueError as exc:
        raise fail(f"{path} is not valid JSON: {exc}", EXIT_REJECTED) from None
    if isinstance(data, dict) and isinstance(data.get("actions"), list):
        data = data["actions"]
    if not isinstance(data, list):
        raise fail(f"{path} must hold a JSON list of actions (or {{\"actions\": [...]}})", EXIT_REJECTED)
    return data


def browse(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", "-u", help="Start page (http or https).")],
    actions: Annotated[Path | None, typer.Option("--actions", "-a", help="JSON file with the action list.")] = None,
    case: CaseOpt = ...,
    network: NetworkOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before the run is killed (default 300).")] = None,
    no_screenshot: Annotated[bool, typer.Option("--no-screenshot", help="Do not save final.png.")] = False,
    requested_by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open URL in headless Chromium, carry out the actions, save results in the case's browser/ folder."""
    from scoperun.browser import make_request, parse_actions, run_browser
    from scoperun.executor import Executor

    settings = settings_of(ctx)
    raw = _load_actions(actions) if actions is not None else []
    try:
        request = make_request(url=url, actions=parse_actions(raw), case=case, network=network,
                               timeout=timeout, save_screenshots=not no_screenshot,
                               requested_by=requested_by or "cli")
    except BrowserActionError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None

    # One run per process: warm containers would outlive their use (and cost their start-up).
    executor = Executor(settings.model_copy(update={"pool": False}))
    try:
        if not as_json and err.is_terminal:
            with err.status("browsing in a container"):
                result = run_browser(executor, request)
        else:
            result = run_browser(executor, request)
    except ScopeRunError as exc:
        code = EXIT_ENGINE if isinstance(exc, (EngineError, AuditError)) else EXIT_REJECTED
        raise fail(str(exc), code) from None
    finally:
        executor.close()

    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        raise typer.Exit(exit_code_for(result.execution))
    ex = result.execution
    colour = "green" if result.success else ("yellow" if ex.status.value == "rejected" else "red")
    out.print(f"[bold {colour}]{ex.status.value}[/] {escape(ex.message)} · {ex.durations.total:.1f} s")
    if result.final_url:
        out.print(f"final URL: {escape(result.final_url)}")
    if result.title:
        out.print(f"title: {escape(result.title)}")
    for name, value in result.extracted.items():
        shown = value if isinstance(value, str) else "\n  ".join(value)
        out.print(f"[bold]{escape(name)}[/]: {escape(shown)}")
    case_root = Path(settings.workspace).expanduser().resolve() / settings.projects_dir / case
    for rel in result.files:
        out.print(f"saved: {escape(str(case_root / rel))}")
    if result.failed_action is not None:
        err.print(f"[red]failed at action {result.failed_action}[/]")
    if result.error and not result.success:
        err.print(f"[red]error:[/] {escape(result.error)}")
    err.print(f"audit record: {escape(str(Path(settings.workspace).expanduser().resolve() / ex.audit_record))}")
    raise typer.Exit(exit_code_for(ex))


def register(app: typer.Typer) -> None:
    """Add `browse` to the scoperun command line."""
    app.command("browse")(browse)
