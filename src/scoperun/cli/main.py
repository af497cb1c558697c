"""The `scoperun` command line: run, run-code, doctor, demo, image build (+ audit, stats, ps, stop, gc, metrics).

Exit status: one table for every command, `common.EXIT_CODES` (also in the README).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperCommand

from scoperun.cli.common import (
    EXIT_ENGINE,
    EXIT_INTERRUPTED,
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
    code_for_error,
    err,
    exit_code_for,
    fail,
    is_quiet,
    out,
    safe,
    settings_of,
    status_parts,
)
from scoperun.errors import EngineError, ScopeRunError

if TYPE_CHECKING:  # pydantic loads when a command runs, never to build the app or print --help
    from scoperun.config import Settings
    from scoperun.models import ExecutionRequest, ExecutionResult, Limits


class ScriptCommand(TyperCommand):
    """A command whose script takes its own arguments: an unknown option gets a hint about `--`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:  # click's NoSuchOption (typer vendors click: match it by name)
            if type(exc).__name__ == "NoSuchOption":
                exc.message += (f". If it is the script's own option, put the script's arguments after `--`: "  # type: ignore[attr-defined]
                                f"scoperun {ctx.info_name} SCRIPT --case CASE -- {exc.option_name} ...")  # type: ignore[attr-defined]
            raise

# `app` (module attribute) is the whole app; `main` adds only the command groups its command line needs.
_app = typer.Typer(add_completion=False, no_args_is_help=True,
                   help="Run scripts on case files in scoped, hardened containers.")


def _version(value: bool) -> None:
    if value:
        from scoperun import __version__

        out.print(f"scoperun {__version__}")
        raise typer.Exit()


