"""Audit records: one JSON file per run at `Database/script_executions/<execution_id>.json`.

The record is written when the run starts (status `running`) and rewritten when it ends, each
time atomically (a temporary file in the same folder, then a rename), so a crash mid-run still
leaves a trace and a reader never sees half a record. It keeps the original plan's fields
(timestamp, execution_id, case_name, script_path, exit_code, stdout_length, stderr_length,
success) so existing readers keep working.

A finished record is never rewritten. What happens to a run afterwards (its changes applied,
discarded, rolled back) is appended to the event log, one small file per event under
`events/<execution_id>/`, each linked into the same hash chain as the records, so `audit verify`
checks events like records; `view` shows a record with its events merged in.

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
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoperun.atomicio import write_bytes_atomic
from scoperun.errors import AuditError
from scoperun.models import ExecutionResult, Status
from scoperun.mounts import is_fuse

if TYPE_CHECKING:
    from scoperun.audit.chain import HostChain, VerifyReport
    from scoperun.audit.index import AuditIndex
    from scoperun.config import Settings
    from scoperun.engine.capture import BoundedBuffer
    from scoperun.safety.redaction import Redactor

__all__ = ["EVENTS_DIR", "OUTPUT_SUFFIXES", "RECORD_VERSION", "AuditLog", "keep_full_output", "record_from_result"]

RECORD_VERSION = 1
OUTPUT_SUFFIXES = ("stdout", "stderr")
EVENTS_DIR = "events"  # under the audit folder: events/<execution_id>/<time_ns>-<token>.json
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
        path = self.path_for(record["execution_id"])
        chained = record.get("status") != Status.RUNNING.value
        target = self._write_linked(record, path, chained=chained)
        if self.index is not None:
            try:
                self.index.upsert(record, target)
            except Exception as exc:
                log.warning("audit index not updated for %s (%s); run `scoperun audit reindex`",
                            record.get("execution_id"), exc)
        return target

    def _write_linked(self, entry: dict[str, Any], path: Path, *, chained: bool) -> Path:
        """Write one JSON entry atomically, linked into the host's chain when `chained` and there is one."""
        def data() -> bytes:  # serialised late: the chain link is set inside link()
            return json.dumps(entry, indent=2, ensure_ascii=False, default=str).encode("utf-8")

        if self.chain is not None and chained:
            write_error: AuditError | None = None
            try:
                with self.chain.link(entry):
                    try:
                        self._atomic(path, data())
                        return path
                    except AuditError as exc:
                        write_error = exc
                        raise
            except (OSError, AuditError) as exc:
                if write_error is not None:
                    raise write_error from None
                # The host's state folder failed, not the workspace: keep the entry, unchained,
                # rather than lose what happened; `audit verify` lists it as unchained.
                log.warning("audit chain unavailable (%s); %s written without a chain link", exc, path.name)
                entry.pop("chain", None)
        self._atomic(path, data())
        return path

    def append_event(self, execution_id: str, event: str, *, by: str, detail: str = "",
                     changes: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
        """Append one event about a finished run (chained like a record; never rewrites the record).

        `changes` is the run's change set as it now stands (a capped copy); `view` shows the newest.
        Returns the entry as `view` lists it.
        """
        self.path_for(execution_id)  # checks the id
        entry: dict[str, Any] = {"execution_id": execution_id, "at": datetime.now(UTC).isoformat(), "event": event,
                                 "by": by, "detail": detail, **data}
        if changes is not None:
            entry["changes"] = changes
        folder = self.events_dir / execution_id
        path = folder / f"{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"cannot write the audit event log {folder} ({exc.strerror or exc}); check that the "
                             f"workspace's Database folder is writable (`scoperun doctor`)") from None
        self._write_linked(entry, path, chained=True)
        return _shown(entry)

    @property
    def events_dir(self) -> Path:
        """The event log's folder."""
        return self.directory / EVENTS_DIR

    def events(self, execution_id: str) -> list[dict[str, Any]]:
        """The logged events of one run, oldest first, as stored (unreadable ones skipped)."""
        folder = self.events_dir / self.path_for(execution_id).stem
        return [entry for _, entry in self.event_files(folder) if entry is not None]

    def event_files(self, folder: Path | None = None) -> list[tuple[str, dict[str, Any] | None]]:
        """(name relative to the event log, parsed entry or None if unreadable) for every event, in order."""
        root = self.events_dir
        paths = sorted((folder or root).glob("*.json" if folder else "*/*.json"))
        out: list[tuple[str, dict[str, Any] | None]] = []
        for path in paths:
            if path.name.startswith("."):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as fh:
                    parsed = json.loads(fh.read())
            except (OSError, ValueError):
                parsed = None
            out.append((path.relative_to(root).as_posix(), parsed if isinstance(parsed, dict) else None))
        return out

    def view(self, execution_id: str) -> dict[str, Any]:
        """A run's record with its logged events merged in: `events` extended, `changes` the newest copy."""
        record = self.read(execution_id)
        logged = self.events(execution_id)
        if logged:
            record["events"] = [*(record.get("events") or []), *(_shown(e) for e in logged)]
            newest = next((e["changes"] for e in reversed(logged) if e.get("changes")), None)
            if newest is not None:
                record["changes"] = newest
        return record

    def verify(self, *, grace: float = 120.0, default_timeout: float = 300.0,
               allow_unchained: bool = False) -> VerifyReport:
        """Check every record and event against the chains and this host's head (`audit verify`)."""
        from scoperun.audit.chain import verify_records
        from scoperun.audit.index import read_json_file

        stems = sorted(p.name[:-5] for p in self.directory.glob("*.json") if not p.name.startswith("."))
        loaded = [(stem, read_json_file(self.directory / f"{stem}.json")) for stem in stems]
        head = self.chain.head() if self.chain is not None else None
        return verify_records(loaded, events=self.event_files(), heads=[head] if head else [], grace=grace,
                              default_timeout=default_timeout, allow_unchained=allow_unchained)

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

    def _atomic(self, target: Path, data: bytes | Iterable[bytes]) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.directory.is_symlink():
                raise AuditError(f"audit folder {self.directory} is a symlink; refusing to write through it")
            if self._in_place is None:
                self._in_place = is_fuse(self.directory.resolve())
            # A bucket behind FUSE replaces an object whole when the file is closed, so writing in
            # place is already atomic for readers; a rename there is copy + delete, and a rename
            # right after close can race the upload (rclone then drops the record).
            write_bytes_atomic(target, data, 0o644, in_place=self._in_place)
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
                record: dict[str, Any] = json.loads(fh.read())
                return record
        except FileNotFoundError:
            raise AuditError(f"no audit record for {execution_id} in {self.directory}") from None
        except (OSError, ValueError) as exc:
            raise AuditError(f"audit record {path} cannot be read: {exc}") from None


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    """An event as a record's `events` list shows it: without the bookkeeping the log keeps."""
    return {k: v for k, v in entry.items() if k not in ("execution_id", "changes", "chain")}


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
        # Plain JSON here: the chain hashes canonical_json of this dict (a model would hash as its repr).
        "findings": [f.model_dump(mode="json") for f in result.findings],
        "hazards": [h.model_dump(mode="json") for h in result.hazards],
        "host": _HOST,
        "pid": os.getpid(),
    }
