"""The `scoperun` command line: run, run-code, doctor, demo, image build (+ audit, stats, ps, stop, gc, metrics).

Exit status: 0 succeeded; the script's own code when it failed; 124 timed out; 137 out of
memory; 2 rejected or bad usage; 125 engine error.
"""

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
    ApplyOpt,
    ByOpt,
    CaseOpt,
    CpusOpt,
    EnvOpt,
    JsonOpt,
    MemoryOpt,
    NetworkOpt,
    ReadOnlyOpt,
    TimeoutOpt,
    WorkdirOpt,
    WriteModeOpt,
    err,
    exit_code_for,
    fail,
    out,
    settings_of,
)
from scoperun.config import Settings
from scoperun.errors import AuditError, EngineError, ScopeRunError, WorkspaceError
from scoperun.models import ExecutionRequest, ExecutionResult, Limits

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run scripts on case files in scoped, hardened containers.")
image_app = typer.Typer(no_args_is_help=True, help="Build the images runs use.")
app.add_typer(image_app, name="image")
from scoperun.cli.firewall import app as _firewall_app

app.add_typer(_firewall_app, name="firewall")

@app.callback()
def _main(
    ctx: typer.Context,
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace root (default: $SCOPERUN_WORKSPACE or ./workspace).")] = None,
    image: Annotated[str | None, typer.Option(help="Runner image (default: $SCOPERUN_IMAGE or scoperun-runner:latest).")] = None,
) -> None:
    overrides: dict[str, Any] = {}
    if workspace is not None:
        overrides["workspace"] = workspace
    if image is not None:
        overrides["image"] = image
    ctx.obj = overrides


