"""Audit records: one JSON file per run at `Database/script_executions/<execution_id>.json`.

The record is written when the run starts (status `running`) and rewritten when it ends, each
time atomically (a temporary file in the same folder, then a rename), so a crash mid-run still
leaves a trace and a reader never sees half a record. It keeps the original plan's fields
(timestamp, execution_id, case_name, script_path, exit_code, stdout_length, stderr_length,
success) so existing readers keep working.

Optional hooks (see `AuditLog.from_settings`): finished records are linked into the host's
hash chain (`chain.py`) and every record written is put in the host-local SQLite index
(`index.py`). A run's output, in full even when its result shows only part of it, is kept beside the
record as `<execution_id>.stdout` / `.stderr` (up to `full_output_limit`).
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoperun.errors import AuditError
from scoperun.models import ExecutionResult, Status
from scoperun.mounts import is_fuse

if TYPE_CHECKING:
    from scoperun.audit.chain import HostChain
    from scoperun.audit.index import AuditIndex
    from scoperun.config import Settings
    from scoperun.engine.capture import BoundedBuffer
    from scoperun.safety.redaction import Redactor

__all__ = ["OUTPUT_SUFFIXES", "RECORD_VERSION", "AuditLog", "keep_full_output", "record_from_result"]

RECORD_VERSION = 1
OUTPUT_SUFFIXES = ("stdout", "stderr")
log = logging.getLogger(__name__)


class AuditLog:
    """Writes and reads the JSON records of one workspace."""

    def __init__(self, directory: Path, *, chain: HostChain | None = None, index: AuditIndex | None = None) -> None:
        self.directory = directory
        self.chain = chain
        self.index = index
        self._in_place: bool | None = None  # write in place (a FUSE bucket) rather than temp + rename

    @classmethod
    def from_settings(cls, settings: Settings, workspace_root: Path) -> AuditLog:
        """The audit log of a workspace with the host's chain and index as the settings ask."""
        from scoperun.audit.chain import HostChain
        from scoperun.audit.index import AuditIndex
        from scoperun.audit.state import index_path, state_dir

        directory = Path(workspace_root) / settings.audit_dir
        chain = HostChain(state_dir(settings), directory) if settings.audit_chain else None
        return cls(directory, chain=chain, index=AuditIndex(index_path(settings, directory), directory))

    def path_for(self, execution_id: str) -> Path:
        """Where the record of `execution_id` lives."""
        if not execution_id or "/" in execution_id or execution_id.startswith("."):
            raise AuditError(f"not an execution id: {execution_id!r}")
        return self.directory / f"{execution_id}.json"

    def write(self, record: dict[str, Any]) -> Path:
        """Write `record` atomically (chained when finished, then indexed); raise AuditError on failure."""
        target: Path | None = None
        if self.chain is not None and record.get("status") != Status.RUNNING.value:
            write_error: AuditError | None = None
            try:
                with self.chain.link(record):
                    try:
                        target = self._write_file(record)
                    except AuditError as exc:
                        write_error = exc
                        raise
            except (OSError, AuditError) as exc:
                if write_error is not None:
                    raise write_error from None
                # The host's state folder failed, not the workspace: keep the record, unchained,
                # rather than lose what a run did; `audit verify` lists it as unchained.
                log.warning("audit chain unavailable (%s); record %s written without a chain link",
                            exc, record.get("execution_id"))
                record.pop("chain", None)
                target = None
        if target is None:
            target = self._write_file(record)
        if self.index is not None:
            try:
                self.index.upsert(record, target)
            except Exception as exc:
                log.warning("audit index not updated for %s (%s); run `scoperun audit reindex`",
                            record.get("execution_id"), exc)
        return target

    def write_output(self, execution_id: str, stream: str, data: bytes | Iterable[bytes]) -> Path:
        """Keep a run's full `stream` output (bytes or chunks) beside its record, atomically; raise AuditError."""
        if stream not in OUTPUT_SUFFIXES:
            raise AuditError(f"unknown stream {stream!r}")
        target = self.path_for(execution_id).with_suffix(f".{stream}")
        self._atomic(target, data)
        return target

    def read_output(self, execution_id: str, stream: str, *, limit: int | None = None) -> bytes | None:
        """The full output kept beside a record (first `limit` bytes), or None when there is none."""
        path = self.path_for(execution_id).with_suffix(f".{stream}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"cannot read {path} ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)

    def _write_file(self, record: dict[str, Any]) -> Path:
        target = self.path_for(record["execution_id"])
        data = json.dumps(record, indent=2, ensure_ascii=False, default=str).encode("utf-8")
        self._atomic(target, data)
        return target

    def _atomic(self, target: Path, data: bytes | Iterable[bytes]) -> None:
        tmp = self.directory / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.directory.is_symlink():
                raise AuditError(f"audit folder {self.directory} is a symlink; refusing to write through it")
            if self._in_place is None:
                self._in_place = is_fuse(self.directory.resolve())
            if self._in_place:
                # A bucket behind FUSE replaces an object whole when the file is closed, so writing in
                # place is already atomic for readers; a rename there is copy + delete, and a rename
                # right after close can race the upload (rclone then drops the record).
                tmp = target
            flags = os.O_TRUNC if self._in_place else os.O_EXCL
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | flags | os.O_NOFOLLOW, 0o644)
            try:
                with os.fdopen(fd, "wb") as fh:
                    for chunk in [data] if isinstance(data, bytes) else data:
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                if tmp != target:
                    tmp.unlink(missing_ok=True)
                raise
            if tmp != target:
                os.replace(tmp, target)
        except AuditError:
            raise
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit record {target} ({exc.strerror or exc}). Nothing was run. "
                f"Check that the workspace's Database folder is writable (`scoperun doctor`)."
            ) from None

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


