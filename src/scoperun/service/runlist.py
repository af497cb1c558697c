"""GET /v1/runs: the audit index and the server's runs not yet in it (queued, starting), one listing.

Every run has one sort key, newest first: the start time of its audit record, or, before it has
one, when the server accepted it (queued) or gave it a slot (starting). A run's key only grows as
it moves from the queue into the index (its record starts after it was accepted), so a page that
showed it never shows it again: a cursor (the last key shown) pages without duplicates while runs
start and end between pages.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from scoperun.service.deps import Service
from scoperun.service.problems import Problem

__all__ = ["Pending", "RunList", "decode_cursor", "encode_cursor", "list_runs"]

_KEEP = ("execution_id", "status", "case_name", "script_path", "exit_code", "duration", "requested_by", "message")


class RunList(BaseModel):
    """One page of runs, newest first."""

    runs: list[dict[str, Any]]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; None at the end.")


@dataclass(frozen=True)
class Pending:
    """A run of this server without an audit record yet: queued, or given a slot and starting."""

    execution_id: str
    status: str  # queued | running
    case: str
    script: str
    requested_by: str | None
    key: float  # epoch: when it was accepted (queued) or given its slot (running)
    queue_position: int | None

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"execution_id": self.execution_id, "status": self.status, "case_name": self.case,
                               "script_path": self.script, "exit_code": None, "duration": None,
                               "requested_by": self.requested_by, "finished": None}
        if self.status == "queued":
            return row | {"message": f"waiting for a slot ({self.queue_position} ahead)", "started": None,
                          "submitted": self.key, "queue_position": self.queue_position}
        return row | {"message": "starting", "started": self.key}


def encode_cursor(key: float, execution_id: str) -> str:
    """The opaque cursor after a row whose sort key is `key`."""
    raw = json.dumps([key, execution_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(key, execution id) of a cursor this server gave out; a 422 problem otherwise."""
    try:
        key, execution_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(key), str(execution_id)
    except (ValueError, TypeError):
        raise Problem(422, "invalid-request", "cursor is not one this server gave out; start again without it") from None


def _wanted(run: Pending, *, case: str | None, status: str | None, requested_by: str | None, since: float | None,
            after: tuple[float, str] | None) -> bool:
    return ((case is None or run.case == case) and (status is None or run.status == status)
            and (requested_by is None or run.requested_by == requested_by) and (since is None or run.key >= since)
            and (after is None or (run.key, run.execution_id) < after))


def list_runs(service: Service, pending: list[Pending], *, case: str | None, status: str | None,
              requested_by: str | None, since: float | None, limit: int, cursor: str | None) -> RunList:
    """One page: the index's rows and the `pending` runs (not yet in it) merged newest first."""
    from scoperun.audit.index import _COLUMNS, where_clause
    from scoperun.audit.log import AuditLog

    after = decode_cursor(cursor) if cursor is not None else None
    audit = AuditLog.from_settings(service.settings, Path(service.settings.workspace).expanduser().resolve())
    assert audit.index is not None
    audit.index.reindex_if_stale(30.0)
    conn = audit.index.connect()
    # A pending run already in the index (it began between the snapshot and now) is listed once, from it.
    ids = [p.execution_id for p in pending]
    indexed: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        indexed.update(r[0] for r in conn.execute(
            f"SELECT execution_id FROM records WHERE execution_id IN ({', '.join('?' for _ in chunk)})", chunk))
    keys_rows: list[tuple[tuple[float, str], dict[str, Any]]] = [
        ((p.key, p.execution_id), p.row()) for p in pending if p.execution_id not in indexed
        and _wanted(p, case=case, status=status, requested_by=requested_by, since=since, after=after)]
    if status != "queued":  # the index holds no queued run
        where, params = where_clause(case=case, status=status, since=since)
        clauses = [where[len("WHERE "):]] if where else ["1"]
        if requested_by is not None:
            clauses.append("requested_by = ?")
            params.append(requested_by)
        if after is not None:
            clauses.append("(started < ? OR (started = ? AND execution_id < ?))")
            params.extend([after[0], after[0], after[1]])
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM records WHERE {' AND '.join(clauses)} "
               f"ORDER BY started DESC, execution_id DESC LIMIT ?")
        for values in conn.execute(sql, (*params, limit + 1)):
            r = dict(zip(_COLUMNS, values, strict=True))
            started = r["started"] if r["started"] is not None else float("-inf")  # unreadable: last
            keys_rows.append(((started, r["execution_id"]),
                              {k: r[k] for k in _KEEP} | {"started": r["started"], "finished": r["finished"]}))
    keys_rows.sort(key=lambda kr: kr[0], reverse=True)
    page, more = keys_rows[:limit], len(keys_rows) > limit
    return RunList(runs=[row for _, row in page],
                   next_cursor=encode_cursor(*page[-1][0]) if more and page else None)
