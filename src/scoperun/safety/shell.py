"""The shell half of the script scanner: a quote-aware tokenizer and a small rule set for bash.

Advice, not a sandbox (see safety/python.py): the container is the boundary.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from scoperun.safety.findings import Finding, make_finding, outside_allowed, sort_findings, source_lines
from scoperun.safety.python import scan_python

__all__ = ["scan_shell_source"]


@dataclass
class _Tok:
    text: str  # quotes and backslashes removed
    start: int  # offset in the logical line
    op: bool = False


@dataclass
class _Cmd:
    words: list[_Tok] = field(default_factory=list)
    redirects: list[tuple[str, _Tok]] = field(default_factory=list)


# longest first, so that ">>" is not read as ">" ">"
_OPS = ("&>>", "<<<", "<<-", ">>", "&&", "||", ";;", "<<", ">|", "&>", ">&", "<&", "|&", ">", "<", "|", "&", ";", "(",
        ")")
_OUTPUT_OPS = frozenset({">", ">>", ">|", "&>", "&>>"})
_PREFIX_WORDS = frozenset({"!", "then", "do", "else", "elif", "if", "while", "until", "time", "{", "}", "exec",
                           "command", "builtin", "nohup", "env"})
_WRITERS = frozenset({"tee", "touch", "mkdir", "truncate", "chown", "chgrp", "chmod", "mv"})
_COPIERS = frozenset({"cp", "install", "ln"})  # only the last operand is written
_INTERPRETER = re.compile(r"^(?:(?:ba|z|da|k)?sh|python[\d.]*|perl|ruby|node)$")
# `bash <(curl ...)`, `sh -c "$(wget -O- ...)"`: a download executed without a pipe
_FETCH_EXEC = re.compile(r"(?:\b(?:ba|z|da|k)?sh|\bpython[\d.]*|\bsource|\beval)\b[^;&|]*?"
                         r"(?:<\(|\$\(|`)\s*(?:curl|wget)\b")
_DEV_NET = re.compile(r"/dev/(?:tcp|udp)/")
_SETUID_MODE = re.compile(r"^(?:[ugoa]*[+=][rwxXt]*s|[2-7][0-7]{3})$")


def _tokenize(line: str) -> tuple[list[_Tok], int]:
    """Split a logical line into words and operators; also return where a comment starts."""
    toks: list[_Tok] = []
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
            toks.append(_Tok(op, start, True))
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
        toks.append(_Tok("".join(buf), start))
    return toks, n


def _pipelines(toks: list[_Tok]) -> list[list[_Cmd]]:
    """Group tokens into pipelines of simple commands; a redirect takes the next word."""
    pipelines: list[list[_Cmd]] = [[_Cmd()]]
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.op and tok.text in ("|", "|&"):
            pipelines[-1].append(_Cmd())
        elif tok.op and tok.text in (";", "&&", "||", "&", "(", ")", ";;"):
            pipelines.append([_Cmd()])
        elif tok.op and i + 1 < len(toks) and not toks[i + 1].op:
            pipelines[-1][-1].redirects.append((tok.text, toks[i + 1]))
            i += 1
        elif not tok.op:
            pipelines[-1][-1].words.append(tok)
        i += 1
    return pipelines


def _argv(cmd: _Cmd, unwrap_sudo: bool = True) -> list[_Tok]:
    """The command's words without leading keywords, VAR=value words and `sudo -u x`."""
    words, i = cmd.words, 0
    while i < len(words) and (words[i].text in _PREFIX_WORDS or re.match(r"^[A-Za-z_]\w*=", words[i].text)):
        i += 1
    if unwrap_sudo and i < len(words) and _name(words[i:]) in ("sudo", "doas"):
        i += 1  # sudo's options, so that `sudo rm -rf /` is still seen as rm
        while i < len(words) and words[i].text.startswith("-"):
            i += 2 if words[i].text in ("-u", "-g", "-C", "-p") else 1
    return words[i:]


def _name(argv: list[_Tok]) -> str:
    return posixpath.basename(argv[0].text) if argv else ""


def _check_command(cmd: _Cmd, add: Callable[[str, int], None]) -> None:
    """Apply the per-command rules (sudo, rm, eval, writes, chmod) to one simple command."""
    wrapped = _argv(cmd, unwrap_sudo=False)
    if _name(wrapped) in ("sudo", "doas", "su"):
        add("sh-sudo", wrapped[0].start)
    argv = _argv(cmd)
    name = _name(argv)
    options = [w for w in argv[1:] if w.text.startswith("-")]
    operands = [w for w in argv[1:] if not w.text.startswith("-")]
    if name == "rm":
        recursive = any(o.text == "--recursive" or (o.text[1:2] != "-" and set(o.text) & {"r", "R"}) for o in options)
        for target in operands:
            if recursive and posixpath.normpath(target.text) in ("/", "/*"):
                add("sh-rm-root", argv[0].start)
            elif outside_allowed(target.text):
                add("sh-rm-outside", argv[0].start)
    elif name == "eval" and any("$" in w.text or "`" in w.text for w in argv[1:]):
        add("sh-eval", argv[0].start)
    elif name == "chmod" and any(_SETUID_MODE.match(mode) for w in argv[1:2] + options
                                 for mode in w.text.lstrip("-").split(",")):
        add("sh-setuid", argv[0].start)
    targets = operands if name in _WRITERS else operands[-1:] if name in _COPIERS and len(operands) > 1 else []
    if name == "dd":
        targets = [_Tok(w.text[3:], w.start) for w in operands if w.text.startswith("of=")]
    for target in targets:
        if outside_allowed(target.text):
            add("sh-write-outside", target.start)


def scan_shell_source(source: str) -> list[Finding]:
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
        for m in _DEV_NET.finditer(text[:code_end]):
            add("sh-dev-tcp", m.start())
        for m in _FETCH_EXEC.finditer(text[:code_end]):
            add("sh-pipe-to-shell", m.start())
        heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, is Python)
        for pipeline in _pipelines(toks):
            names = [_name(_argv(c)) for c in pipeline]
            for k, cmd in enumerate(pipeline):
                _check_command(cmd, add)
                if names[k] in ("curl", "wget") and any(map(_INTERPRETER.match, names[k + 1:])):
                    add("sh-pipe-to-shell", _argv(cmd)[0].start)
                for op, target in cmd.redirects:
                    if op in _OUTPUT_OPS and outside_allowed(target.text) and not _DEV_NET.match(target.text):
                        add("sh-write-outside", target.start)
                    elif op in ("<<", "<<-"):
                        # `cat <<EOF | python3` feeds the body to Python just like `python3 - <<EOF`
                        heredocs.append((target.text, op == "<<-", any(n.startswith("python") for n in names[k:])))
        for delimiter, strip_tabs, is_python in heredocs:
            body_start = i
            while i < len(lines) and (lines[i].lstrip("\t") if strip_tabs else lines[i]) != delimiter:
                i += 1
            body = [ln.lstrip("\t") if strip_tabs else ln for ln in lines[body_start:i]]
            i += 1  # the delimiter line
            if is_python:  # `python3 - <<'EOF'` is how agents inline Python in bash
                for f in scan_python("\n".join(body)):
                    moved = f.model_copy(update={"line": f.line + body_start})
                    found.setdefault((f.rule, moved.line, f.column), moved)
    return sort_findings(list(found.values()))
