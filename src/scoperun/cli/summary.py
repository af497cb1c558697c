"""The one summary of a run (status, exit, timings, findings, changes, audit record) and its exit code,
from the result as plain JSON data: the full CLI renders it with rich, the lean remote path as text.

Standard library only: `scoperun run-code` through a server imports this without pydantic or rich.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["exit_code", "plain", "status_parts", "summary_lines"]

Line = list[tuple[str, str]]  # (style, text) segments; style "" is plain text

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_REJECTED = 2
EXIT_TIMED_OUT = 124
EXIT_ENGINE = 125
EXIT_INTERRUPTED = 130
EXIT_OOM = 137
EXIT_STOPPED = 143


def exit_code(status: str, script_exit: int | None) -> int:
    """Map a result's status (and the script's exit code) to the CLI's exit status (see EXIT_CODES)."""
    if status == "succeeded":
        return EXIT_OK
    if status == "failed":
        return script_exit if script_exit and 0 < script_exit < 256 else EXIT_PROBLEM
    return {"timed_out": EXIT_TIMED_OUT, "oom_killed": EXIT_OOM, "rejected": EXIT_REJECTED,
            "cancelled": EXIT_STOPPED}.get(status, EXIT_ENGINE)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(text: object, *, lines: bool = False) -> str:
    """`text` with control characters shown as escapes (ESC as \\x1b, a newline as \\n).

    A run controls file names, its output and `requested_by`: an ESC sequence, a bidi override
    or a newline in them could forge or erase lines of a review view. `lines=True` keeps
    newlines and tabs (captured output shown as lines), escaping everything else.
    """
    s = str(text)
    pattern = _CONTROL if lines else _CONTROL_OR_BREAK
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s) if pattern.search(s) else s


def status_parts(status: str, message: str) -> tuple[str, str]:
    """The status as shown and the rest of the message, without saying the status twice.

    Messages often start with their status ("rejected (network): ...", "timed out after 2 s"):
    then the message is shown as it is, its first words styled as the status.
    """
    words = status.replace("_", " ")
    text = message.strip()
    for prefix in (status, words):
        if text.lower().startswith(prefix):
            rest = text[len(prefix):]
            return text[:len(prefix)], "" if not rest.strip(" :;,.") else rest
    return status, f": {text}" if text else ""


_COLOUR = {"succeeded": "green", "failed": "red", "rejected": "yellow", "cancelled": "yellow"}


def summary_lines(result: dict[str, Any], root: Path, notes: list[str], *, quiet: bool = False) -> list[Line]:
    """The summary printed on stderr after a run's output: `result` is the result's JSON form
    (`model_dump(mode="json")`), `notes` what was cut of its output. Every text is `plain`."""
    note_lines: list[Line] = [[("yellow", plain(note))] for note in notes]
    status_value = result["status"]
    if quiet and status_value == "succeeded":
        return note_lines
    status, rest = status_parts(status_value, result.get("message") or "")
    head: Line = [(f"bold {_COLOUR.get(status_value, 'red')}", plain(status)), ("", plain(rest))]
    parts: list[str] = []
    if status_value == "rejected":
        parts.append("nothing ran")
    else:
        if result.get("exit_code") is not None:
            parts.append(f"exit {result['exit_code']}")
        d = result.get("durations") or {}
        start, run = d.get("container_start", 0.0), d.get("run", 0.0)
        timing = f"{d.get('total', 0.0):.2f} s"
        if start or run:
            timing += f" (start {start:.2f} s, run {run:.2f} s)"
        parts.append(timing)
    lines: list[Line] = [head + [("", " · " + part) for part in parts]]
    if quiet:  # a run that did not succeed still says why (and what was cut), nothing more
        return lines + note_lines
    for f in result.get("findings") or []:
        lines.append([("yellow", "safety"), ("", f" line {f['line']}: {plain(f['rule'])} {plain(f['message'])}")])
    lines += note_lines
    changes = result.get("changes")
    if changes is not None:
        state = changes["status"]
        detail = "" if state == "empty" else f" · {state}"
        if state in ("staged", "conflict"):
            detail += f" · {plain(changes.get('note', ''))}"
        lines.append([("", f"changes ({result.get('write_mode', '')} run): {plain(changes.get('summary', ''))}{detail}")])
    lines.append([("", f"audit record: {plain(root / result['audit_record'])}")])
    return lines


def as_text(line: Line) -> str:
    """A summary line without styles (what rich prints where there is no colour)."""
    return "".join(text for _, text in line)
