"""Writes `helpdata.py`: what typer's top-level `--help` is made of (texts, styles, table columns), so
`fasthelp` can print the same bytes without typer or rich. Development-time only (it builds the app):

    .venv/bin/python -m scoperun.cli.helpgen

A unit test fails when the stored data differs from what this produces, or when `fasthelp`'s output
differs from typer's; `fasthelp` also refuses data whose key (CLI sources, typer and rich versions)
does not match the installed ones.
"""

from __future__ import annotations

import importlib
import pprint
from itertools import pairwise
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("helpdata.py")

Run = tuple[int, int, str, str, bool]
TextData = tuple[str, str, str, list[Run]]


def _sgr(style: Any) -> tuple[str, str]:
    """The SGR codes of a rich style, in colour and under NO_COLOR (the same in every colour system)."""
    from rich.color import ColorSystem

    codes = {style._make_ansi_codes(system) for system in (ColorSystem.STANDARD, ColorSystem.EIGHT_BIT,
                                                            ColorSystem.TRUECOLOR)}
    if len(codes) != 1:
        raise ValueError(f"style {style} renders differently per colour system: extend fasthelp")
    return codes.pop(), style.without_color._make_ansi_codes(ColorSystem.TRUECOLOR)


def _text(console: Any, text: Any, outer: Any) -> TextData:
    """A rich Text as plain text, base style and runs split where rich splits segments (every span edge)."""
    from rich.style import Style

    plain = text.plain
    base = outer + console.get_style(text.style, default=Style.null())
    edges = sorted({0, len(plain)} | {min(max(p, 0), len(plain)) for s in text.spans for p in (s.start, s.end)})
    runs: list[Run] = []
    for start, end in pairwise(edges):
        active = [s for s in text.spans if s.start <= start and s.end >= end]
        style = Style.combine([base, *(console.get_style(s.style, default=Style.null()) for s in active)])
        runs.append((start, end, *_sgr(style), not active))
    return (plain, *_sgr(base), runs)


def collect() -> dict[str, Any]:
    """Run typer's own help formatter for the top-level app and keep what it prints, as plain data."""
    import typer.main
    from rich.align import Align
    from rich.columns import Columns
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text
    from typer import rich_utils

    app = importlib.import_module("scoperun.cli.main").app  # the module (the package exports a function `main`)
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="scoperun")
    console = rich_utils._get_rich_console()
    printed: list[tuple[Any, Any]] = []

    class Recorder:
        def print(self, renderable: Any, style: Any = None) -> None:
            printed.append((renderable, console.get_style(style) if style else Style.null()))

    original = rich_utils._get_rich_console
    rich_utils._get_rich_console = lambda stderr=False: Recorder()  # type: ignore[assignment,return-value]
    try:
        rich_utils.rich_format_help(obj=group, ctx=ctx, markup_mode=group.rich_markup_mode)  # type: ignore[attr-defined]
    finally:
        rich_utils._get_rich_console = original
    (usage, usage_style), (description, _), *panels = printed
    assert isinstance(usage, Padding) and isinstance(usage.renderable, Text) and (usage.top, usage.left) == (1, 1)
    assert isinstance(description, Padding) and isinstance(description.renderable, Align)
    assert (description.top, description.right, description.bottom, description.left) == (0, 1, 1, 1)
    texts = description.renderable.renderable.renderables  # type: ignore[union-attr]  # typer's @group()
    assert all(isinstance(t, Text) for t in texts)
    data: dict[str, Any] = {
        "usage": {"style": _sgr(usage_style), "text": _text(console, usage.renderable, usage_style)},
        "description": [_text(console, t, Style.null()) for t in texts],
        "panels": [],
    }
    for panel, _ in panels:
        assert isinstance(panel, Panel) and isinstance(panel.renderable, Table) and panel.title_align == "left"
        table = panel.renderable
        assert table.expand and not table.show_header and table.box is None and not table.pad_edge
        assert table.padding == (0, 1, 0, 1) and not table.show_lines and not table.leading
        columns = []
        for index, column in enumerate(table.columns):
            cells = []
            for cell in column._cells:
                if isinstance(cell, Columns):
                    assert len(cell.renderables) == 1, "option help with defaults or env vars: extend fasthelp"
                    cell = cell.renderables[0]
                assert isinstance(cell, Text) and cell.justify is None and cell.end == "\n"
                cells.append(_text(console, cell, console.get_style(column.style, default=Style.null())))
            assert column.justify == "left" and column.vertical == "top" and column.overflow == "ellipsis"
            columns.append({
                "style": _sgr(console.get_style(column.style, default=Style.null())),
                "width": column.width,
                "ratio": column.ratio,
                "fill": index == len(table.columns) - 1,
                "left": 0 if index == 0 else 1,
                "right": 0 if index == len(table.columns) - 1 else 1,
                "cells": cells,
            })
        fill = columns[-1]
        assert fill["width"] is None and all(c["ratio"] is None and not c["fill"] for c in columns[:-1])
        assert fill["ratio"] or all(isinstance(c, Columns) for c in table.columns[-1]._cells)
        title = panel.title
        assert isinstance(title, str)
        data["panels"].append({"title": title, "border": _sgr(console.get_style(panel.border_style)),
                               "columns": columns})
    return data


def render_module() -> str:
    """The text of `helpdata.py` for the CLI as it is now."""
    from scoperun.cli import fasthelp

    return ('"""Generated by `python -m scoperun.cli.helpgen` (do not edit): the top-level help\'s parts."""\n\n'
            f"KEY = {fasthelp.source_key()!r}\n"
            f"HELP = {pprint.pformat(collect(), width=120, sort_dicts=False)}\n")


if __name__ == "__main__":
    DATA.write_text(render_module())
    print(f"wrote {DATA}")
