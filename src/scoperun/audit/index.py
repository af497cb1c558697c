"""A host-local SQLite index of the JSON audit records, for fast queries and statistics.

The JSON files under `Database/script_executions/` stay the source of truth; the index is a
cache of their queryable fields. scoperun updates it whenever it writes a record, and
`reindex` catches it up with the files (records other hosts wrote included) by comparing each
file's size and modification time with what the index saw, so only new or changed files are read.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoperun.audit.state import epoch_of
from scoperun.errors import AuditError

__all__ = ["AuditIndex", "ReindexReport", "named_rows", "read_json_file", "record_fields", "row_from_record",
           "where_clause"]

log = logging.getLogger(__name__)
SCHEMA_VERSION = "1"

_COLUMNS = (
    "execution_id", "file_mtime_ns", "file_size", "started", "finished", "status", "success", "case_name",
    "script_path", "exit_code", "duration", "container_start", "queue_wait", "run_time", "stdout_length",
    "stderr_length", "host", "pid", "requested_by", "timeout", "message", "chain_id", "chain_seq",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS records (
    execution_id TEXT PRIMARY KEY, file_mtime_ns INTEGER, file_size INTEGER,
    started REAL, finished REAL, status TEXT, success INTEGER, case_name TEXT, script_path TEXT,
    exit_code INTEGER, duration REAL, container_start REAL, queue_wait REAL, run_time REAL,
    stdout_length INTEGER, stderr_length INTEGER, host TEXT, pid INTEGER, requested_by TEXT,
    timeout REAL, message TEXT, chain_id TEXT, chain_seq INTEGER
);
-- Covering indexes: statistics read only index pages, never the table (100k records: ~0.3 s).
CREATE INDEX IF NOT EXISTS records_started ON records
    (started, status, duration, container_start, case_name, script_path);
CREATE INDEX IF NOT EXISTS records_status ON records (status, duration, container_start);
CREATE INDEX IF NOT EXISTS records_case ON records (case_name, started, status, duration, container_start);
CREATE INDEX IF NOT EXISTS records_script ON records (script_path, status, duration);
"""


def named_rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of a query as dicts keyed by column name (through `sqlite3.Row`)."""
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return [dict(row) for row in cur.execute(sql, params).fetchall()]


def record_fields(row: Sequence[Any]) -> dict[str, Any]:
    """A `row_from_record` tuple as a dict keyed by column name."""
    return dict(zip(_COLUMNS, row, strict=True))


_UPSERT = (f"INSERT OR REPLACE INTO records ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _section(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def row_from_record(stem: str, record: dict[str, Any], mtime_ns: int, size: int) -> tuple[Any, ...]:
    """The index row of one parsed record; plan-era records (no `status`) are read by `success`."""
    status = record.get("status") or ("succeeded" if record.get("success") else "failed")
    durations = _section(record, "durations")
    limits = _section(record, "limits")
    chain = _section(record, "chain")
    duration = _num(record.get("duration"))
    if duration is None:
        duration = _num(durations.get("total"))
    return (
        stem, mtime_ns, size,
        epoch_of(record.get("started_at") or record.get("timestamp")),
        epoch_of(record.get("finished_at")),
        str(status),
        1 if record.get("success") else 0,
        record.get("case_name"),
        record.get("script_path"),
        record.get("exit_code") if isinstance(record.get("exit_code"), int) else None,
        duration,
        _num(durations.get("container_start")),
        _num(durations.get("queue_wait")),
        _num(durations.get("run")),
        record.get("stdout_length") if isinstance(record.get("stdout_length"), int) else None,
        record.get("stderr_length") if isinstance(record.get("stderr_length"), int) else None,
        record.get("host"),
        record.get("pid") if isinstance(record.get("pid"), int) else None,
        record.get("requested_by"),
        _num(limits.get("timeout")),
        str(record.get("message") or "")[:500],
        chain.get("id"),
        chain.get("seq") if isinstance(chain.get("seq"), int) else None,
    )


@dataclass
class ReindexReport:
    """What a reindex did."""

    scanned: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unreadable: int = 0
    seconds: float = 0.0


_KEPT_PER_THREAD = 4  # index connections a thread keeps open (least recently used closed first)
_connections = threading.local()


def _held() -> dict[tuple[str, str], tuple[sqlite3.Connection, int, tuple[int, int] | None]]:
    """This thread's open index connections: (index file, audit folder) -> (connection, pid, file identity)."""
    held: dict[tuple[str, str], tuple[sqlite3.Connection, int, tuple[int, int] | None]] | None = getattr(
        _connections, "held", None)
    if held is None:
        held = _connections.held = {}
    return held


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


