"""What every command group shares: consoles, exit codes, failure, settings and common options.

The command modules import from here, never from each other or from `main` (which only
assembles the app), so the CLI has no import cycle.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from scoperun.config import Settings, load_settings
from scoperun.errors import ConfigError
from scoperun.models import ExecutionResult, Status

_BIDI = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F}


def plain(text: object, *, lines: bool = False) -> str:
    """`text` with every control character shown escaped (ESC as \\x1b, newline as \\n), safe for a terminal.

    A run controls file names, its output and `requested_by`; an ESC sequence or a newline in
    them could forge or erase lines of a review view. `lines=True` keeps newlines and tabs
    (captured output), escaping everything else.
    """
    out_chars = []
    for ch in str(text):
        code = ord(ch)
        if lines and ch in "\n\t":
            out_chars.append(ch)
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or code in _BIDI:
            out_chars.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out_chars.append(ch)
    return "".join(out_chars)


def shown(text: object) -> str:
    """`plain(text)` escaped for rich markup too: what every human view prints of untrusted text."""
    return escape(plain(text))


err = Console(stderr=True, soft_wrap=True)  # never wrap paths or ids mid-word
out = Console(soft_wrap=True)

EXIT_PROBLEM = 1
EXIT_REJECTED = 2
EXIT_TIMED_OUT = 124
EXIT_ENGINE = 125
EXIT_OOM = 137


def exit_code_for(result: ExecutionResult) -> int:
    """Map a result to the CLI's exit status."""
    if result.status is Status.SUCCEEDED:
        return 0
    if result.status is Status.FAILED:
        return result.exit_code if result.exit_code and 0 < result.exit_code < 256 else 1
    return {Status.TIMED_OUT: EXIT_TIMED_OUT, Status.OOM_KILLED: EXIT_OOM,
            Status.REJECTED: EXIT_REJECTED}.get(result.status, EXIT_ENGINE)


def fail(message: str, code: int = EXIT_REJECTED) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings for this invocation (global options over env and scoperun.toml)."""
    overrides: dict[str, Any] = (ctx.find_root().obj if ctx.find_root().obj is not None else ctx.obj) or {}
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None


CaseOpt = Annotated[str, typer.Option("--case", "-c", help="Case folder name under projects/.")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Seconds before the run is killed (default 300).")]
MemoryOpt = Annotated[str | None, typer.Option(help="Memory limit, e.g. 512m, 2g (default 1g).")]
CpusOpt = Annotated[float | None, typer.Option(help="CPU quota in cores (default 0.5).")]
NetworkOpt = Annotated[str | None, typer.Option(help="bridge (internet), none, or a Docker network name.")]
ReadOnlyOpt = Annotated[bool, typer.Option("--read-only", help="Mount the case read-only.")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=value for the script (repeatable).")]
WorkdirOpt = Annotated[str | None, typer.Option("--working-dir", help="Subfolder of the case to run in.")]
ByOpt = Annotated[str | None, typer.Option("--requested-by", help="Who asked (agent, thread or user id) for the audit.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
WriteModeOpt = Annotated[str | None, typer.Option("--write-mode", help="staged (default), direct or read-only.")]
ApplyOpt = Annotated[str | None, typer.Option("--apply", help="Staged runs: on-success (default), never, always.")]
