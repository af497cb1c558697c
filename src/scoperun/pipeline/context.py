"""What every stage of a run knows: the request resolved on entry (`RunContext`), and what `prepare` learnt."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from scoperun.audit.log import AuditLog
from scoperun.changeset import WriteMode
from scoperun.config import Settings
from scoperun.engine.base import BindMount, RunOutcome
from scoperun.models import ExecutionRequest, Finding, ResolvedLimits
from scoperun.safety.redaction import Redactor
from scoperun.scope import Workspace

__all__ = ["FixedProgram", "RunContext", "ScriptFacts", "new_execution_id"]


def new_execution_id() -> str:
    """A sortable, unique id in the plan's format: exec_YYYYMMDD_HHMMSS_<8 hex>."""
    return f"exec_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FixedProgram:
    """A program shipped in an image, run instead of a workspace script (e.g. the browser runner).

    The pipeline is the same (scope, audit, limits, backend); only script resolution and the
    scan are skipped, since nothing the caller sent is code. Limits here replace the settings'
    defaults; the request's own limits still win.
    """

    image: str
    command: tuple[str, ...]
    mounts: tuple[BindMount, ...] = ()  # extra mounts, e.g. the read-only data the program reads
    env: Mapping[str, str] = field(default_factory=dict)
    data_sha256: str | None = None  # recorded as the run's script_sha256
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    tmp_size: str | None = None
    shm_size: str | None = None
    # Turns a non-zero exit into the run's message (read from what the program left behind).
    explain_failure: Callable[[RunOutcome], str | None] | None = None


# -- what every stage knows ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """One run as asked and resolved on entry (ids, limits, secrets, audit log); never changes after."""

    execution_id: str
    request: ExecutionRequest
    settings: Settings
    workspace: Workspace
    audit: AuditLog
    program: FixedProgram | None
    limits: ResolvedLimits
    image: str
    network: str
    write_mode: WriteMode
    secrets: Mapping[str, str]
    redactor: Redactor
    started_at: datetime
    t0: float  # monotonic clock at entry, for durations.total

    @classmethod
    def open(cls, settings: Settings, request: ExecutionRequest, *, execution_id: str | None = None,
             program: FixedProgram | None = None) -> RunContext:
        """Resolve the request against the settings. WorkspaceError or AuditError: nothing can be audited."""
        started_at, t0 = _now(), time.monotonic()
        fixed = program or FixedProgram(image=settings.image, command=())
        asked = request.limits
        found = {n: os.environ[n] for n in settings.secret_env if os.environ.get(n)}
        workspace = Workspace.from_settings(settings)
        return cls(
            execution_id=execution_id or new_execution_id(),
            request=request,
            settings=settings,
            workspace=workspace,
            audit=AuditLog.from_settings(settings, workspace.root),  # + host chain and index
            program=program,
            limits=ResolvedLimits(
                timeout=asked.timeout or settings.timeout,
                memory=asked.memory or fixed.memory or settings.memory,
                cpus=asked.cpus or fixed.cpus or settings.cpus,
                pids_limit=asked.pids_limit or fixed.pids_limit or settings.pids_limit,
            ),
            image=fixed.image,
            network=request.network or settings.network,
            write_mode=request.write_mode or ("read-only" if request.read_only else settings.write_mode),
            secrets=found,
            redactor=Redactor(found),
            started_at=started_at,
            t0=t0,
        )


@dataclass(frozen=True)
class ScriptFacts:
    """What `prepare` learnt that the record keeps, even when the run is refused."""

    working_dir: str = ""  # case-relative folder the script runs in
    script_sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)

