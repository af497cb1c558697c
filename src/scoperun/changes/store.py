"""Where change sets live between commands, and the run's audit record as their event log.

A staged change set lives with its staged files in `<staging_dir>/<id>/state.json` (local disk:
lost with the VM, like the staged files themselves). Once applied, the journal in the workspace
holds it (`Database/journal/<id>/manifest.json`). The audit record keeps a capped copy and an
`events` list (apply, discard, rollback, conflict), rewritten atomically under a lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from scoperun.audit.log import AuditLog
from scoperun.changes.overlay import StagingArea
from scoperun.changeset import ChangeSet
from scoperun.config import Settings
from scoperun.errors import AuditError, ChangesError

__all__ = ["StagingState", "audit_log", "change_lock", "load_state", "now", "record_event", "save_state",
           "staging_root", "write_json_atomic"]


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
    if not execution_id or "/" in execution_id or execution_id.startswith(".") or "\x00" in execution_id:
        raise ChangesError(f"not an execution id: {execution_id!r}", execution_id=execution_id)
    return execution_id


def area_for(settings: Settings, execution_id: str) -> StagingArea:
    """The staging folder of `execution_id` (it may not exist)."""
    return StagingArea(staging_root(settings) / _check_id(execution_id))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (data, or a pydantic model) to `path` through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # A model serialises in pydantic's core: tens of thousands of change entries in well under a second.
    body = data.model_dump_json().encode() if isinstance(data, BaseModel) else \
        json.dumps(data, indent=1, ensure_ascii=True, default=str).encode("ascii")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_state(area: StagingArea, state: StagingState) -> None:
    """Persist a staging folder's state."""
    state.updated_at = now()
    write_json_atomic(area.state_file, state)


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


def case_lock(settings: Settings, case_dir: Path):
    """Serialise applies and rollbacks on one case folder (on this machine)."""
    import hashlib

    return change_lock(settings, "case-" + hashlib.sha256(str(case_dir).encode()).hexdigest()[:24])


def audit_log(settings: Settings, workspace_root: Path) -> AuditLog:
    """The audit log of the workspace."""
    return AuditLog(workspace_root / settings.audit_dir)


def record_event(settings: Settings, workspace_root: Path, execution_id: str, event: str, *,
                 change_set: ChangeSet | None = None, detail: str = "", by: str | None = None,
                 **data: Any) -> dict[str, Any]:
    """Append an event to the run's audit record (and refresh its change set copy), atomically."""
    entry = {"at": now().isoformat(), "event": event, "by": by or _who(), "detail": detail, **data}
    log = audit_log(settings, workspace_root)
    with change_lock(settings, f"{execution_id}.record"):
        try:
            record = log.read(execution_id)
        except AuditError:
            return entry  # a run without a record (deleted by hand): the journal still has it all
        record.setdefault("events", []).append(entry)
        if change_set is not None:
            record["changes"] = change_set.capped(settings.changes_record_cap).model_dump(mode="json")
        log.write(record)
    return entry


def _who() -> str:
    try:
        return os.environ.get("SUDO_USER") or os.getlogin()
    except OSError:
        return os.environ.get("USER", f"uid {os.getuid()}")
