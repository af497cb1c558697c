"""The top-level `scoperun --help` without typer or rich: the same bytes typer prints, from the parts
`helpgen` stored in `helpdata.py` (standard library only).

It answers only where it knows rich's choices exactly (a POSIX UTF-8 stream, a plain or colour
terminal, a width at which no column but the text column would shrink) and only while the stored
parts match the installed CLI sources, typer and rich; otherwise `render` returns None and the app
prints its help as before. A unit test compares both outputs over many widths, with and without
colour.
"""

from __future__ import annotations

import os
import re
import sys
from itertools import pairwise
from typing import Any

# Environment rich or typer read that changes the terminal detection, colours or width: leave them to typer.
_DEFER = ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERMINAL_WIDTH",
          "_TYPER_FORCE_DISABLE_TERMINAL", "JUPYTER_COLUMNS", "JUPYTER_LINES", "SCOPERUN_HELP_SLOW")
# CLI files that shape no help (the dispatch and the lean run path): changing them keeps the stored parts.
_NOT_HELP = ("__init__.py", "remote.py", "helpdata.py")
_WORD = re.compile(r"\s*\S+\s*")
_TRAILING_SPACE = re.compile(r"\s+$")

Segment = tuple[str, str]  # text and SGR codes ("" for none)


def source_key() -> str:
    """What the stored parts depend on: the CLI's sources (contents), typer's and rich's versions."""
    import hashlib

    here = os.path.dirname(os.path.abspath(__file__))
    key = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py") and name not in _NOT_HELP:
            with open(os.path.join(here, name), "rb") as fh:
                key.update(name.encode() + b"\0" + fh.read() + b"\0")
    for dist in ("typer", "rich"):
        key.update(f"{dist}={_version(dist)}\n".encode())
    return key.hexdigest()[:32]


def _version(dist: str) -> str | None:
    """An installed distribution's version from its dist-info folder name (importlib.metadata costs more)."""
    for folder in sys.path:
        try:
            if not os.path.isdir(os.path.join(folder or ".", dist)):
                continue
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(f"{dist}-") and name.endswith(".dist-info"):
                return name[len(dist) + 1:-len(".dist-info")]
        return None
    return None


def terminal() -> tuple[int, bool, bool] | None:
    """Width, colour and NO_COLOR as rich would pick them for stdout; None where fasthelp does not know."""
    env = os.environ
    if os.name != "posix" or any(name in env for name in _DEFER):
        return None
    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8").lower()
    if not encoding.startswith("utf"):
        return None  # rich draws ASCII boxes
    try:
        colour = sys.stdout.isatty()
    except (AttributeError, ValueError):
        return None
    if colour and env.get("TERM", "").strip().lower() in ("dumb", "unknown"):
        return None
    width = 0
    for fd in (0, 1, 2):  # rich asks stdin, stdout, stderr in this order
        try:
            width = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            pass
    columns = env.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    return width or 80, colour, env.get("NO_COLOR", "") != ""


def render(width: int, colour: bool, no_color: bool) -> bytes | None:
    """The top-level help at this width, or None when the stored parts are stale or the width too narrow."""
    try:
        from scoperun.cli import helpdata
    except ImportError:
        return None
    if source_key() != helpdata.KEY:
        return None
    lines = _lines(helpdata.HELP, width, 1 if no_color else 0)
    if lines is None:
        return None
    out = []
    for line in lines:
        out.append("".join(f"\x1b[{sgr}m{text}\x1b[0m" if sgr and colour else text for text, sgr in line))
    return ("\n".join(out) + "\n\n").encode()


def _lines(help: dict[str, Any], width: int, nc: int) -> list[list[Segment]] | None:
    usage = help["usage"]
    style = usage["style"][nc]
    text = _wrap(usage["text"], width - 2, nc, pad_apart=True)
    if text is None or len(text) != 1:
        return None
    lines: list[list[Segment]] = [[(" " * width, style)], [(" ", style), *text[0], (" ", style)],
                                  [(" " * width, style)]]
    for part in help["description"]:
        wrapped = _wrap(part, width - 2, nc, pad_apart=True)
        if wrapped is None:
            return None
        lines.extend([(" ", ""), *line, (" ", "")] for line in wrapped)
    lines.append([(" " * width, "")])
    for panel in help["panels"]:
        table = _table(panel["columns"], width - 4, nc)
        if table is None:
            return None
        border = panel["border"][nc]
        title = f" {panel['title']} "
        lines.append([("╭─", border), (title, border), ("─" * (width - 4 - len(title)), border), ("─╮", border)])
        lines.extend([("│", border), (" ", ""), *row, (" ", ""), ("│", border)] for row in table)
        lines.append([("╰" + "─" * (width - 2) + "╯", border)])
    return lines