def _parse_env(pairs: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise fail(f"--env {pair!r} must look like NAME=value", EXIT_REJECTED)
        env[name] = value
    return env


def _execute(settings: Settings, as_json: bool, call: Any) -> None:
    """Run `call(executor)` with a spinner on a terminal; print and exit with the mapped code."""
    from scoperun.executor import Executor

    # One run per process: warm containers would outlive their use (and cost their start-up).
    executor = Executor(settings.model_copy(update={"pool": False}))
    try:
        if not as_json and err.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(SpinnerColumn(), TextColumn("running in a container"), TimeElapsedColumn(),
                          console=err, transient=True) as progress:
                progress.add_task("run", total=None)
                result = call(executor)
        else:
            result = call(executor)
    except (WorkspaceError, AuditError) as exc:
        raise fail(str(exc), EXIT_REJECTED if isinstance(exc, WorkspaceError) else EXIT_ENGINE) from None
    except EngineError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    finally:
        executor.close()
    _print_result(result, as_json, Path(settings.workspace).expanduser().resolve())
    raise typer.Exit(exit_code_for(result))


def _print_result(result: ExecutionResult, as_json: bool, audit_root: Path) -> None:
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    if result.stdout.text:
        sys.stdout.write(result.stdout.text if result.stdout.text.endswith("\n") else result.stdout.text + "\n")
        sys.stdout.flush()
    if result.stderr.text:
        sys.stderr.write(result.stderr.text if result.stderr.text.endswith("\n") else result.stderr.text + "\n")
    colour = {"succeeded": "green", "failed": "red", "rejected": "yellow"}.get(result.status.value, "red")
    d = result.durations
    message = "" if result.message == result.status.value else f" {escape(result.message)}"
    err.print(
        f"[bold {colour}]{result.status.value}[/]{message} · exit {result.exit_code} · "
        f"{d.total:.2f} s (start {d.container_start:.2f} s, run {d.run:.2f} s)"
    )
    for f in result.findings:
        err.print(f"[yellow]safety[/] line {f.get('line')}: {escape(str(f.get('rule')))} {escape(str(f.get('message')))}")
    for name, cap in (("stdout", result.stdout), ("stderr", result.stderr)):
        if cap.truncated:
            err.print(f"[yellow]{name} truncated:[/] {cap.total_bytes} bytes in all, shown in part")
    if result.changes is not None:
        state = result.changes.status.value
        detail = "" if state == "empty" else f" · {state}"
        if state in ("staged", "conflict"):
            detail += f" · {escape(result.changes.note)}"
        err.print(f"changes ({result.write_mode} run): {escape(result.changes.summary)}{detail}")
    err.print(f"audit record: {escape(str(audit_root / result.audit_record))}")


def _request_fields(case: str, timeout: float | None, memory: str | None, cpus: float | None,
                    network: str | None, read_only: bool, env: list[str] | None,
                    working_dir: str | None, requested_by: str | None,
                    write_mode: str | None = None, apply: str | None = None) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        limits = Limits(timeout=timeout, memory=memory, cpus=cpus)
    except ValidationError as exc:
        raise fail(f"bad limits: {exc.errors()[0]['msg']}", EXIT_REJECTED) from None
    return {"case": case, "limits": limits, "network": network, "read_only": read_only,
            "write_mode": write_mode, "apply": apply,
            "env": _parse_env(env), "working_dir": working_dir, "requested_by": requested_by or "cli"}





def _make_request(script: str, fields: dict[str, Any], args: list[str] | None) -> ExecutionRequest:
    from pydantic import ValidationError

    try:
        return ExecutionRequest(script=script, args=list(args or []), **fields)
    except ValidationError as exc:
        raise fail(f"bad request: {exc.errors()[0]['msg']}", EXIT_REJECTED) from None


@app.command()
def run(
    ctx: typer.Context,
    script: Annotated[str, typer.Argument(help="Script relative to the workspace, e.g. Tools/create_file_inventory.py.")],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script (after --).")] = None,
    case: CaseOpt = ..., timeout: TimeoutOpt = None, memory: MemoryOpt = None, cpus: CpusOpt = None,
    network: NetworkOpt = None, read_only: ReadOnlyOpt = False, env: EnvOpt = None,
    working_dir: WorkdirOpt = None, requested_by: ByOpt = None, as_json: JsonOpt = False,
    write_mode: WriteModeOpt = None, apply: ApplyOpt = None,
) -> None:
    """Run a workspace script (.py with python, .sh with bash) on one case."""
    settings = settings_of(ctx)
    fields = _request_fields(case, timeout, memory, cpus, network, read_only, env, working_dir, requested_by,
                             write_mode, apply)
    request = _make_request(script, fields, args)
    _execute(settings, as_json, lambda ex: ex.run(request))


@app.command("run-code")
def run_code(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="File holding the code, or - for stdin.")] = "-",
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script (after --).")] = None,
    case: CaseOpt = ..., name: Annotated[str, typer.Option(help="Name hint; .py or .sh decides the interpreter.")] = "script.py",
    timeout: TimeoutOpt = None, memory: MemoryOpt = None, cpus: CpusOpt = None, network: NetworkOpt = None,
    read_only: ReadOnlyOpt = False, env: EnvOpt = None, working_dir: WorkdirOpt = None,
    requested_by: ByOpt = None, as_json: JsonOpt = False, write_mode: WriteModeOpt = None, apply: ApplyOpt = None,
) -> None:
    """Write code (from a file or stdin) to Database/temp_scripts/ and run it on one case."""
    settings = settings_of(ctx)
    if file == "-":
        code = sys.stdin.read()
    else:
        try:
            code = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read {file}: {exc}", EXIT_REJECTED) from None
        if name == "script.py":
            name = Path(file).name
    if not code.strip():
        raise fail("no code given (empty file or stdin)", EXIT_REJECTED)
    fields = _request_fields(case, timeout, memory, cpus, network, read_only, env, working_dir, requested_by,
                             write_mode, apply)
    fields["args"] = list(args or [])
    _execute(settings, as_json, lambda ex: ex.run_code(code, script_name=name, **fields))


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check the engine, the image and the workspace; print the fix for each problem."""
    from scoperun.doctor import run_checks

    checks = run_checks(settings_of(ctx))
    failed = [c for c in checks if not c.ok and c.severity == "error"]
    if as_json:
        sys.stdout.write(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}, indent=2) + "\n")
    else:
        for c in checks:
            mark = "[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.severity == "error" else "[yellow]warn[/]")
            out.print(f"{mark:>14}  {c.name:<11} {escape(c.detail)}")
            if not c.ok and c.fix:
                out.print(f"{'':>6}fix: [bold]{escape(c.fix)}[/]")
    raise typer.Exit(1 if failed else 0)


@image_app.command("build")
def image_build(
    ctx: typer.Context,
    base: Annotated[str | None, typer.Option(help="Base image (default: python:3.11-slim-bookworm if present, else scoperun-base:bookworm).")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(help="Extra CA bundle (PEM) trusted during the build, for TLS-intercepting proxies.")] = None,
    tag: Annotated[str | None, typer.Option(help="Image tag (default: the configured image).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the inputs are unchanged.")] = False,
    browser: Annotated[bool, typer.Option("--browser", help="Build the browser image (FROM the runner image; --base defaults to it).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the runner (or --browser) image; skipped when an image with the same inputs exists."""
    from scoperun.engine.docker import connect
    from scoperun.engine.images import build_image, default_base_image

    settings = settings_of(ctx)
    if ca_bundle is not None and not ca_bundle.is_file():
        raise fail(f"CA bundle {ca_bundle} does not exist", EXIT_REJECTED)
    try:
        client = connect(settings.docker_host, timeout=600)
        base_image = base or (settings.image if browser else default_base_image(client))
        progress = None if as_json else (lambda line: err.print(f"[dim]{escape(line)}[/]"))
        result = build_image(client, kind="browser" if browser else "runner", base_image=base_image,
                             tag=tag or (settings.browser_image if browser else settings.image),
                             ca_bundle=ca_bundle, force=force, progress=progress)
    except EngineError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None
    if as_json:
        sys.stdout.write(json.dumps(result.__dict__, indent=2) + "\n")
    else:
        verb = "up to date (build skipped)" if result.skipped else "built"
        out.print(f"[green]{escape(result.tag)}[/] {verb}: {result.image_id[:19]} inputs {result.inputs_hash[:12]}")