@_app.callback()
def _main(
    ctx: typer.Context,
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace root (default: $SCOPERUN_WORKSPACE or ./workspace).")] = None,
    image: Annotated[str | None, typer.Option(help="Runner image (default: $SCOPERUN_IMAGE or scoperun-runner:latest).")] = None,
    backend: Annotated[str | None, typer.Option(help="docker (one engine) or swarm (docker_host is a swarm manager).")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only results and errors (no progress, notes or summaries).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print scoperun's version and exit.")] = False,
) -> None:
    """Run scripts on case files in scoped, hardened containers. Colour follows NO_COLOR / FORCE_COLOR."""
    overrides: dict[str, Any] = {}
    if backend is not None:
        overrides["backend"] = backend
    if workspace is not None:
        overrides["workspace"] = workspace
    if image is not None:
        overrides["image"] = image
    ctx.obj = overrides
    ctx.meta["scoperun.quiet"] = quiet


def _parse_env(pairs: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise fail(f"--env {pair!r} must look like NAME=value", EXIT_REJECTED)
        env[name] = value
    return env


def _execute(settings: Settings, as_json: bool, call: Any, *, quiet: bool = False) -> None:
    """Run `call(executor)` with a spinner on a terminal; print and exit with the mapped code.

    With SCOPERUN_URL set, `call` gets a client of that server instead: output streams live and
    Ctrl-C cancels the run there.
    """
    if settings.url:
        from scoperun.cli.service import execute_remote

        result = execute_remote(settings, as_json, call)
        # The output was printed live as it came: only the summary is left to print.
        from scoperun.models import OutputCapture

        shown = result if as_json else result.model_copy(update={"stdout": OutputCapture(), "stderr": OutputCapture()})
        _print_result(shown, as_json, Path(settings.workspace).expanduser().resolve())
        raise typer.Exit(exit_code_for(result))
    from scoperun.executor import Executor

    # One run per process: warm containers would outlive their use (and cost their start-up).
    executor = Executor(settings.model_copy(update={"pool": False}))
    try:
        if not as_json and not quiet and err.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(SpinnerColumn(), TextColumn("running in a container"), TimeElapsedColumn(),
                          console=err, transient=True) as progress:
                progress.add_task("run", total=None)
                result = call(executor)
        else:
            result = call(executor)
    except KeyboardInterrupt as exc:
        executor.close()
        execution_id = getattr(exc, "scoperun_execution_id", None)
        where = f": {execution_id}" if execution_id else ""
        err.print(f"[bold yellow]interrupted[/] (Ctrl-C): the run was stopped and its container removed; "
                  f"its audit record says so{safe(where)}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except ScopeRunError as exc:
        raise fail(str(exc), code_for_error(exc)) from None
    finally:
        executor.close()
    _print_result(result, as_json, Path(settings.workspace).expanduser().resolve(), quiet=quiet)
    raise typer.Exit(exit_code_for(result))


_OMITTED = re.compile(rb"\n\[\.\.\. \d+ bytes omitted by scoperun \.\.\.\]\n")
_KEPT_FIRST = re.compile(rb"\n\[\.\.\. scoperun kept the first (\d+) of (\d+) bytes \.\.\.\]\n$")


def _stream_bytes(cap: Any, root: Path) -> tuple[bytes, str | None]:
    """The stream byte for byte as far as scoperun kept it, and a note of what is missing (None: all)."""
    if cap.full_output:
        try:
            data = (root / cap.full_output).read_bytes()
        except OSError:
            data = None
        if data is not None:
            cut = _KEPT_FIRST.search(data[-200:])
            if cut is None:
                return data, None
            data = data[: len(data) - len(cut.group(0))]
            return data, (f"{cap.total_bytes} bytes in all; the first {len(data)} written "
                          f"(full_output_limit); the rest was not kept")
    raw = cap.text.encode("utf-8")
    if not cap.truncated:
        return raw, None
    head = _OMITTED.split(raw, maxsplit=1)[0]
    return head, (f"{cap.total_bytes} bytes in all; only the first {len(head)} were kept "
                  f"(no full copy: full_output_limit = 0)")


def _print_result(result: ExecutionResult, as_json: bool, root: Path, *, quiet: bool = False) -> None:
    """The script's output on stdout/stderr, then a summary on stderr.

    Piped, stdout is the script's stdout byte for byte, read from the full copy kept beside the
    record (up to its limit), never the capped text with its marker; what was cut is said on stderr.
    """
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    notes: list[str] = []
    for name, cap, stream in (("stdout", result.stdout, sys.stdout), ("stderr", result.stderr, sys.stderr)):
        if not cap.total_bytes:
            continue
        if stream.isatty():
            text = cap.text
            stream.write(text if text.endswith("\n") else text + "\n")
            if cap.truncated:
                where = f"; in full: {root / cap.full_output}" if cap.full_output else ""
                notes.append(f"{name}: {cap.total_bytes} bytes, shown in part (head and tail){where}")
        else:
            data, cut = _stream_bytes(cap, root)
            stream.flush()
            stream.buffer.write(data)
            if name == "stderr" and not data.endswith(b"\n"):
                stream.buffer.write(b"\n")  # the summary below starts on its own line
            stream.buffer.flush()
            where = f"; full copy: {root / cap.full_output}" if cap.full_output else ""
            if cut:
                notes.append(f"{name} cut: {cut}{where}")
            elif cap.truncated:
                notes.append(f"{name}: all {len(data)} bytes written (the result keeps only the head and "
                             f"tail){where}")
    if quiet and result.status.value == "succeeded":
        for note in notes:
            err.print(f"[yellow]{safe(note)}[/]")
        return
    colour = {"succeeded": "green", "failed": "red", "rejected": "yellow", "cancelled": "yellow"}.get(
        result.status.value, "red")
    status, rest = status_parts(result.status.value, result.message)
    parts = [f"[bold {colour}]{safe(status)}[/]{safe(rest)}"]
    d = result.durations
    if result.status.value == "rejected":
        parts.append("nothing ran")
    else:
        if result.exit_code is not None:
            parts.append(f"exit {result.exit_code}")
        timing = f"{d.total:.2f} s"
        if d.container_start or d.run:
            timing += f" (start {d.container_start:.2f} s, run {d.run:.2f} s)"
        parts.append(timing)
    err.print(" · ".join(parts))
    if quiet:  # a run that did not succeed still says why (and what was cut), nothing more
        for note in notes:
            err.print(f"[yellow]{safe(note)}[/]")
        return
    for f in result.findings:
        err.print(f"[yellow]safety[/] line {f.line}: {safe(f.rule)} {safe(f.message)}")
    for note in notes:
        err.print(f"[yellow]{safe(note)}[/]")
    if result.changes is not None:
        state = result.changes.status.value
        detail = "" if state == "empty" else f" · {state}"
        if state in ("staged", "conflict"):
            detail += f" · {safe(result.changes.note)}"
        err.print(f"changes ({result.write_mode} run): {safe(result.changes.summary)}{detail}")
    err.print(f"audit record: {safe(root / result.audit_record)}")


def _request_fields(case: str, timeout: float | None, memory: str | None, cpus: float | None,
                    network: str | None, read_only: bool, env: list[str] | None,
                    working_dir: str | None, requested_by: str | None,
                    write_mode: str | None = None, apply: str | None = None) -> dict[str, Any]:
    from pydantic import ValidationError

    from scoperun.models import Limits

    try:
        limits = Limits(timeout=timeout, memory=memory, cpus=cpus)
    except ValidationError as exc:
        raise fail(f"bad limits: {exc.errors()[0]['msg']}", EXIT_REJECTED) from None
    return {"case": case, "limits": limits, "network": network, "read_only": read_only,
            "write_mode": write_mode, "apply": apply,
            "env": _parse_env(env), "working_dir": working_dir, "requested_by": requested_by or "cli"}


def _preflight(settings: Settings, fields: dict[str, Any]) -> None:
    """Refuse (exit 2) a network the engine lacks or limits beyond its CPUs/memory, before anything runs.

    Only what can fail is asked: a named network, and limits given on the command line or set
    away from their defaults.
    """
    if getattr(settings, "url", None):
        return  # runs go to a scoperun server (SCOPERUN_URL): its engine, not this machine's, decides
    from scoperun.config import Settings, parse_memory
    from scoperun.engine.preflight import preflight

    limits: Limits = fields["limits"]
    network = fields.get("network") or settings.network
    defaults = Settings.model_fields
    cpus = limits.cpus if limits.cpus is not None else (
        settings.cpus if settings.cpus != defaults["cpus"].default else None)
    memory = limits.memory if limits.memory is not None else (
        settings.memory if settings.memory != defaults["memory"].default else None)
    if network in ("bridge", "none") and cpus is None and memory is None:
        return
    from scoperun.engine.docker import connect

    try:
        client = connect(settings.docker_host, timeout=30)
        try:
            problems = preflight(client, network=network, cpus=cpus,
                                 memory_bytes=parse_memory(memory) if memory is not None else None)
        finally:
            client.close()
    except EngineError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None
    if problems:
        for p in problems[1:]:
            err.print(f"[bold red]error:[/] {safe(p.message)}")
        raise fail(problems[0].message, EXIT_REJECTED)


def _make_request(script: str, fields: dict[str, Any], args: list[str] | None) -> ExecutionRequest:
    from pydantic import ValidationError

    from scoperun.models import ExecutionRequest

    try:
        return ExecutionRequest(script=script, args=list(args or []), **fields)
    except ValidationError as exc:
        raise fail(f"bad request: {exc.errors()[0]['msg']}", EXIT_REJECTED) from None


@_app.command(cls=ScriptCommand)
def run(
    ctx: typer.Context,
    script: Annotated[str, typer.Argument(help="Script relative to the workspace, e.g. Tools/create_file_inventory.py.")],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script (after --).")] = None,
    case: CaseOpt = ...,  # type: ignore[assignment]  # typer: a required option after optional arguments
    timeout: TimeoutOpt = None, memory: MemoryOpt = None, cpus: CpusOpt = None,
    network: NetworkOpt = None, read_only: ReadOnlyOpt = False, env: EnvOpt = None,
    working_dir: WorkdirOpt = None, requested_by: ByOpt = None, as_json: JsonOpt = False,
    write_mode: WriteModeOpt = None, apply: ApplyOpt = None,
) -> None:
    """Run a workspace script (.py with python, .sh with bash) on one case."""
    settings = settings_of(ctx)
    fields = _request_fields(case, timeout, memory, cpus, network, read_only, env, working_dir, requested_by,
                             write_mode, apply)
    request = _make_request(script, fields, args)
    _preflight(settings, fields)
    _execute(settings, as_json, lambda ex: ex.run(request), quiet=is_quiet(ctx))


@_app.command("run-code", cls=ScriptCommand)
def run_code(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="File holding the code, or - for stdin.")] = "-",
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script (after --).")] = None,
    case: CaseOpt = ...,  # type: ignore[assignment]  # typer: a required option after optional arguments
    name: Annotated[str, typer.Option(help="Name hint; .py or .sh decides the interpreter.")] = "script.py",
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
    _preflight(settings, fields)
    _execute(settings, as_json, lambda ex: ex.run_code(code, script_name=name, **fields), quiet=is_quiet(ctx))


@_app.command()
def doctor(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    backend: Annotated[str | None, typer.Option(help="Check this backend (swarm: manager, labelled nodes, image and workspace on each).")] = None,
) -> None:
    """Check the engine, the image and the workspace; print the fix for each problem."""
    from scoperun.doctor import run_checks

    settings = settings_of(ctx)
    if backend is not None:
        if backend not in ("docker", "swarm"):
            raise fail(f"--backend must be docker or swarm, not {backend!r}", EXIT_REJECTED)
        settings = settings.model_copy(update={"backend": backend})
    checks = run_checks(settings)
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


@_app.command()
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
    from scoperun.cli.image import ensure_image
    from scoperun.models import ExecutionRequest

    ensure_image(settings, quiet=as_json)
    request = ExecutionRequest(script=f"{settings.tools_dir}/create_file_inventory.py", case=case,
                               args=["--format", "md"], requested_by="scoperun demo")
    if not as_json:
        out.print(f"running {settings.tools_dir}/create_file_inventory.py on {escape(str(case_dir))} ...")
    _execute(settings, as_json, lambda ex: ex.run(request))


@_app.command()
def version() -> None:
    """Print scoperun's version."""
    from scoperun import __version__

    out.print(__version__)


# The command groups, each added by its module's `register(app)` in the order `--help` lists them,
# with the top-level names each adds: a command line naming one of them builds only that module.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("image", ("image",)),  # image build|push-nodes
    ("firewall", ("firewall",)),
    ("browser", ("browse",)),
    ("audit", ("audit", "stats")),  # audit list|show|reindex|verify, stats
    ("ops", ("ps", "stop", "gc", "metrics")),
    ("changes", ("changes", "apply", "discard", "rollback")),
    ("alerts", ("alerts",)),  # alerts check|list
    ("files", ("cases", "files")),  # cases, files ls|cat|read|find|put|get
    ("mcp", ("mcp",)),  # mcp (stdio, or streamable HTTP with a bearer token)
    ("service", ("serve", "logs", "token")),  # serve, logs, token create|list|revoke
    ("completion", ("completion",)),  # completion show|install
)
_GLOBAL_VALUED = ("--workspace", "-w", "--image", "--backend")  # the callback's options that take a value
_registered: set[str] = set()


def _register(modules: set[str]) -> None:
    import importlib

    for module, _ in GROUPS:
        if module in modules and module not in _registered:
            _registered.add(module)
            importlib.import_module(f"scoperun.cli.{module}").register(_app)


def groups_for(argv: list[str]) -> set[str]:
    """The command groups a command line needs: none for a command of this module, the one that adds its
    command, or all (help, completion, or a command click must judge: its error suggests among all)."""
    everything = {module for module, _ in GROUPS}
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_VALUED:
            next(words, None)
        elif word in ("--quiet", "-q") or word.startswith(tuple(f"{o}=" for o in _GLOBAL_VALUED if o[1] == "-")):
            continue
        elif word.startswith("-"):
            return everything
        elif word in {info.name or getattr(info.callback, "__name__", "").lower().replace("_", "-")
                      for info in _app.registered_commands}:
            return set()
        else:
            return next(({module} for module, names in GROUPS if word in names), everything)
    return everything


def __getattr__(name: str) -> Any:
    if name == "app":
        _register({module for module, _ in GROUPS})
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the `scoperun` command."""
    import os

    from scoperun.cli.completion import COMPLETE_VAR

    if os.environ.get(COMPLETE_VAR):
        from scoperun.cli.completion import enable

        enable()
        _register({module for module, _ in GROUPS})
    else:
        _register(groups_for(sys.argv[1:]))
    try:
        _app(prog_name="scoperun")
    except ScopeRunError as exc:  # anything not mapped above: a message, never a traceback
        err.print(f"[bold red]error:[/] {safe(exc)}")
        sys.exit(code_for_error(exc))
