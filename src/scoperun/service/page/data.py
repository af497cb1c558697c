"""What the page shows, read from the audit index, the records and the alert state (no engine calls).

Every query goes through the SQLite index's covering indexes, so the overview and the runs table
stay fast with 100,000 records (benchmarks/page.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scoperun.audit.index import AuditIndex
from scoperun.audit.stats import EXECUTED, TIMED, Stats, compute_stats, parse_since
from scoperun.config import Settings
from scoperun.errors import ConfigError

__all__ = ["DURATION_BUCKETS", "START_BUCKETS", "RunFilters", "overview", "runs_page"]

DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
START_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
PAGE_SIZE = 50
STATUSES = ("running", "succeeded", "failed", "timed_out", "oom_killed", "rejected", "error", "cancelled", "abandoned")
_ROW = ("execution_id", "started", "status", "case_name", "script_path", "requested_by", "duration",
        "container_start", "exit_code", "message")


@dataclass
class Overview:
    """The overview page's figures for one window."""

    since: float
    window: str
    stats: Stats
    hours: list[tuple[float, int, int, int]] = field(default_factory=list)  # (hour start, runs, executed, ok)
    durations: list[tuple[str, int]] = field(default_factory=list)
    starts: list[tuple[str, int]] = field(default_factory=list)
    running: int = 0


def _histogram(conn: Any, column: str, bounds: tuple[float, ...], since: float, *,
               positive: bool) -> list[tuple[str, int]]:
    marks = ", ".join(f"SUM({column} <= {b})" for b in bounds)
    cond = f"{column} > 0" if positive else f"{column} IS NOT NULL"
    row = conn.execute(f"SELECT COUNT(*), {marks} FROM records WHERE started >= ? AND {cond} "
                       f"AND status IN ({', '.join('?' * len(TIMED))})", [since, *TIMED]).fetchone()
    total, *cumulative = (v or 0 for v in row)
    out, previous = [], 0
    for i, b in enumerate(bounds):
        low = "0" if i == 0 else f"{bounds[i - 1]:g}"
        out.append((f"{low}–{b:g} s", cumulative[i] - previous))
        previous = cumulative[i]
    out.append((f"> {bounds[-1]:g} s", total - previous))
    return out


def overview(index: AuditIndex, settings: Settings, *, window: str = "24h", now: float | None = None) -> Overview:
    """Targets, counts by status/tool/case, runs per hour, success rate per hour and histograms of a window."""
    now = time.time() if now is None else now
    try:
        since = parse_since(window, now=now)
    except ConfigError:
        window, since = "24h", now - 86400
    assert since is not None
    stats = compute_stats(index, since=since, now=now, recent=0, top=8, default_timeout=settings.timeout,
                          grace=settings.gc_grace)
    from scoperun.audit.access import access_counts

    try:  # case-file accesses (reads included) are audited apart from runs
        stats.file_access = access_counts(settings, Path(settings.workspace).expanduser().resolve(), since=since)
    except OSError:
        pass
    conn = index.connect()
    executed = ", ".join("?" * len(EXECUTED))
    hours = conn.execute(
        f"SELECT CAST(started / 3600 AS INTEGER) AS h, COUNT(*), SUM(status IN ({executed})), "
        f"SUM(status = 'succeeded') FROM records WHERE started >= ? GROUP BY h ORDER BY h",
        [*EXECUTED, since]).fetchall()
    by_hour = {h: (n, e or 0, ok or 0) for h, n, e, ok in hours}
    first, last = int(since // 3600), int(now // 3600)
    if last - first > 24 * 14:  # long windows: show the last two weeks of hours
        first = last - 24 * 14
    series = [(h * 3600.0, *by_hour.get(h, (0, 0, 0))) for h in range(first, last + 1)]
    return Overview(since=since, window=window, stats=stats, hours=series,
                    durations=_histogram(conn, "duration", DURATION_BUCKETS, since, positive=False),
                    starts=_histogram(conn, "container_start", START_BUCKETS, since, positive=True),
                    running=stats.in_progress)


@dataclass
class RunFilters:
    """The runs table's filters, as they appear in the URL (bookmarkable)."""

    case: str = ""
    tool: str = ""
    status: str = ""
    requested_by: str = ""
    since: str = ""
    until: str = ""
    q: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, query: Any) -> RunFilters:
        """Read the filters from a query string mapping; unknown or malformed values are dropped."""
        values = {k: str(query.get(k, "")).strip()[:200] for k in ("case", "tool", "status", "requested_by",
                                                                     "since", "until", "q")}
        if values["status"] not in STATUSES:
            values["status"] = ""
        try:
            page = max(1, min(100_000, int(query.get("page", 1))))
        except ValueError:
            page = 1
        return cls(**values, page=page)

    def query(self, **changes: Any) -> str:
        """This filter set (with `changes`) as a query string, empty values left out."""
        from urllib.parse import urlencode

        merged = {**self.__dict__, **changes}
        return urlencode({k: v for k, v in merged.items() if v not in ("", None) and not (k == "page" and v == 1)})


@dataclass
class RunsPage:
    """One page of the runs table."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    error: str = ""


def runs_page(index: AuditIndex, filters: RunFilters, *, now: float | None = None) -> RunsPage:
    """The rows matching `filters`, newest first, PAGE_SIZE per page."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("case_name", filters.case), ("script_path", filters.tool), ("status", filters.status),
                          ("requested_by", filters.requested_by)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    error = ""
    for name, op in (("since", ">="), ("until", "<")):
        text = getattr(filters, name)
        if not text:
            continue
        try:
            moment = parse_since(text, now=now)
        except ConfigError:
            error = f"{name}: {text!r} is neither a span (7d, 24h, 30m) nor a date (2026-01-31 or 2026-01-31T09:00)"
            continue
        clauses.append(f"started {op} ?")
        params.append(moment)
    if filters.q:
        # An id, or the start of one: a range on the primary key, never a scan.
        clauses.append("execution_id >= ? AND execution_id < ?")
        params += [filters.q, filters.q + "\U0010ffff"]
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    conn = index.connect()
    total = conn.execute(f"SELECT COUNT(*) FROM records {where}", params).fetchone()[0]
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.page, pages)
    rows = conn.execute(f"SELECT {', '.join(_ROW)} FROM records {where} ORDER BY started DESC LIMIT ? OFFSET ?",
                        [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE]).fetchall()
    return RunsPage(rows=[dict(zip(_ROW, r, strict=True)) for r in rows], total=total, page=page, pages=pages,
                    error=error)


def cases(index: AuditIndex) -> list[dict[str, Any]]:
    """Each case with its number of runs, successes, last run and its status."""
    conn = index.connect()
    rows = conn.execute(
        "SELECT case_name, COUNT(*), SUM(status = 'succeeded'), MAX(started) FROM records "
        "WHERE case_name IS NOT NULL GROUP BY case_name ORDER BY MAX(started) DESC").fetchall()
    out = []
    for case, n, ok, last in rows:
        newest = conn.execute("SELECT execution_id, status FROM records WHERE case_name = ? AND started = ? LIMIT 1",
                              [case, last]).fetchone()
        out.append({"case": case, "runs": n, "succeeded": ok or 0, "last": last,
                    "last_id": newest[0] if newest else None, "last_status": newest[1] if newest else None})
    return out


def when(epoch: float | None) -> str:
    """A UTC time for tables."""
    return "—" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")
