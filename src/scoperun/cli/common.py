"""What every command group shares: consoles, exit codes, failure, settings, options and tables.

The command modules import from here, never from each other or from `main` (which only
assembles the app), so the CLI has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from scoperun.cli.summary import (  # the exit codes live with the one summary
    EXIT_ENGINE as EXIT_ENGINE,
)
from scoperun.cli.summary import (
    EXIT_INTERRUPTED as EXIT_INTERRUPTED,
)
from scoperun.cli.summary import (
    EXIT_OK as EXIT_OK,
)
from scoperun.cli.summary import (
    EXIT_OOM as EXIT_OOM,
)
from scoperun.cli.summary import (
    EXIT_PROBLEM as EXIT_PROBLEM,
)
from scoperun.cli.summary import (
    EXIT_REJECTED as EXIT_REJECTED,
)
from scoperun.cli.summary import (
    EXIT_STOPPED as EXIT_STOPPED,
)
from scoperun.cli.summary import (
    EXIT_TIMED_OUT as EXIT_TIMED_OUT,
)
from scoperun.cli.summary import (
    plain as plain,
)
from scoperun.cli.summary import (
    status_parts as status_parts,
)
from scoperun.errors import AuditError, ConfigError, EngineError, ScopeRunError

if TYPE_CHECKING:  # pydantic and the settings load only when a command needs them, never for --help
    from rich.table import Table

    from scoperun.config import Settings
    from scoperun.models import ExecutionResult


def _console(stderr: bool) -> Console:
    """soft_wrap: never wrap paths or ids mid-word; rich honours NO_COLOR (and FORCE_COLOR) itself.
    No emoji codes: a file named `:smile:.txt` or a message quoting one is shown as it is.

    Without colour (piped, not forced) highlighting changes no byte but costs rich's regexes
    (~25-50 ms of a command that prints a summary): it is only on where colour is.
    """
    console = Console(stderr=stderr, soft_wrap=True, emoji=False)
    return console if console.color_system else Console(stderr=stderr, soft_wrap=True, highlight=False, emoji=False)


err = _console(stderr=True)
out = _console(stderr=False)

# The one table of exit codes; README.md's "Exit codes" table is checked against it by a test.
EXIT_CODES: tuple[tuple[str, str], ...] = (
    ("0", "the run succeeded, or the command did what was asked"),
    ("1", "the command found a problem: `audit verify` or `doctor` found one, a conflict kept changes "
          "from being applied, a rollback was refused, a run could not be stopped, or the audit trail "
          "could not be written (nothing ran)"),
    ("2", "bad usage or refused: unknown command, option or value, invalid settings, unknown case, run id "
          "or network, limits beyond the engine's, or a run rejected by the scope or safety checks "
          "(nothing ran)"),
    ("124", "the run timed out; its container was killed"),
    ("125", "the Docker engine is unreachable or failed (the same in every command)"),
    ("130", "interrupted with Ctrl-C; the run's container was removed and its record says so"),
    ("137", "the run was killed for using more memory than its limit"),
    ("143", "the run was stopped by `scoperun stop` (or cancelled)"),
    ("other", "the run failed: the script's own exit code (1-255); `--json` tells it apart from the above"),
)


def exit_code_for(result: ExecutionResult) -> int:
    """Map a result to the CLI's exit status (see EXIT_CODES)."""
    from scoperun.cli.summary import exit_code

    return exit_code(result.status.value, result.exit_code)


def code_for_error(exc: BaseException) -> int:
    """One exit code per kind of scoperun error, in every command."""
    if isinstance(exc, EngineError):
        return EXIT_ENGINE
    if isinstance(exc, AuditError):
        return EXIT_PROBLEM
    return EXIT_REJECTED


def fail(message: str, code: int = EXIT_REJECTED) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {safe(message)}")
    return typer.Exit(code)


def fail_on(exc: ScopeRunError, hint: str = "") -> typer.Exit:
    """`fail` with the message of `exc` (plus a hint) and the exit code its kind has everywhere."""
    return fail(f"{exc}{hint}", code_for_error(exc))


def settings_of(ctx: typer.Context) -> Settings:
    """The settings for this invocation (global options over env and scoperun.toml)."""
    from scoperun.config import load_settings

    overrides: dict[str, Any] = (ctx.find_root().obj if ctx.find_root().obj is not None else ctx.obj) or {}
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None


def is_quiet(ctx: typer.Context | None) -> bool:
    """True when `--quiet` was given: only results and errors are printed."""
    return bool(ctx is not None and ctx.find_root().meta.get("scoperun.quiet"))


def markup(line: list[tuple[str, str]]) -> str:
    """A summary line (`summary.summary_lines`: styled segments of plain text) as rich markup."""
    return "".join(f"[{style}]{escape(text)}[/]" if style else escape(text) for style, text in line)


