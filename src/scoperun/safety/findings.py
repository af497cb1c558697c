"""What the script scanners report: findings, their rules and severities, and the policy over them.

The `Finding` model itself lives in `scoperun.models` (results carry it); the rules live here.

Shared by the Python scanner (`python.py`) and the shell scanner (`shell.py`).
"""

from __future__ import annotations

import posixpath
import re

from scoperun.errors import ConfigError, SafetyError
from scoperun.models import Finding, Severity
from scoperun.policies import SafetyPolicy

__all__ = ["Finding", "SafetyPolicy", "Severity", "apply_policy", "format_findings", "make_finding",
           "outside_allowed", "sort_findings", "source_lines"]

_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
_ALLOWED_ROOTS = ("/workspace", "/tmp")
_DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})

# rule id -> (severity, why it matters); ids are stable, callers may filter on them
_RULES: dict[str, tuple[Severity, str]] = {
    "os-system": ("high", "runs a shell command: the string is parsed by /bin/sh"),
    "os-exec": ("high", "starts another program directly, bypassing subprocess"),
    "subprocess-shell": ("high", "runs the command through a shell, so text becomes commands"),
    "eval-exec": ("high", "executes code built at run time, which no review can see"),
    "dynamic-import": ("medium", "imports a module whose name is computed at run time"),
    "ctypes": ("high", "loads native code and calls C functions directly"),
    "unsafe-deserialization": ("medium", "loading this format can execute code from the file"),
    "absolute-write": ("medium", "modifies a path outside /workspace and /tmp"),
    "dynamic-attribute": ("medium", "dynamic attribute access on a sensitive module"),
    "syntax-error": ("low", "the script does not parse"),
    "too-complex": ("medium", "expressions are nested too deeply for the scanner to analyse"),
    "sh-pipe-to-shell": ("high", "runs code downloaded from the network"),
    "sh-rm-root": ("high", "recursively deletes the filesystem root"),
    "sh-rm-outside": ("medium", "deletes a path outside /workspace and /tmp"),
    "sh-write-outside": ("medium", "writes a path outside /workspace and /tmp"),
    "sh-eval": ("medium", "eval of a variable executes text built at run time"),
    "sh-setuid": ("high", "sets the setuid/setgid bit, a privilege-escalation pattern"),
    "sh-dev-tcp": ("high", "/dev/tcp and /dev/udp open raw sockets (reverse-shell pattern)"),
    "sh-sudo": ("medium", "asks for root privileges, which the container never grants"),
}

def outside_allowed(path: str) -> bool:
    """True for an absolute path not under /workspace or /tmp and not a standard device."""
    if not path.startswith("/"):
        return False
    norm = posixpath.normpath(path)  # "/workspace/../etc" must count as /etc
    return norm not in _DEVICES and not any(norm == root or norm.startswith(root + "/") for root in _ALLOWED_ROOTS)


def source_lines(source: str) -> list[str]:
    # str.splitlines also splits on \f and \u2028, which would desync from ast line numbers
    return re.split(r"\r\n|\r|\n", source)


def make_finding(rule: str, lines: list[str], line: int, column: int) -> Finding:
    severity, why = _RULES[rule]
    snippet = lines[line - 1].strip()[:120] if 0 < line <= len(lines) else ""
    return Finding(rule=rule, severity=severity, line=line, column=column, message=why, snippet=snippet)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.line, f.column, f.rule))


def apply_policy(findings: list[Finding], policy: SafetyPolicy | str, *, block_at: Severity = "medium") -> None:
    """Raise SafetyError carrying the blocking findings when policy is 'block'; else return."""
    try:
        policy = SafetyPolicy(policy)
    except ValueError:
        raise ConfigError(f"unknown safety policy {policy!r}: use off, warn or block") from None
    if block_at not in _RANK:
        raise ConfigError(f"unknown severity {block_at!r}: use low, medium or high")
    blocking = [f for f in findings if _RANK[f.severity] >= _RANK[block_at]]
    if policy is not SafetyPolicy.block or not blocking:
        return
    listed = "; ".join(f"{f.rule} at line {f.line} ({f.message})" for f in blocking)
    raise SafetyError(
        f"script refused by the safety policy 'block': {len(blocking)} "
        f"finding{'s' if len(blocking) > 1 else ''}: {listed} — rewrite the script without "
        "these calls, or ask an operator to run it with policy 'warn'", findings=blocking)


def format_findings(findings: list[Finding]) -> str:
    """One line per finding, `line 3:4 [high] os-system: why — snippet`; '' for none."""
    return "\n".join(f"line {f.line}:{f.column} [{f.severity}] {f.rule}: {f.message} — {f.snippet}" for f in findings)
