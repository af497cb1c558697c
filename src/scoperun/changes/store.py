"""Where change sets live between commands, and how what happens to them reaches the audit trail.

A staged change set lives with its staged files in `<staging_dir>/<id>/state.json` (local disk:
lost with the VM, like the staged files themselves). Once applied, the journal in the workspace
holds it (`Database/journal/<id>/manifest.json`). Apply, discard, rollback and conflicts are
appended, with a capped copy of the change set, to the audit trail the caller hands down (an
`AuditTrail`: the workspace's `AuditLog`); the run's finished record is never rewritten.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from scoperun.atomicio import write_json_atomic
from scoperun.changes.overlay import StagingArea
from scoperun.changeset import ChangeSet
from scoperun.config import Settings
from scoperun.errors import ChangesError
from scoperun.models import is_execution_id

__all__ = ["AuditTrail", "StagingState", "change_lock", "load_state", "now", "record_event", "save_state",
           "staging_root", "workspace_trail", "write_json_atomic"]


class AuditTrail(Protocol):
    """The audit trail changes/ reports to (the workspace's `AuditLog`), handed down by the caller."""

    def append_event(self, execution_id: str, event: str, *, by: str, detail: str = "",
                     changes: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
        """Append one event about a finished run; return it as the record's `events` list shows it."""
        ...

    def view(self, execution_id: str) -> dict[str, Any]:
        """The run's record with its events merged in (raise AuditError when there is none)."""
        ...


def workspace_trail(settings: Settings, workspace_root: Path) -> AuditTrail:
    """The workspace's audit trail as the executor writes it (chained, indexed): the default for callers
    that hand none down."""
    from scoperun.audit.log import AuditLog

    return AuditLog.from_settings(settings, workspace_root)


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


class StagingState(BaseModel):
    """What `state.json` of a staging folder holds."""

    execution_id: str
    case: str
    case_dir: str
    workspace: str
    uid: int
    gid: int
    phase: str  # "running", then the change set's status
    created_at: datetime
    updated_at: datetime
    change_set: ChangeSet | None = None


def staging_root(settings: Settings) -> Path:
    """The configured staging folder, made absolute."""
    return Path(os.path.abspath(Path(settings.staging_dir).expanduser()))


def _check_id(execution_id: str) -> str:
    if not is_execution_id(execution_id):
        raise ChangesError(f"not an execution id: {execution_id!r}", execution_id=execution_id)
    return execution_id


def area_for(settings: Settings, execution_id: str) -> StagingArea:
    """The staging folder of `execution_id` (it may not exist)."""
    return StagingArea(staging_root(settings) / _check_id(execution_id))


def save_state(area: StagingArea, state: StagingState, *, durable: bool = True) -> None:
    """Persist a staging folder's state (`durable=False`: no fsync, for a state a crash may lose)."""
    state.updated_at = now()
    write_json_atomic(area.state_file, state, durable=durable)


def load_state(settings: Settings, execution_id: str) -> tuple[StagingArea, StagingState] | None:
    """The staging folder and state of a run, or None when it has none (any more)."""
    area = area_for(settings, execution_id)
    try:
        fd = os.open(area.state_file, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            return area, StagingState.model_validate_json(fh.read())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise ChangesError(f"the staging state {area.state_file} cannot be read ({exc}); the staged files are in "
                           f"{area.upper}", execution_id=execution_id) from None


@contextmanager
def change_lock(settings: Settings, execution_id: str) -> Iterator[None]:
    """Serialise apply, discard and rollback of one run (a lock file on local disk)."""
    locks = staging_root(settings) / ".locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(locks / f"{_check_id(execution_id)}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def case_lock(settings: Settings, case_dir: Path) -> AbstractContextManager[None]:
    """Serialise applies and rollbacks on one case folder (on this machine)."""
    import hashlib

    return change_lock(settings, "case-" + hashlib.sha256(str(case_dir).encode()).hexdigest()[:24])


def record_event(trail: AuditTrail, settings: Settings, execution_id: str, event: str, *,
                 change_set: ChangeSet | None = None, detail: str = "", by: str | None = None,
                 **data: Any) -> dict[str, Any]:
    """Append an event (with the change set as it now stands, capped) to the run's audit trail."""
    changes = change_set.capped(settings.changes_record_cap).model_dump(mode="json") if change_set else None
    return trail.append_event(execution_id, event, by=by or _who(), detail=detail, changes=changes, **data)


def _who() -> str:
    try:
        return os.environ.get("SUDO_USER") or os.getlogin()
    except OSError:
        return os.environ.get("USER", f"uid {os.getuid()}")
