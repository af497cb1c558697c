"""Host-local state: where the audit index and the audit chain heads live.

This state is a cache and a witness of one host; it never lives on the workspace mount
(gcsfuse has no locks and every read is a GCS request). Default: `/var/lib/scoperun` when
running as root, else `$XDG_STATE_HOME/scoperun` (`~/.local/state/scoperun`); override with
`SCOPERUN_STATE_DIR`, and the index alone with `SCOPERUN_INDEX_PATH`.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from scoperun.config import Settings

__all__ = ["HOST", "StaleRun", "audit_dir_key", "epoch_of", "index_path", "process_alive", "stale_run", "state_dir"]

HOST = socket.gethostname()


def state_dir(settings: Settings) -> Path:
    """The host-local state folder of these settings (not created here)."""
    if settings.state_dir is not None:
        return Path(settings.state_dir).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/scoperun")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "scoperun"


def audit_dir_key(audit_dir: Path) -> str:
    """A short stable key naming one audit folder in the state folder (index file, chain head)."""
    resolved = str(Path(audit_dir).expanduser().resolve())
    return hashlib.sha256(resolved.encode()).hexdigest()[:16]


def index_path(settings: Settings, audit_dir: Path) -> Path:
    """The SQLite index for `audit_dir`: SCOPERUN_INDEX_PATH, else one file per workspace."""
    if settings.index_path is not None:
        return Path(settings.index_path).expanduser()
    return state_dir(settings) / "index" / f"{audit_dir_key(audit_dir)}.sqlite3"


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (pid reuse makes it a lower bound)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        # A zombie (killed, not yet reaped by its parent) still answers kill(0); it is dead.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def epoch_of(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time from a record; None when absent or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class StaleRun:
    """Why a record still says `running` although its run cannot be going on any more."""

    why: Literal["process-gone", "overdue"]
    pid: Any
    host: Any
    elapsed: float | None
    timeout: float


def stale_run(record: dict[str, Any], *, now: float, grace: float, default_timeout: float) -> StaleRun | None:
    """A `running` record whose process on this host is gone, or that is past timeout + grace; else None."""
    if record.get("status") != "running":
        return None
    pid, host = record.get("pid"), record.get("host")
    started = epoch_of(record.get("started_at") or record.get("timestamp"))
    timeout = float((record.get("limits") or {}).get("timeout") or default_timeout)
    elapsed = None if started is None else now - started
    if host == HOST and isinstance(pid, int) and not process_alive(pid):
        return StaleRun("process-gone", pid, host, elapsed, timeout)
    if elapsed is not None and elapsed > timeout + grace:
        return StaleRun("overdue", pid, host, elapsed, timeout)
    return None
