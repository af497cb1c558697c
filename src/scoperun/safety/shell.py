"""The shell half of the script scanner: bash parsed by bashlex, then a small rule set (shell_rules.py).

Advice, not a sandbox (see safety/python.py): the container is the boundary. bashlex reads a
script as bash does (quotes across lines, subshells, `$(...)`, backquotes and `<(...)`, whose
commands are checked too). Where bashlex cannot parse, the line tokenizer (shell_lines.py) scans.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from typing import Any

from scoperun.models import Finding
from scoperun.safety.findings import make_finding, sort_findings, source_lines
from scoperun.safety.shell_lines import add_python, scan_lines
from scoperun.safety.shell_rules import DEV_NET, FETCH_EXEC, Cmd, Heredoc, Tok, check_pipeline, heredoc_body

__all__ = ["parse", "scan_shell_source"]

# bashlex expects a quoted here-document delimiter to end with the quotes (idank/bashlex#99), and
# `python3 - <<'EOF'` is how agents inline Python. The body is never parsed either way, so the
# quotes become spaces: same length, so every offset stays that of the script.
_QUOTED_DELIMITER = re.compile(r"""<<(-?)([ \t]*)(?:'([\w.-]+)'|"([\w.-]+)"|\\([\w.-]+))""")


def _plain_delimiters(source: str) -> str:
    def plain(m: re.Match[str]) -> str:
        head = f"<<{m[1]}{m[2]}{m[3] or m[4] or m[5]}"
        return head + " " * (len(m[0]) - len(head))

    return _QUOTED_DELIMITER.sub(plain, source)


# bashlex takes ~1 s per 40 KB on a loaded host, the line tokenizer a tenth of that; a script this
# large is not what agents write, and the scan runs before the container starts.
MAX_PARSED = 64 * 1024


def parse(source: str) -> list[Any] | None:
    """bashlex's trees of a script, or None when bashlex cannot read it (or it exceeds MAX_PARSED)."""
    import bashlex

    if len(source) > MAX_PARSED:
        return None
    try:
        return list(bashlex.parse(_plain_delimiters(source)))
    except Exception:  # noqa: BLE001
        # bashlex raises (ParsingError, NotImplementedError, AttributeError, RecursionError, ...)
        # on valid bash it does not know: arrays, `[[ ]]`, `case`, a script of comments only.
        return None


def _children(node: Any) -> Iterator[Any]:
    """The nodes below `node`, without here-document bodies (never code) and without a function's
    `body` (also among its parts)."""
    for name in ("parts", "list", "redirects"):
        yield from getattr(node, name, None) or ()
    for name in ("command", "output"):
        child = getattr(node, name, None)
        if hasattr(child, "kind"):
            yield child


class _TreeScan:
    """Findings of one parsed script: rules per pipeline, regexes over its code, Python heredocs."""

    def __init__(self, source: str) -> None:
        self.source, self.lines = source, source_lines(source)
        self.starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", source)]  # as source_lines splits
        self.found: dict[tuple[str, int, int], Finding] = {}
        self.code: list[tuple[int, int]] = []  # spans of commands and words: not comments, not heredoc bodies
        self.bodies: list[tuple[int, int]] = []
        self.heredocs: list[Heredoc] = []

    def add(self, rule: str, offset: int) -> None:
        index = bisect.bisect_right(self.starts, offset) - 1
        finding = make_finding(rule, self.lines, index + 1, offset - self.starts[index] + 1)
        self.found.setdefault((rule, finding.line, finding.column), finding)

    def scan(self, trees: list[Any]) -> list[Finding]:
        for tree in trees:
            self.walk(tree)
        for rule, pattern in (("sh-dev-tcp", DEV_NET), ("sh-pipe-to-shell", FETCH_EXEC)):
            for m in pattern.finditer(self.source):
                if self._in(m.start(), self.code) and not self._in(m.start(), self.bodies):
                    self.add(rule, m.start())
        for heredoc in self.heredocs:
            if heredoc.is_python and heredoc.delimiter.body is not None:  # `python3 - <<'EOF'`
                start = bisect.bisect_right(self.starts, heredoc.delimiter.body) - 1
                add_python(self.found, heredoc_body(self.lines, start, heredoc)[0], start)
        return sort_findings(list(self.found.values()))

    @staticmethod
    def _in(offset: int, spans: list[tuple[int, int]]) -> bool:
        return any(start <= offset < end for start, end in spans)

    def walk(self, node: Any) -> None:
        if node.kind == "pipeline":
            self.pipeline([p for p in node.parts if p.kind not in ("pipe", "reservedword")])
        elif node.kind in ("command", "compound"):
            self.pipeline([node])
        else:
            if node.kind in ("word", "assignment"):
                self.code.append(tuple(node.pos))
            for child in _children(node):
                self.walk(child)

    def pipeline(self, elements: list[Any]) -> None:
        self.heredocs += check_pipeline([self.command(e) for e in elements], self.add)
        for element in elements:
            if element.kind == "command":
                self.code.append(tuple(element.pos))
            for child in _children(element):  # subshells, loops, `$(...)` inside words, ...
                self.walk(child)

    def command(self, node: Any) -> Cmd:
        """A simple command's words and redirects; a compound one (`{ ...; } > f`) has redirects only."""
        cmd = Cmd()
        parts = node.parts if node.kind == "command" else getattr(node, "redirects", None)
        for part in parts or ():
            if part.kind in ("word", "assignment"):
                cmd.words.append(Tok(part.word, part.pos[0]))
            elif part.kind == "redirect" and getattr(part.output, "kind", None) == "word":
                heredoc = getattr(part, "heredoc", None)
                if heredoc is not None:
                    self.bodies.append(tuple(heredoc.pos))
                cmd.redirects.append((part.type, Tok(part.output.word, part.output.pos[0],
                                                     body=heredoc.pos[0] if heredoc is not None else None)))
        return cmd


def scan_shell_source(source: str) -> list[Finding]:
    """Scan a bash script; a Python heredoc body is scanned as Python.

    A script bashlex cannot parse is scanned line by line instead (shell_lines.py), so it is
    never reported clean for want of a parser.
    """
    trees = parse(source)
    if trees is None:
        return scan_lines(source)
    return _TreeScan(source).scan(trees)
