"""Typed models at scoperun's boundaries: what a caller asks for and what a run produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from scoperun.changeset import ChangeSet
from scoperun.policies import ApplyPolicy, SafetyPolicy, Status, WriteMode

__all__ = [
    "is_execution_id",
    "Durations",
    "ExecutionRequest",
    "ExecutionResult",
    "Finding",
    "Hazard",
    "HazardKind",
    "Limits",
    "OutputCapture",
    "ResolvedLimits",
    "RunEvent",
    "Severity",
    "Status",
]

_ENV_NAME_OK = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Variables scoperun sets itself; a caller may not override them.
RESERVED_ENV = frozenset({"EXECUTION_ID", "CASE_NAME", "WORKSPACE_ROOT", "HOME", "PATH"})


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def is_execution_id(value: str) -> bool:
    """Whether `value` can be an execution id: 1-100 letters, digits, `_` or `-` (safe as a file name)."""
    return 0 < len(value) <= 100 and set(value) <= _ID_CHARS


class Limits(BaseModel):
    """Per-run resource limits; None means the configured default."""

    model_config = ConfigDict(extra="forbid")

    timeout: float | None = Field(None, gt=0, le=24 * 3600, description="Seconds before the run is killed.")
    memory: str | None = Field(None, description="Memory limit, e.g. 512m or 2g (swap equal).")
    cpus: float | None = Field(None, gt=0, le=64, description="CPU quota in cores.")
    pids_limit: int | None = Field(None, ge=16, description="Maximum processes in the container.")

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str | None) -> str | None:
        if value is not None:
            from scoperun.config import parse_memory

            parse_memory(value)
        return value


class ResolvedLimits(BaseModel):
    """The limits a run got: the request's, else its program's, else the configured defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(description="Seconds before the run is killed.")
    memory: str = Field(description="Memory limit as given, e.g. 1g (swap equal).")
    cpus: float = Field(description="CPU quota in cores.")
    pids_limit: int = Field(description="Maximum processes in the container.")


