"""Audit index connections are kept per thread across `AuditIndex` objects (each run makes one), safely."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from scoperun.audit import index as index_module
from scoperun.audit.index import AuditIndex


def _record(execution_id: str) -> dict:
    return {"execution_id": execution_id, "status": "succeeded", "case_name": "c", "success": True}


def _write(audit: Path, execution_id: str) -> Path:
    audit.mkdir(parents=True, exist_ok=True)
    path = audit / f"{execution_id}.json"
    path.write_text("{}")
    return path


def test_objects_of_one_index_share_this_threads_connection(tmp_path: Path) -> None:
    """A second AuditIndex of the same file and folder reuses the connection; another thread gets its own."""
    audit = tmp_path / "audit"
    first, second = AuditIndex(tmp_path / "index.db", audit), AuditIndex(tmp_path / "index.db", audit)
    assert first.connect() is second.connect()
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(AuditIndex(tmp_path / "index.db", audit).connect()))
    thread.start()
    thread.join()
    assert other[0] is not first.connect()
    second.upsert(_record("exec_a"), _write(audit, "exec_a"))
    assert first.count() == 1


def test_a_removed_index_file_gets_a_new_connection_and_is_rebuilt(tmp_path: Path) -> None:
    """Deleting the index (as the docs say to when it is broken) never leaves writes going to the deleted file."""
    audit, db = tmp_path / "audit", tmp_path / "index.db"
    index = AuditIndex(db, audit)
    index.upsert(_record("exec_a"), _write(audit, "exec_a"))
    old = index.connect()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    later = AuditIndex(db, audit)
    later.upsert(_record("exec_b"), _write(audit, "exec_b"))
    assert later.connect() is not old
    assert db.exists() and later.count() == 1
    assert later.reindex().added == 1 and later.count() == 2


def test_a_thread_keeps_few_connections_and_closes_the_oldest(tmp_path: Path) -> None:
    """Past the per-thread cap the least recently used connection is closed; closing one drops it."""
    indexes = [AuditIndex(tmp_path / f"i{n}.db", tmp_path / f"a{n}") for n in range(index_module._KEPT_PER_THREAD + 1)]
    first = indexes[0].connect()
    for index in indexes[1:]:
        index.connect()
    assert indexes[0]._key not in index_module._held()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        first.execute("SELECT 1")
    last = indexes[-1]
    last.close()
    assert last._key not in index_module._held()
    assert last.count() == 0  # reopened on use