@app.command()
def demo(
    ctx: typer.Context,
    case: Annotated[str, typer.Option(help="Name of the sample case.")] = "Sample-Client-MVA-1-15-2025",
    as_json: JsonOpt = False,
) -> None:
    """Create a sample workspace, make sure the image exists, and run the inventory tool on the case."""
    from scoperun.sample import create_sample_workspace

    settings = settings_of(ctx)
    root = Path(settings.workspace).expanduser()
    case_dir = create_sample_workspace(root, case_name=case)
    if not as_json:
        out.print(f"sample workspace: [bold]{escape(str(root.resolve()))}[/] (case {escape(case)})")
    _ensure_image(settings, quiet=as_json)
    request = ExecutionRequest(script=f"{settings.tools_dir}/create_file_inventory.py", case=case,
                               args=["--format", "md"], requested_by="scoperun demo")
    if not as_json:
        out.print(f"running {settings.tools_dir}/create_file_inventory.py on {escape(str(case_dir))} ...")
    _execute(settings, as_json, lambda ex: ex.run(request))


def _ensure_image(settings: Settings, *, quiet: bool) -> None:
    from scoperun.engine.docker import connect
    from scoperun.engine.images import build_image, default_base_image

    try:
        client = connect(settings.docker_host, timeout=600)
        try:
            client.images.get(settings.image)
            return
        except Exception:
            pass
        if not quiet:
            err.print(f"image {settings.image} is missing; building it (a few minutes the first time)...")
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        build_image(client, tag=settings.image, base_image=default_base_image(client),
                    ca_bundle=ca if ca.is_file() else None, progress=None if quiet else (lambda l: err.print(f"[dim]{escape(l)}[/]")))
    except EngineError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None


@app.command()
def version() -> None:
    """Print scoperun's version."""
    from scoperun import __version__

    out.print(__version__)


from scoperun.cli.browser import register as _register_browse

_register_browse(app)

from scoperun.cli.audit import register as _register_audit

_register_audit(app)  # audit list|show|reindex|verify, stats

from scoperun.cli.ops import register as _register_ops

_register_ops(app)  # ps, stop, gc, metrics

from scoperun.cli.changes import register as _register_changes

_register_changes(app)

from scoperun.cli.alerts import app as _alerts_app

app.add_typer(_alerts_app, name="alerts")  # alerts check|list

from scoperun.cli.mcp import register as _register_mcp

_register_mcp(app)  # mcp (stdio, or streamable HTTP with a bearer token)

from scoperun.cli.service import register as _register_service

_register_service(app)  # serve, token create|list|revoke


def main() -> None:
    """Entry point of the `scoperun` command."""
    try:
        app()
    except ScopeRunError as exc:  # anything not mapped above: a message, never a traceback
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_ENGINE)
