"""One audit event per case-file access (reads included): who, case, path, bytes, outcome.

Every access goes through `record_access`, the one place that writes these events, so moving
them to the workspace's append-only event log is a change here only. Today they are JSON lines
appended (one `write` of one line with O_APPEND, atomic on a local disk) to a host-local file
beside the audit index: cheap enough for thousands of reads, and never a GCS object rewrite.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scoperun.config import Settings
from scoperun.errors import AuditError

__all__ = ["access_counts", "access_log_path", "read_access_events", "record_access", "who"]

_LOCK = threading.Lock()


def who(requested_by: str | None) -> str:
    """The caller's name for the record: the one given, else the login of this process."""
    if requested_by:
        return requested_by
    try:
        return os.environ.get("SUDO_USER") or os.getlogin()
    except OSError:
        return os.environ.get("USER", f"uid {os.getuid()}")


def access_log_path(settings: Settings, workspace_root: Path) -> Path:
    """The host-local access event file of a workspace's audit folder."""
    from scoperun.audit.state import audit_dir_key, state_dir

    return state_dir(settings) / "access" / f"{audit_dir_key(Path(workspace_root) / settings.audit_dir)}.jsonl"


def record_access(settings: Settings, workspace_root: Path, *, action: str, case: str, path: str | None,
                  requested_by: str | None, nbytes: int = 0, outcome: str = "ok", reason: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    """Append one access event; raise AuditError when it cannot be written (the access must not happen)."""
    from scoperun.audit.state import HOST

    event = {"at": datetime.now(UTC).isoformat(), "event": f"files.{action}", "by": who(requested_by),
             "case": case, "path": path, "bytes": nbytes, "outcome": outcome, "reason": reason,
             "host": HOST, "pid": os.getpid(), **extra}
    line = (json.dumps(event, ensure_ascii=True, default=str) + "\n").encode("ascii")
    target = access_log_path(settings, workspace_root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _LOCK:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
    except OSError as exc:
        raise AuditError(f"cannot write the file-access audit event to {target} ({exc.strerror or exc}); "
                         f"make the state folder writable (SCOPERUN_STATE_DIR)") from None
    return event


def read_access_events(settings: Settings, workspace_root: Path, *, case: str | None = None,
                       limit: int = 1000) -> list[dict[str, Any]]:
    """The newest access events (newest last), optionally of one case."""
    found: list[dict[str, Any]] = []
    for event in _lines(access_log_path(settings, workspace_root)):
        if case is None or event.get("case") == case:
            found.append(event)
            if len(found) > limit:
                del found[0]
    return found


def access_counts(settings: Settings, workspace_root: Path, *, since: float | None = None, case: str | None = None,
                  tail_bytes: int = 16 * 1024 * 1024) -> dict[str, int]:
    """Access events by kind (`read`, `list`, ...) plus `refused`, over the newest `tail_bytes` of the log."""
    path = access_log_path(settings, workspace_root)
    counts: dict[str, int] = {}
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - tail_bytes))
            if size > tail_bytes:
                fh.readline()  # a partial first line
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return counts
    for raw in lines:
        try:
            event = json.loads(raw)
            at = datetime.fromisoformat(event["at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if (since is not None and at < since) or (case is not None and event.get("case") != case):
            continue
        kind = str(event.get("event", "")).removeprefix("files.")
        counts[kind] = counts.get(kind, 0) + 1
        if event.get("outcome") == "refused":
            counts["refused"] = counts.get("refused", 0) + 1
    return dict(sorted(counts.items()))


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            try:
                yield json.loads(raw)
            except ValueError:
                continue  # a torn last line of a crashed writer