def keep_full_output(audit: AuditLog, execution_id: str, stream: str, buffer: BoundedBuffer,
                     redactor: Redactor | None) -> str | None:
    """Save a stream's output (redacted, up to the buffer's `spill_limit`) beside the record; return its name.

    Kept for every non-empty stream, so `audit show` has what the agent was shown, and in full
    what it was shown only in part. Streamed in chunks (memory stays bounded); failing to keep
    it is logged, never fatal.
    """
    try:
        if buffer.spill_limit <= 0 or buffer.total == 0:
            return None
        chunks, complete = buffer.full_chunks()
        pieces = _redacted_lines(chunks, redactor) if redactor else chunks
        limit = buffer.spill_limit

        def capped() -> Iterator[bytes]:
            written, cut = 0, False
            for piece in pieces:
                room = max(0, limit - written)
                if len(piece) > room:
                    piece, cut = piece[:room], True
                written += len(piece)
                if piece:
                    yield piece
            if cut or not complete:
                yield f"\n[... scoperun kept the first {limit} of {buffer.total} bytes ...]\n".encode()

        return audit.write_output(execution_id, stream, capped()).name
    except (AuditError, OSError) as exc:
        log.warning("full %s of %s not kept (%s)", stream, execution_id, exc)
        return None
    finally:
        buffer.close()


def _redacted_lines(chunks: Iterator[bytes], redactor: Redactor, carry_max: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    """Redact a byte stream chunk by chunk, cut at line ends so a secret is never split across chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    carry = ""
    for chunk in chunks:
        text = carry + decoder.decode(chunk)
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) < carry_max:
            carry = text  # no line end yet: wait for more (bounded by carry_max)
            continue
        if cut == 0:
            cut = len(text)
        carry = text[cut:]
        yield redactor.redact(text[:cut]).encode("utf-8")
    carry += decoder.decode(b"", final=True)
    if carry:
        yield redactor.redact(carry).encode("utf-8")


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
        "node": result.node,
        "limits": result.limits.model_dump() if result.limits else {},
        "exit_code_source": result.exit_code_source,
        "pooled": result.pooled,
        "network": result.network,
        "read_only": result.read_only,
        "write_mode": result.write_mode,
        "changes": result.changes.model_dump(mode="json") if result.changes else None,
        "env_names": env_names,
        "script_sha256": script_sha256,
        "stdout_truncated": result.stdout.truncated,
        "stderr_truncated": result.stderr.truncated,
        "stdout_file": result.stdout.full_output,
        "stderr_file": result.stderr.full_output,
        "findings": result.findings,
        "hazards": result.hazards,
        "host": _HOST,
        "pid": os.getpid(),
    }