class ExecutionRequest(BaseModel):
    """One script to run on one case."""

    model_config = ConfigDict(extra="forbid")

    script: str = Field(description="Script path relative to the workspace, e.g. Tools/create_file_inventory.py.")
    case: str = Field(description="Case folder name under projects/, e.g. Caryn-McCay-MVA-7-30-2023.")
    args: list[str] = Field(default_factory=list, description="Command-line arguments for the script.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    working_dir: str | None = Field(None, description="Subfolder of the case to run in (default: the case).")
    limits: Limits = Field(default_factory=Limits)
    network: str | None = Field(None, description="bridge, none, or a Docker network name; None = default.")
    read_only: bool = Field(False, description="Mount the case read-only (alias of write_mode='read-only').")
    write_mode: WriteMode | None = Field(
        None, description="staged (overlay, applied by policy), direct (in place, no undo), read-only; None = default.")
    apply: ApplyPolicy | None = Field(None, description="Staged runs: on-success, never or always; None = default.")
    requested_by: str | None = Field(None, max_length=200, description="Agent, thread or user id, for the audit.")
    safety_policy: SafetyPolicy | None = Field(
        None, description="Script scanner policy for this run; None = the configured default."
    )

    @model_validator(mode="after")
    def _read_only_alias(self) -> ExecutionRequest:
        if self.read_only and self.write_mode not in (None, "read-only"):
            raise ValueError(f"read_only=True contradicts write_mode={self.write_mode!r}; give one of them")
        if self.write_mode == "read-only":
            self.read_only = True
        return self

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not name or not set(name) <= _ENV_NAME_OK or name[0].isdigit():
                raise ValueError(f"environment variable name {name!r} is not valid (use letters, digits, _)")
            if name in RESERVED_ENV:
                raise ValueError(f"environment variable {name} is set by scoperun and cannot be overridden")
            if "\x00" in val:
                raise ValueError(f"environment variable {name} contains a NUL byte")
        return value

    @field_validator("args")
    @classmethod
    def _check_args(cls, value: list[str]) -> list[str]:
        if any("\x00" in a for a in value):
            raise ValueError("an argument contains a NUL byte")
        return value


class OutputCapture(BaseModel):
    """One captured stream: the text kept (capped) and how much there really was."""

    text: str = ""
    total_bytes: int = 0
    truncated: bool = False
    full_output: str | None = Field(
        None, description="The whole (redacted) stream kept beside the audit record, workspace-relative; None if not kept.")


class Durations(BaseModel):
    """Where the time of a run went, in seconds."""

    queue_wait: float = 0.0
    container_start: float = 0.0
    run: float = 0.0
    total: float = 0.0


Severity = Literal["low", "medium", "high"]


class Finding(BaseModel):
    """One suspicious construct a script scanner saw: where (1-based line and column), how bad, and why."""

    model_config = ConfigDict(frozen=True)

    rule: str
    severity: Severity
    line: int
    column: int
    message: str
    snippet: str


HazardKind = Literal["symlink-outside", "setuid", "setgid", "device", "fifo", "socket", "hardlink", "unscanned"]
# Entries about the scan itself, not about a path: the list was capped or the walk cut short
# (`scan-summary`, always last), or the scan could not run at all (`scan-failed`, alone).
NoteKind = Literal["scan-summary", "scan-failed"]
NOTE_KINDS: frozenset[str] = frozenset({"scan-summary", "scan-failed"})


class Hazard(BaseModel):
    """One suspicious entry a run left in its case (`path` relative to the case), or a note on the scan.

    Serialised without its empty (None) fields, so records keep the shape they always had; a
    note (see `NoteKind`) has no `neutralised`, an entry always has it.
    """

    kind: HazardKind | NoteKind
    path: str
    detail: str
    neutralised: bool | None = None
    target: str | None = None
    outside_links: int | None = None
    introduced: bool | None = None  # True: this run's change set holds the path; False: it was there before

    @model_validator(mode="after")
    def _entries_say_neutralised(self) -> Hazard:
        if self.neutralised is None and self.kind not in NOTE_KINDS:
            self.neutralised = False
        return self

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    @classmethod
    def note(cls, kind: NoteKind, detail: str) -> Hazard:
        """A note on the scan itself (capped list, cut short, failed): no path, nothing neutralised."""
        return cls(kind=kind, path="", detail=detail)

    @property
    def is_note(self) -> bool:
        """True for a note on the scan (`scan-summary`, `scan-failed`), not a path of the case."""
        return self.kind in NOTE_KINDS


class ExecutionResult(BaseModel):
    """What a run produced. A non-zero exit is data here, not an exception."""

    execution_id: str
    status: Status
    exit_code: int | None = None
    exit_code_source: Literal["launcher", "engine"] | None = Field(
        None, description="Who reported exit_code: the launcher's tagged end line, or the engine (wait/inspect).")
    pooled: bool = Field(False, description="Served by a warm container prepared ahead of the run.")
    message: str = Field("", description="One sentence on what happened and, if it failed, what to do.")
    script: str
    case: str
    args: list[str] = Field(default_factory=list)
    working_dir: str = ""
    stdout: OutputCapture = Field(default_factory=OutputCapture)
    stderr: OutputCapture = Field(default_factory=OutputCapture)
    started_at: datetime
    finished_at: datetime
    durations: Durations = Field(default_factory=Durations)
    image: str = ""
    image_id: str | None = None
    node: str | None = Field(None, description="Swarm node id that ran the script (swarm backend only).")
    limits: ResolvedLimits | None = Field(None, description="The limits the run got; None only in hand-made results.")
    network: str = ""
    read_only: bool = False
    write_mode: WriteMode | Literal[""] = Field("", description="staged, direct or read-only; empty only in hand-made results.")
    changes: ChangeSet | None = Field(None, description="What the run changed in its case (capped list, totals).")
    requested_by: str | None = None
    findings: list[Finding] = Field(default_factory=list, description="Safety scanner findings.")
    hazards: list[Hazard] = Field(
        default_factory=list, description="What the run left in the case that the host must not trust (see hazards.py)."
    )
    audit_record: str = Field("", description="Audit record path relative to the workspace.")

    @property
    def success(self) -> bool:
        """True when the script ran and exited 0."""
        return self.status is Status.SUCCEEDED


class RunEvent(BaseModel):
    """One event of a run as it happens: output text, a change of state, or the final result.

    `Executor.stream` and `Client.stream` yield these; `type` is one of queued, started, stdout,
    stderr, cancelling, changes, finished (the last one, with `result`).
    """

    type: str
    id: int | None = Field(None, description="The server's event number (resume after it); None in-process.")
    text: str = Field("", description="Output text (stdout and stderr events), redacted.")
    data: dict[str, Any] = Field(default_factory=dict, description="Other fields of the event (e.g. position).")
    result: ExecutionResult | None = Field(None, description="The run's result (finished events).")
