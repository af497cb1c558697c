"""The shell scanner's fallback parser: a quote-aware tokenizer that reads a script line by line.

bashlex (see shell.py) raises on some valid bash (arrays, `[[ ]]`, `case`, ...); this tokenizer
reads anything, so a script bashlex cannot parse is still scanned, never reported clean.
"""

from __future__ import annotations

import re

from scoperun.models import Finding
from scoperun.safety.findings import make_finding, sort_findings, source_lines
from scoperun.safety.python import scan_python
from scoperun.safety.shell_rules import DEV_NET, FETCH_EXEC, Cmd, Heredoc, Tok, check_pipeline, heredoc_body

__all__ = ["scan_lines"]

# longest first, so that ">>" is not read as ">" ">"
_OPS = ("&>>", "<<<", "<<-", ">>", "&&", "||", ";;", "<<", ">|", "&>", ">&", "<&", "|&", ">", "<", "|", "&", ";", "(",
        ")")


def _tokenize(line: str) -> tuple[list[Tok], int]:
    """Split a logical line into words and operators; also return where a comment starts."""
    toks: list[Tok] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] == "#":  # a comment only starts at the beginning of a word
            return toks, i
        start = i
        if m := re.match(r"\d+(?=[<>])", line[i:]):  # "2>" is one redirect operator
            i += m.end()
        if op := next((o for o in _OPS if line.startswith(o, i)), None):
            toks.append(Tok(op, start, True))
            i += len(op)
            continue
        buf: list[str] = []
        while i < n and line[i] not in " \t;&|<>()":
            if line[i] == "\\":
                buf.append(line[i + 1:i + 2])
                i += 2
            elif (quote := line[i]) in "'\"`":  # `...` is kept whole, like $(...)
                j = i + 1
                while j < n and line[j] != quote:
                    j += 2 if quote != "'" and line[j] == "\\" else 1
                buf.append(line[i:j + 1] if quote == "`" else line[i + 1:j])
                i = j + 1
            elif line.startswith("$(", i):  # keep $(...) whole, parentheses and all
                depth, j = 0, i + 1
                while j < n and (depth := depth + {"(": 1, ")": -1}.get(line[j], 0)) > 0:
                    j += 1
                buf.append(line[i:j + 1])
                i = j + 1
            else:
                buf.append(line[i])
                i += 1
        toks.append(Tok("".join(buf), start))
    return toks, n


def _pipelines(toks: list[Tok]) -> list[list[Cmd]]:
    """Group tokens into pipelines of simple commands; a redirect takes the next word."""
    pipelines: list[list[Cmd]] = [[Cmd()]]
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.op and tok.text in ("|", "|&"):
            pipelines[-1].append(Cmd())
        elif tok.op and tok.text in (";", "&&", "||", "&", "(", ")", ";;"):
            pipelines.append([Cmd()])
        elif tok.op and i + 1 < len(toks) and not toks[i + 1].op:
            pipelines[-1][-1].redirects.append((tok.text, toks[i + 1]))
            i += 1
        elif not tok.op:
            pipelines[-1][-1].words.append(tok)
        i += 1
    return pipelines


def scan_lines(source: str) -> list[Finding]:
    """Scan a bash script line by line; a Python heredoc body is scanned as Python."""
    lines = source_lines(source)
    found: dict[tuple[str, int, int], Finding] = {}
    segments: list[tuple[int, int]] = []  # (offset in the logical line, physical line index)

    def add(rule: str, offset: int) -> None:
        seg_offset, index = next(s for s in reversed(segments) if s[0] <= offset)
        finding = make_finding(rule, lines, index + 1, offset - seg_offset + 1)
        found.setdefault((rule, finding.line, finding.column), finding)

    i = 0
    while i < len(lines):
        segments, text = [(0, i)], lines[i]
        # an odd number of trailing backslashes continues the line
        while (len(text) - len(text.rstrip("\\"))) % 2 == 1 and i + 1 < len(lines):
            i += 1
            segments.append((len(text) - 1, i))
            text = text[:-1] + lines[i]
        i += 1
        toks, code_end = _tokenize(text)
        for m in DEV_NET.finditer(text[:code_end]):
            add("sh-dev-tcp", m.start())
        for m in FETCH_EXEC.finditer(text[:code_end]):
            add("sh-pipe-to-shell", m.start())
        heredocs: list[Heredoc] = []
        for pipeline in _pipelines(toks):
            heredocs += check_pipeline(pipeline, add)
        for heredoc in heredocs:
            body_start = i
            body, i = heredoc_body(lines, i, heredoc)
            if heredoc.is_python:  # `python3 - <<'EOF'` is how agents inline Python in bash
                add_python(found, body, body_start)
    return sort_findings(list(found.values()))


def add_python(found: dict[tuple[str, int, int], Finding], body: list[str], body_start: int) -> None:
    """Scan a here-document body read by Python as Python; its lines count from `body_start` (0-based)."""
    for f in scan_python("\n".join(body)):
        moved = f.model_copy(update={"line": f.line + body_start})
        found.setdefault((f.rule, moved.line, f.column), moved)


