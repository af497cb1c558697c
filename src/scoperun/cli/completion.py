"""`scoperun completion show|install`: tab completion for bash, zsh, fish and PowerShell.

Completion itself is served by the command (`_SCOPERUN_COMPLETE=complete_bash scoperun`), set
up by `main.main` only when that variable is present, so ordinary start-up pays nothing.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from scoperun.cli.common import EXIT_REJECTED, fail, out

PROG = "scoperun"
COMPLETE_VAR = "_SCOPERUN_COMPLETE"
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")

completion_app = typer.Typer(no_args_is_help=True, help="Tab completion for your shell.")
ShellArg = Annotated[str | None, typer.Argument(help=f"One of {', '.join(SHELLS)} (default: from $SHELL).")]


def enable() -> None:
    """Register typer's completion classes (bash, zsh, ...) with click; call before the app runs."""
    from typer._completion_classes import completion_init

    completion_init()


def _shell(shell: str | None) -> str:
    name = shell or os.path.basename(os.environ.get("SHELL", "")) or "bash"
    if name not in SHELLS:
        raise fail(f"shell {name!r} is not supported; give one of {', '.join(SHELLS)}", EXIT_REJECTED)
    return name


@completion_app.command("show")
def show(shell: ShellArg = None) -> None:
    """Print the completion script (e.g. `scoperun completion show bash > ~/.bash_completions/scoperun.sh`)."""
    from typer._completion_shared import get_completion_script

    out.file.write(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=_shell(shell)) + "\n")


@completion_app.command("install")
def install(shell: ShellArg = None) -> None:
    """Install completion for your shell (its rc file sources the script); open a new shell afterwards."""
    from typer._completion_shared import install as typer_install

    name = _shell(shell)
    shell_name, path = typer_install(shell=name, prog_name=PROG, complete_var=COMPLETE_VAR)
    out.print(f"{shell_name} completion installed in {path}; open a new shell (or `source` your rc file).",
              highlight=False)


def register(app: typer.Typer) -> None:
    """Add `completion` to the main app."""
    app.add_typer(completion_app, name="completion")
