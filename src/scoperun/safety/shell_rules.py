"""The shell scanner's rules over simple commands, whatever parsed them (bashlex, or the line tokenizer).

A parser hands over pipelines of `Cmd` (words and redirects with their offsets); these rules
decide what is suspicious. Offsets are the parser's own: its `add` callback maps them to lines.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from scoperun.safety.findings import outside_allowed

__all__ = ["DEV_NET", "FETCH_EXEC", "Cmd", "Heredoc", "Tok", "check_pipeline", "heredoc_body"]

Add = Callable[[str, int], None]  # (rule id, offset) -> record a finding


@dataclass
class Tok:
    """One word (quotes and backslashes removed) or operator, and where it starts."""

    text: str
    start: int
    op: bool = False
    body: int | None = None  # a heredoc delimiter: where its body starts (bashlex only)


@dataclass
class Cmd:
    """A simple command: its words, and its redirects as (operator, target)."""

    words: list[Tok] = field(default_factory=list)
    redirects: list[tuple[str, Tok]] = field(default_factory=list)


@dataclass(frozen=True)
class Heredoc:
    """A here-document a pipeline reads: its delimiter word, `<<-` or not, and whether Python reads it."""

    delimiter: Tok
    strip_tabs: bool
    is_python: bool


OUTPUT_OPS = frozenset({">", ">>", ">|", "&>", "&>>"})
_PREFIX_WORDS = frozenset({"!", "then", "do", "else", "elif", "if", "while", "until", "time", "{", "}", "exec",
                           "command", "builtin", "nohup", "env"})
_WRITERS = frozenset({"tee", "touch", "mkdir", "truncate", "chown", "chgrp", "chmod", "mv"})
_COPIERS = frozenset({"cp", "install", "ln"})  # only the last operand is written
_INTERPRETER = re.compile(r"^(?:(?:ba|z|da|k)?sh|python[\d.]*|perl|ruby|node)$")
# `bash <(curl ...)`, `sh -c "$(wget -O- ...)"`: a download executed without a pipe
FETCH_EXEC = re.compile(r"(?:\b(?:ba|z|da|k)?sh|\bpython[\d.]*|\bsource|\beval)\b[^;&|]*?"
                        r"(?:<\(|\$\(|`)\s*(?:curl|wget)\b")
DEV_NET = re.compile(r"/dev/(?:tcp|udp)/")
_SETUID_MODE = re.compile(r"^(?:[ugoa]*[+=][rwxXt]*s|[2-7][0-7]{3})$")


def _argv(cmd: Cmd, unwrap_sudo: bool = True) -> list[Tok]:
    """The command's words without leading keywords, VAR=value words and `sudo -u x`."""
    words, i = cmd.words, 0
    while i < len(words) and (words[i].text in _PREFIX_WORDS or re.match(r"^[A-Za-z_]\w*=", words[i].text)):
        i += 1
    if unwrap_sudo and i < len(words) and _name(words[i:]) in ("sudo", "doas"):
        i += 1  # sudo's options, so that `sudo rm -rf /` is still seen as rm
        while i < len(words) and words[i].text.startswith("-"):
            i += 2 if words[i].text in ("-u", "-g", "-C", "-p") else 1
    return words[i:]


def _name(argv: list[Tok]) -> str:
    return posixpath.basename(argv[0].text) if argv else ""


def _check_command(cmd: Cmd, add: Add) -> None:
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
        targets = [Tok(w.text[3:], w.start) for w in operands if w.text.startswith("of=")]
    for target in targets:
        if outside_allowed(target.text):
            add("sh-write-outside", target.start)


def check_pipeline(pipeline: list[Cmd], add: Add) -> list[Heredoc]:
    """Apply every rule to a pipeline of simple commands; return the here-documents it reads."""
    names = [_name(_argv(c)) for c in pipeline]
    heredocs: list[Heredoc] = []
    for k, cmd in enumerate(pipeline):
        _check_command(cmd, add)
        if names[k] in ("curl", "wget") and any(map(_INTERPRETER.match, names[k + 1:])):
            add("sh-pipe-to-shell", _argv(cmd)[0].start)
        for op, target in cmd.redirects:
            if op in OUTPUT_OPS and outside_allowed(target.text) and not DEV_NET.match(target.text):
                add("sh-write-outside", target.start)
            elif op in ("<<", "<<-"):
                # `cat <<EOF | python3` feeds the body to Python just like `python3 - <<EOF`
                heredocs.append(Heredoc(target, op == "<<-", any(n.startswith("python") for n in names[k:])))
    return heredocs


def heredoc_body(lines: list[str], start: int, heredoc: Heredoc) -> tuple[list[str], int]:
    """The body of a here-document whose first line is `lines[start]`, and the index past its delimiter line."""
    i = start
    while i < len(lines) and (lines[i].lstrip("\t") if heredoc.strip_tabs else lines[i]) != heredoc.delimiter.text:
        i += 1
    return [ln.lstrip("\t") if heredoc.strip_tabs else ln for ln in lines[start:i]], i + 1
