"""`fasthelp`: the top-level `scoperun --help` without typer or rich is byte for byte what typer prints
(pipes and terminals, colour and NO_COLOR, many widths, `-h`, a bare `scoperun`), and defers wherever
it does not know rich's choices or its stored parts are stale."""

from __future__ import annotations

import fcntl
import importlib
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from scoperun.cli import fasthelp, helpdata, helpgen

HEAVY = {"typer", "rich", "click", "pydantic", "docker", "scoperun.cli.main", "scoperun.config"}
CALL = ("import json, sys; sys.argv = ['scoperun', *sys.argv[1:]]; from scoperun.cli import main\n"
        "try:\n    main()\nfinally:\n    sys.stdout.flush()\n"
        "    print(json.dumps(sorted(sys.modules)), file=sys.stderr)")


def _typer_help(width: int, colour: bool, no_color: bool) -> bytes:
    """What typer's own formatter prints for the whole app on a console of this width and colour."""
    import typer.main
    from typer import rich_utils

    group = typer.main.get_command(importlib.import_module("scoperun.cli.main").app)
    buffer = io.StringIO()
    original = rich_utils._get_rich_console

    def console(stderr: bool = False):  # type: ignore[no-untyped-def]
        made = original(stderr)
        made.file, made._width, made._force_terminal, made.no_color = buffer, width, colour, no_color
        made._color_system = made._detect_color_system() if colour else None
        return made

    rich_utils._get_rich_console = console  # type: ignore[assignment]
    try:
        ctx = group.context_class(group, info_name="scoperun")
        rich_utils.rich_format_help(obj=group, ctx=ctx, markup_mode=group.rich_markup_mode)  # type: ignore[attr-defined]
    finally:
        rich_utils._get_rich_console = original
    return (buffer.getvalue() + "\n").encode()  # click's echo of the (empty) help string


def test_stored_parts_are_what_helpgen_makes_now() -> None:
    """helpdata.py is current: regenerate it with `python -m scoperun.cli.helpgen` after changing the CLI."""
    assert Path(helpdata.__file__).read_text() == helpgen.render_module(), "run: python -m scoperun.cli.helpgen"
    assert fasthelp.source_key() == helpdata.KEY


@pytest.mark.parametrize("colour,no_color", [(False, False), (True, False), (True, True)])
def test_fast_help_is_typers_help_at_every_width(colour: bool, no_color: bool) -> None:
    """At widths from 57 to 300 fasthelp prints typer's bytes; narrower it defers (None) rather than guess."""
    answered = []
    for width in [*range(45, 95), *range(95, 301, 13)]:
        got = fasthelp.render(width, colour, no_color)
        if got is not None:
            assert got == _typer_help(width, colour, no_color), width
            answered.append(width)
    assert min(answered) <= 60 and set(range(60, 95)) <= set(answered)


def test_stale_parts_or_an_unknown_terminal_defer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts keyed to other sources, FORCE_COLOR, TERMINAL_WIDTH or a non-UTF-8 stream: fasthelp answers None."""
    assert fasthelp.render(100, False, False) is not None
    monkeypatch.setattr(helpdata, "KEY", "0" * 32)
    assert fasthelp.render(100, False, False) is None
    monkeypatch.undo()
    for name in ("FORCE_COLOR", "TERMINAL_WIDTH", "TTY_COMPATIBLE", "SCOPERUN_HELP_SLOW"):
        monkeypatch.setenv(name, "1")
        assert fasthelp.terminal() is None, name
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="latin-1"))
    assert fasthelp.terminal() is None


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "TERM")}
    return {**env, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TERM": "xterm-256color"} | extra


def _piped(args: list[str], env: dict[str, str]) -> tuple[int, bytes, set[str]]:
    proc = subprocess.run([sys.executable, "-c", CALL, *args], capture_output=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, set(json.loads(proc.stderr.decode().strip().splitlines()[-1]))


def _on_terminal(args: list[str], env: dict[str, str], columns: int) -> tuple[int, bytes]:
    """Run the entry point with stdout on a pseudo-terminal of `columns` columns."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", CALL, *args], stdin=subprocess.DEVNULL, stdout=child,
                            stderr=subprocess.DEVNULL, env=env)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed with the child
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(timeout=120), out


def test_help_through_the_entry_point_is_the_apps_and_loads_nothing_heavy(tmp_path: Path) -> None:
    """`--help`, `-h` and a bare `scoperun` print the app's bytes (same status) with neither typer, rich, click,
    pydantic, docker nor the app loaded; through a pipe at several widths and under NO_COLOR."""
    for extra in ({"COLUMNS": "60"}, {}, {"COLUMNS": "133", "NO_COLOR": "1"}, {"COLUMNS": "220"}):
        slow_env = _env(tmp_path, SCOPERUN_HELP_SLOW="1", **extra, XDG_CACHE_HOME=str(tmp_path / "slow"))
        code, slow, _ = _piped(["--help"], slow_env)
        assert code == 0 and b"Usage: scoperun" in slow
        for args, status, text in ((["--help"], 0, slow), (["-h"], 0, slow), ([], 2, slow[:-1])):
            code, fast, loaded = _piped(args, _env(tmp_path, **extra))
            assert (code, fast) == (status, text), (args, extra)
            assert not loaded & HEAVY, sorted(loaded & HEAVY)
    assert not (tmp_path / "cache").exists()  # the fast path needs no cache


def test_help_on_a_terminal_is_the_apps_in_colour(tmp_path: Path) -> None:
    """On a terminal (colour, and NO_COLOR's bold and dim only) `--help` and a bare `scoperun` print the app's bytes."""
    for columns, extra in ((80, {}), (117, {"NO_COLOR": "1"})):
        code, slow = _on_terminal(["--help"], _env(tmp_path, SCOPERUN_HELP_SLOW="1", **extra), columns)
        assert code == 0 and b"\x1b[" in slow
        assert _on_terminal(["--help"], _env(tmp_path, **extra), columns) == (0, slow)
        assert _on_terminal([], _env(tmp_path, **extra), columns) == (2, slow[:-2])  # the pty writes \r\n
