"""Audit records: one JSON file per run at `Database/script_executions/<execution_id>.json`.

The record is written when the run starts (status `running`) and rewritten when it ends, each
time atomically (a temporary file in the same folder, then a rename), so a crash mid-run still
leaves a trace and a reader never sees half a record. It keeps the original plan's fields
(timestamp, execution_id, case_name, script_path, exit_code, stdout_length, stderr_length,
success) so existing readers keep working.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from .errors import AuditError
from .models import ExecutionResult, Status

__all__ = ["RECORD_VERSION", "AuditLog", "record_from_result"]

RECORD_VERSION = 1


class AuditLog:
    """Writes and reads the JSON records of one workspace."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, execution_id: str) -> Path:
        """Where the record of `execution_id` lives."""
        if not execution_id or "/" in execution_id or execution_id.startswith("."):
            raise AuditError(f"not an execution id: {execution_id!r}")
        return self.directory / f"{execution_id}.json"

    def write(self, record: dict[str, Any]) -> Path:
        """Write `record` atomically; raise AuditError (the run must not go on) on failure."""
        target = self.path_for(record["execution_id"])
        data = json.dumps(record, indent=2, ensure_ascii=False, default=str).encode("utf-8")
        tmp = self.directory / f".{record['execution_id']}.{secrets.token_hex(4)}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.directory.is_symlink():
                raise AuditError(f"audit folder {self.directory} is a symlink; refusing to write through it")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, target)
        except AuditError:
            raise
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit record {target} ({exc.strerror or exc}). Nothing was run. "
                f"Check that the workspace's Database folder is writable (`scoperun doctor`)."
            ) from None
        return target

    def read(self, execution_id: str) -> dict[str, Any]:
        """Read one record; raise AuditError if it is missing or not JSON."""
        path = self.path_for(execution_id)
        try:
            # O_NOFOLLOW: a record replaced by a symlink must not make us read another file.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            raise AuditError(f"no audit record for {execution_id} in {self.directory}") from None
        except (OSError, ValueError) as exc:
            raise AuditError(f"audit record {path} cannot be read: {exc}") from None


_HOST = socket.gethostname()


def record_from_result(result: ExecutionResult, *, script_sha256: str | None, env_names: list[str]) -> dict[str, Any]:
    """Build the JSON record (plan fields first) of a result, running or finished."""
    finished = result.status is not Status.RUNNING
    return {
        # The original plan's fields, unchanged in name and meaning.
        "timestamp": result.started_at.isoformat(),
        "execution_id": result.execution_id,
        "case_name": result.case,
        "script_path": result.script,
        "exit_code": result.exit_code,
        "stdout_length": result.stdout.total_bytes,
        "stderr_length": result.stderr.total_bytes,
        "success": result.success,
        # What scoperun adds.
        "record_version": RECORD_VERSION,
        "status": result.status.value,
        "message": result.message,
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat() if finished else None,
        "duration": round(result.durations.total, 3) if finished else None,
        "durations": result.durations.model_dump() if finished else None,
        "args": result.args,
        "working_dir": result.working_dir,
        "requested_by": result.requested_by,
        "image": result.image,
        "image_id": result.image_id,
        "limits": result.limits,
        "network": result.network,
        "read_only": result.read_only,
        "write_mode": result.write_mode,
        "changes": result.changes.model_dump(mode="json") if result.changes else None,
        "env_names": env_names,
        "script_sha256": script_sha256,
        "stdout_truncated": result.stdout.truncated,
        "stderr_truncated": result.stderr.truncated,
        "findings": result.findings,
        "hazards": result.hazards,
        "host": _HOST,
        "pid": os.getpid(),
    }
