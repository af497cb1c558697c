"""One exception hierarchy for scoperun.

    ScopeRunError                 root: catch this to catch everything scoperun raises
    ├── ConfigError               settings are invalid or contradict each other
    ├── WorkspaceError            the workspace is missing or not usable
    ├── ScopeError                a path or case name leaves the scope it must stay in
    │   └── FileAccessError       a case file cannot be read or written as asked (binary, special, too big)
    ├── SafetyError               the script scanner's policy refused a script
    ├── AuditError                an audit record could not be written (nothing runs then)
    ├── FirewallError             the host firewall (iptables) could not be read or changed
    ├── EngineError               the container engine failed or is unreachable
    │   └── ImageError            an image is missing or could not be built
    ├── UnsupportedScriptError    the script's kind cannot be run (not .py or .sh)
    ├── BrowserActionError        a browser request (URL or action list) is invalid; nothing ran
    ├── ChangesError              a change set cannot be staged, applied, discarded or rolled back
    │   └── ChangedSinceError     rollback refused: files changed since the apply (`paths`)
    └── ServiceError              a `scoperun serve` refused or failed a request (`status`, `code`)

A script's non-zero exit is data in the result, never an exception. Every message says what
to do next.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "BrowserActionError",
    "ChangedSinceError",
    "ChangesError",
    "ConfigError",
    "EngineError",
    "FileAccessError",
    "FirewallError",
    "ImageError",
    "SafetyError",
    "ScopeError",
    "ScopeRunError",
    "ServiceError",
    "UnsupportedScriptError",
    "WorkspaceError",
]


class ScopeRunError(Exception):
    """Root of every error scoperun raises."""


class ConfigError(ScopeRunError):
    """Settings are invalid."""


class WorkspaceError(ScopeRunError):
    """The workspace is missing, unreadable or not writable."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ScopeError(ScopeRunError):
    """A path, case or script name leaves the scope it must stay in."""

    def __init__(self, message: str, *, rule: str, value: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.value = value


class FileAccessError(ScopeError):
    """A file in a case cannot be read or written as asked (binary, special file, too big); `rule` says why."""


class SafetyError(ScopeRunError):
    """The scanner's policy refused the script; `findings` says why."""

    def __init__(self, message: str, *, findings: list | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


class AuditError(ScopeRunError):
    """An audit record could not be written; the run did not start."""


class FirewallError(ScopeRunError):
    """iptables is missing, not permitted, or refused a rule."""


class EngineError(ScopeRunError):
    """The container engine is unreachable or failed."""


class ImageError(EngineError):
    """An image is missing or its build failed."""


class UnsupportedScriptError(ScopeRunError):
    """The script is not a kind scoperun knows how to run."""


class BrowserActionError(ScopeRunError, ValueError):
    """A browser request is invalid (e.g. a file: URL or an unknown action); `problems` lists each."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ChangesError(ScopeRunError):
    """A run's change set cannot be staged, shown, applied, discarded or rolled back."""

    def __init__(self, message: str, *, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class ChangedSinceError(ChangesError):
    """Rollback refused: `paths` changed in the case since the run's changes were applied."""

    def __init__(self, message: str, *, execution_id: str | None = None, paths: list[str] | None = None) -> None:
        super().__init__(message, execution_id=execution_id)
        self.paths = paths or []


class ServiceError(ScopeRunError):
    """A `scoperun serve` answered with a problem (or could not be reached); `code` is its stable code."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "unreachable",
                 problem: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.problem = problem or {}