def _table(columns: list[dict[str, Any]], width: int, nc: int) -> list[list[Segment]] | None:
    """A borderless typer table `width` wide: fixed columns at their natural width, the last takes the rest."""
    widths = [c["width"] or max((len(cell[0]) for cell in c["cells"]), default=0) for c in columns[:-1]]
    fixed = [w + c["left"] + c["right"] for w, c in zip(widths, columns[:-1], strict=True)]
    fill = columns[-1]
    rest = width - sum(fixed) - fill["left"] - fill["right"]
    # Without a ratio rich shrinks the widest column first: only while the text column stays the widest
    # is the layout this simple.
    if rest < 1 or (not fill["ratio"] and rest + fill["left"] + fill["right"] < max(fixed, default=0)):
        return None
    widths.append(rest)
    cells: list[list[list[list[Segment]]]] = []  # row, column, line, segment
    for column, cell_width in zip(columns, widths, strict=True):
        for index, cell in enumerate(column["cells"]):
            wrapped = _wrap(cell, cell_width, nc, pad_apart=False)
            if wrapped is None:
                return None
            if index == len(cells):
                cells.append([])
            style = column["style"][nc]
            left = [(" " * column["left"], style)] if column["left"] else []
            right = [(" " * column["right"], style)] if column["right"] else []
            cells[index].append([[*left, *line, *right] for line in wrapped])
    rows: list[list[Segment]] = []
    for row in cells:
        height = max(len(cell) for cell in row)
        for i in range(height):
            line: list[Segment] = []
            for column, cell_width, cell in zip(columns, widths, row, strict=True):
                if i < len(cell):
                    line.extend(cell[i])
                else:
                    line.append((" " * (cell_width + column["left"] + column["right"]), column["style"][nc]))
            rows.append(line)
    return rows


def _wrap(text: tuple[str, str, str, list[Any]], width: int, nc: int, *, pad_apart: bool) -> list[list[Segment]] | None:
    """Rich's word wrap of a styled text to `width`, each line padded to it; None if a word would be folded.

    The padding is a segment of its own after a Padding (`pad_apart`); in a table cell it joins the
    last segment when that has only the text's base style (rich pads the text itself there).
    """
    plain, base_c, base_nc, runs = text
    base = (base_c, base_nc)[nc]
    lines: list[list[Segment]] = []
    start = 0
    for paragraph in plain.split("\n"):
        breaks = []
        offset = 0
        for match in _WORD.finditer(paragraph):
            word = match.group()
            length = len(word.rstrip())
            if length > width or not word.isascii():
                return None
            if width - offset >= length:
                offset += len(word)
            elif offset and match.start():
                breaks.append(match.start())
                offset = len(word)
        edges = [0, *breaks, len(paragraph)]
        for a, b in pairwise(edges):
            if b - a > width:  # rich drops trailing white space that passes the width
                trailing = _TRAILING_SPACE.search(paragraph[a:b])
                b -= min(len(trailing.group()) if trailing else 0, b - a - width)
            lines.append(_segments(plain, runs, (start + a, start + b), width - (b - a), base, nc, pad_apart))
        start += len(paragraph) + 1
    return lines


def _segments(plain: str, runs: list[Any], span: tuple[int, int], pad: int, base: str, nc: int,
              pad_apart: bool) -> list[Segment]:
    """One line's segments: rich starts a segment at every span edge, even between equal styles."""
    a, b = span
    out: list[Segment] = []
    last_is_base = True
    for start, end, sgr_c, sgr_nc, is_base in runs:
        lo, hi = max(start, a), min(end, b)
        if lo < hi:
            out.append((plain[lo:hi], (sgr_c, sgr_nc)[nc]))
            last_is_base = is_base
    if pad > 0:
        if out and last_is_base and not pad_apart:
            out[-1] = (out[-1][0] + " " * pad, out[-1][1])
        else:
            out.append((" " * pad, base))
    return out