class AuditIndex:
    """The SQLite index of one audit folder; safe to share between threads and processes."""

    def __init__(self, path: Path, audit_dir: Path) -> None:
        self.path = Path(path)
        self.audit_dir = Path(audit_dir)
        self._key = (str(self.path), str(self.audit_dir))

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (schema made, folder checked), opened on first use.

        Kept per thread and index file across `AuditIndex` objects (each run makes one), so a run
        does not pay for opening, configuring and checking a connection; a file replaced or
        removed since, or a forked process, gets a new one.
        """
        held = _held()
        found = held.get(self._key)
        if found is not None:
            conn, pid, ident = found
            if pid == os.getpid() and _identity(self.path) == ident:
                held[self._key] = held.pop(self._key)  # most recently used last
                return conn
            del held[self._key]
            if pid == os.getpid():
                _close_quietly(conn)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # WAL: readers (stats, metrics scrapes) never block the executor's writes.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._check_owner(conn)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit index {self.path} ({exc}). Delete it and run "
                             f"`scoperun audit reindex`, or set SCOPERUN_INDEX_PATH to a writable file.") from None
        except OSError as exc:
            raise AuditError(f"cannot create the audit index folder {self.path.parent} ({exc.strerror}). "
                             f"Set SCOPERUN_STATE_DIR or SCOPERUN_INDEX_PATH to a writable place.") from None
        held[self._key] = (conn, os.getpid(), _identity(self.path))
        while len(held) > _KEPT_PER_THREAD:  # e.g. a test session's many workspaces
            oldest = next(iter(held))
            old_conn, old_pid, _ = held.pop(oldest)
            if old_pid == os.getpid():
                _close_quietly(old_conn)
        return conn

    def _check_owner(self, conn: sqlite3.Connection) -> None:
        # An index made for another audit folder (SCOPERUN_INDEX_PATH reused) is emptied, not mixed in.
        want = str(self.audit_dir.expanduser().resolve())
        row = conn.execute("SELECT value FROM meta WHERE key='audit_dir'").fetchone()
        if row is not None and row[0] == want:
            return
        if row is not None:
            log.warning("audit index %s was made for %s; rebuilding it for %s", self.path, row[0], want)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM records")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('audit_dir', ?)", (want,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (the next use opens a new one)."""
        found = _held().pop(self._key, None)
        if found is not None and found[1] == os.getpid():
            found[0].close()

    # -- writes -------------------------------------------------------------------------------

    def upsert(self, record: dict[str, Any], path: Path) -> None:
        """Index one record just written at `path`."""
        st = path.stat()
        self.connect().execute(_UPSERT, row_from_record(path.stem, record, st.st_mtime_ns, st.st_size))

    def reindex(self, *, full: bool = False) -> ReindexReport:
        """Catch the index up with the JSON files; `full` re-reads every file."""
        t0 = time.monotonic()
        report = ReindexReport()
        conn = self.connect()
        known = {} if full else {
            r[0]: (r[1], r[2]) for r in conn.execute("SELECT execution_id, file_mtime_ns, file_size FROM records")
        }
        seen: set[str] = set()
        rows: list[tuple[Any, ...]] = []
        try:
            entries = os.scandir(self.audit_dir)
        except FileNotFoundError:
            entries = None
        except OSError as exc:
            raise AuditError(f"cannot list the audit folder {self.audit_dir} ({exc.strerror})") from None
        if entries is not None:
            with entries:
                for entry in entries:
                    name = entry.name
                    if not name.endswith(".json") or name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue
                    stem = name[:-5]
                    report.scanned += 1
                    seen.add(stem)
                    st = entry.stat(follow_symlinks=False)
                    before = known.get(stem)
                    if before == (st.st_mtime_ns, st.st_size):
                        continue
                    record = read_json_file(Path(entry.path))
                    if record is None:
                        report.unreadable += 1
                        continue
                    rows.append(row_from_record(stem, record, st.st_mtime_ns, st.st_size))
                    if before is None:
                        report.added += 1
                    else:
                        report.updated += 1
        gone = [(stem,) for stem in (set(known) if not full else set()) - seen]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if full:
                conn.execute("DELETE FROM records")
            conn.executemany(_UPSERT, rows)
            conn.executemany("DELETE FROM records WHERE execution_id = ?", gone)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('reindexed_at', ?)", (str(time.time()),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if len(rows) + len(gone) > 1000:
            conn.execute("ANALYZE")  # fresh statistics keep the query planner on the covering indexes
        report.removed = len(gone)
        report.seconds = time.monotonic() - t0
        return report

    def reindex_if_stale(self, max_age: float) -> ReindexReport | None:
        """Reindex when the last catch-up is older than `max_age` seconds (this host's writes are
        indexed as they happen; catching up is for other hosts' records, and lists the folder)."""
        row = self.connect().execute("SELECT value FROM meta WHERE key='reindexed_at'").fetchone()
        if row is not None and time.time() - float(row[0]) < max_age:
            return None
        return self.reindex()

    # -- reads --------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of indexed records."""
        return int(self.connect().execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def query(self, *, case: str | None = None, status: str | None = None, script: str | None = None,
             since: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Indexed rows, newest first, filtered by case, status, script and start time (epoch)."""
        where, params = where_clause(case=case, status=status, script=script, since=since)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM records {where} ORDER BY started DESC LIMIT ?"
        return named_rows(self.connect(), sql, (*params, max(1, limit)))

    def running(self) -> list[dict[str, Any]]:
        """Rows still marked `running`."""
        return named_rows(self.connect(), f"SELECT {', '.join(_COLUMNS)} FROM records WHERE status='running'")


def where_clause(*, case: str | None = None, status: str | None = None, script: str | None = None,
           since: float | None = None) -> tuple[str, list[Any]]:
    """A WHERE clause (or '') and its parameters for the common filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("case_name", case), ("status", status), ("script_path", script)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("started >= ?")
        params.append(since)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
