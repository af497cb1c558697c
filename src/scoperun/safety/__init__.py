"""Advice and defences around a run: script scanners (Python AST, bash), hazards a run left in its
case, redaction of secrets, and the host firewall. The container is the boundary; these help.
"""

from __future__ import annotations

from typing import Literal

from scoperun.errors import ConfigError
from scoperun.safety.findings import Finding, SafetyPolicy, apply_policy, format_findings
from scoperun.safety.python import scan_python
from scoperun.safety.shell import scan_shell_source

__all__ = ["Finding", "SafetyPolicy", "apply_policy", "format_findings", "scan_python", "scan_script", "scan_shell"]


def scan_shell(source: str) -> list[Finding]:
    """Scan a bash script line by line; a Python heredoc body is scanned as Python."""
    return scan_shell_source(source)


def scan_script(source: str, *, kind: Literal["python", "shell"]) -> list[Finding]:
    """Scan a script of the given kind; findings are sorted by line, then column."""
    if kind == "python":
        return scan_python(source)
    if kind == "shell":
        return scan_shell(source)
    raise ConfigError(f"unknown script kind {kind!r}: use 'python' or 'shell'")