def safe(text: object) -> str:
    """`plain(text)` made safe to print with rich markup on."""
    return escape(plain(text))


shown = safe  # the name the change-set views use


def status_line(status: str, message: str) -> str:
    """`status_parts` joined: e.g. `failed: the script exited with code 7`."""
    head, rest = status_parts(status, message)
    return head + rest


# -- tables that never cut an id ----------------------------------------------------------------

_GAP = 2  # columns are separated by one space of padding on each side


@dataclass(frozen=True)
class Col:
    """A table column: `keep` columns (ids) are never cut or folded; `drop` > 0 may be left out to fit
    (highest first); the others fold onto more lines when the terminal is narrow."""

    header: str
    keep: bool = False
    drop: int = 0
    justify: str = "left"
    min_fold: int = 10


def fitted_table(console: Console, cols: list[Col], rows: list[list[Any]], *, title: str | None = None,
                 width: int | None = None) -> tuple[Table | None, list[str]]:
    """A table for `console` in which ids are whole; returns it (None: too narrow for any table) and
    the headers left out to fit.

    Piped (not a terminal), nothing is folded or left out: lines are as long as they need to be.
    """
    from rich.table import Table

    texts = [[c if isinstance(c, Text) else Text.from_markup(c) if isinstance(c, str) else Text(str(c))
              for c in row] for row in rows]
    natural = [max([len(col.header)] + [r[i].cell_len for r in texts]) for i, col in enumerate(cols)]
    shown = list(range(len(cols)))
    widths = list(natural)
    if width is None:
        width = console.width if console.is_terminal else sum(natural) + _GAP * len(cols)
    # Whole cells first, leaving out optional columns one by one; then fold what is left.
    order = sorted((i for i in shown if cols[i].drop > 0), key=lambda i: (-cols[i].drop, -i))

    def fits(keep: list[int]) -> bool:
        return sum(natural[i] for i in keep) + _GAP * (len(keep) - 1) <= width

    while not fits(shown) and order:
        shown.remove(order.pop(0))
    if not fits(shown):
        folded = _fit(cols, natural, shown, width)
        if folded is None:  # too narrow even folded: one "header: value" line per cell, ids whole
            return None, [cols[i].header for i in range(len(cols)) if i not in shown]
        widths = folded
    table = Table(box=None, pad_edge=False, show_edge=False, title=title, title_justify="left",
                  title_style="bold", header_style="bold")
    for i in shown:
        col = cols[i]
        table.add_column(col.header, justify=col.justify,  # type: ignore[arg-type]
                         no_wrap=col.keep, overflow="fold" if not col.keep else "ignore",
                         width=widths[i], min_width=widths[i])
    for row in texts:
        table.add_row(*(row[i] for i in shown))
    return table, [cols[i].header for i in range(len(cols)) if i not in shown]


def _fit(cols: list[Col], natural: list[int], shown: list[int], width: int) -> list[int] | None:
    """Widths (by column index) that fit `width` by folding the foldable columns, or None."""
    widths = list(natural)
    room = width - _GAP * (len(shown) - 1) - sum(natural[i] for i in shown if cols[i].keep)
    foldable = [i for i in shown if not cols[i].keep]
    if sum(natural[i] for i in foldable) <= room:
        return widths
    floors = {i: min(natural[i], cols[i].min_fold) for i in foldable}
    if sum(floors.values()) > room:
        return None
    # Water-filling: every foldable column gets an equal share, capped at what it needs.
    left, todo = room, sorted(foldable, key=lambda i: natural[i])
    while todo:
        share = left // len(todo)
        i = todo.pop(0)
        widths[i] = max(floors[i], min(natural[i], share))
        left -= widths[i]
    return widths


def print_table(console: Console, cols: list[Col], rows: list[list[Any]], *, title: str | None = None) -> None:
    """Print a fitted table and, below it, which columns were left out (and how to see them)."""
    table, dropped = fitted_table(console, cols, rows, title=title)
    if table is None:
        if title:
            console.print(f"[bold]{escape(title)}[/]")
        for row in rows:
            for col, cell in zip(cols, row, strict=True):
                console.print(f"{'' if col is cols[0] else '  '}{escape(col.header)}: ", end="")
                console.print(cell if isinstance(cell, str | Text) else str(cell))
        return
    needed = sum(c.width or 0 for c in table.columns) + _GAP * max(0, len(table.columns) - 1)
    if console.is_terminal:
        console.print(table)
    else:
        # Piped, a console is 80 columns wide by default: print the table as wide as it needs instead.
        saved = console._width
        console.width = max(needed, len(title or ""), console.width)
        try:
            console.print(table)
        finally:
            console._width = saved
    if dropped:
        console.print(f"[dim]({', '.join(dropped)} left out to fit {console.width} columns; "
                      f"a wider terminal or --json shows them)[/]")


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
