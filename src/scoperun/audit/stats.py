"""Run statistics from the audit index (fast) or from every JSON record (the plan's way, for
comparison): totals by status, success rate, durations, container start, recent runs, busiest
scripts and cases, and the plan's success metrics against their targets.

    from scoperun.audit.stats import stats_for_settings, render_stats_markdown
    print(render_stats_markdown(stats_for_settings(settings, since="7d")))
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from scoperun.audit.index import AuditIndex, named_rows, record_fields, row_from_record, where_clause
from scoperun.config import Settings
from scoperun.errors import ConfigError

__all__ = [
    "Stats",
    "compute_stats",
    "compute_stats_from_files",
    "parse_since",
    "render_stats_markdown",
    "stats_for_settings",
]

# Runs that reached the engine; `rejected` (nothing ran) and `running` are not executions.
EXECUTED = ("succeeded", "failed", "timed_out", "oom_killed", "error", "cancelled", "abandoned")
# Runs with a measured end: abandoned runs' "duration" is only how long until gc noticed.
TIMED = ("succeeded", "failed", "timed_out", "oom_killed", "error", "cancelled")
_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str | None, *, now: float | None = None) -> float | None:
    """`7d`, `24h`, `30m`, `2w`, `90s` ago, or an ISO date/time, as epoch seconds (None for None)."""
    if text is None or text == "":
        return None
    now = time.time() if now is None else now
    match = _SINCE_RE.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither a span (7d, 24h, 30m) nor an ISO date (2025-01-31)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Summary(BaseModel):
    """Mean and percentiles (nearest rank) of a set of seconds."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None


class RecentRun(BaseModel):
    """One recent run."""

    execution_id: str
    started_at: datetime | None
    case: str | None
    script: str | None
    status: str
    duration: float | None


class Busiest(BaseModel):
    """A script or case and how much it ran."""

    name: str
    runs: int
    succeeded: int
    mean_duration: float | None


class Target(BaseModel):
    """One of the plan's success metrics against its target."""

    name: str
    target: str
    value: float | None
    met: bool | None = Field(description="None when there is nothing to measure yet.")


class Stats(BaseModel):
    """Everything `scoperun stats` and `monitor_script_executions` report."""

    source: Literal["index", "files"]
    generated_at: datetime
    since: datetime | None = None
    case: str | None = None
    total: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    in_progress: int = Field(0, description="Running and within timeout + grace.")
    success_rate: float | None = Field(None, description="succeeded / runs that reached the engine (rejected excluded).")
    duration: Summary = Field(default_factory=Summary)
    container_start: Summary = Field(default_factory=Summary)
    audit_completeness: float | None = Field(None, description="Finished records / runs not in progress.")
    recent: list[RecentRun] = Field(default_factory=list)
    busiest_scripts: list[Busiest] = Field(default_factory=list)
    busiest_cases: list[Busiest] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)
    file_access: dict[str, int] = Field(default_factory=dict, description=(
        "Case-file accesses by kind (read, list, read_document, search, download, write, ...) and `refused`."))


def _rank(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def _summary(values: list[float]) -> Summary:
    values = sorted(values)
    if not values:
        return Summary()
    return Summary(count=len(values), mean=sum(values) / len(values), p50=_rank(values, 0.5), p95=_rank(values, 0.95))


def _in_progress(started: float | None, timeout: float | None, *, now: float, default_timeout: float,
                 grace: float) -> bool:
    return started is None or started + (timeout or default_timeout) + grace >= now


def _finish(stats: Stats, running_fresh: int) -> Stats:
    """Derived figures shared by both sources: success rate, completeness, targets."""
    counts = stats.by_status
    executed = sum(counts.get(s, 0) for s in EXECUTED)
    stats.in_progress = running_fresh
    stats.success_rate = counts.get("succeeded", 0) / executed if executed else None
    settled = stats.total - running_fresh
    finished = stats.total - counts.get("running", 0) - counts.get("abandoned", 0)
    stats.audit_completeness = finished / settled if settled else None
    rate, mean, start, complete = (stats.success_rate, stats.duration.mean, stats.container_start.p95,
                                   stats.audit_completeness)
    stats.targets = [
        Target(name="success rate", target="> 95 %", value=rate, met=None if rate is None else rate > 0.95),
        Target(name="mean execution time (s)", target="< 60 s", value=mean, met=None if mean is None else mean < 60),
        Target(name="container start p95 (s)", target="< 5 s", value=start, met=None if start is None else start < 5),
        Target(name="audit completeness", target="100 %", value=complete,
               met=None if complete is None else complete >= 1.0),
    ]
    return stats


def _dt(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def compute_stats(index: AuditIndex, *, since: float | None = None, case: str | None = None,
                  now: float | None = None, recent: int = 10, top: int = 5,
                  default_timeout: float = 300.0, grace: float = 120.0) -> Stats:
    """Statistics through the SQLite index (call `index.reindex()` first to include other hosts' runs)."""
    now = time.time() if now is None else now
    conn = index.connect()
    where, params = where_clause(case=case, since=since)
    stats = Stats(source="index", generated_at=datetime.fromtimestamp(now, UTC), since=_dt(since), case=case)
    # With a filter, `+column` keeps SQLite from scanning a GROUP BY-ordered index end to end (100k
    # records: ~1 s) instead of range-searching the filter's covering index (a day of them: ~5 ms).
    group = "+" if where else ""
    stats.by_status = {s: n for s, n in conn.execute(
        f"SELECT status, COUNT(*) FROM records {where} GROUP BY {group}status", params)}
    stats.total = sum(stats.by_status.values())
    running = conn.execute(f"SELECT started, timeout FROM records {where} {'AND' if where else 'WHERE'} "
                           f"status = 'running'", params).fetchall()
    fresh = sum(1 for s, t in running if _in_progress(s, t, now=now, default_timeout=default_timeout, grace=grace))
    timed = f"{where} {'AND' if where else 'WHERE'} status IN ({', '.join('?' * len(TIMED))})"
    stats.duration = _sql_summary(conn, "duration", timed, [*params, *TIMED])
    stats.container_start = _sql_summary(conn, "container_start", timed, [*params, *TIMED], positive=True)
    stats.recent = [
        RecentRun(execution_id=r["execution_id"], started_at=_dt(r["started"]), case=r["case_name"],
                  script=r["script_path"], status=r["status"], duration=r["duration"])
        for r in named_rows(conn, f"SELECT execution_id, started, case_name, script_path, status, duration "
                                  f"FROM records {where} ORDER BY started DESC LIMIT ?", [*params, recent])
    ]
    for column, target in (("script_path", stats.busiest_scripts), ("case_name", stats.busiest_cases)):
        for name, runs, ok, mean in conn.execute(
            f"SELECT {column}, COUNT(*) AS n, SUM(status = 'succeeded'), "
            f"AVG(CASE WHEN status IN ({', '.join('?' * len(TIMED))}) THEN duration END) FROM records {where} "
            f"GROUP BY {group}{column} ORDER BY n DESC, {column} LIMIT ?", [*TIMED, *params, top]):
            target.append(Busiest(name=str(name), runs=runs, succeeded=ok or 0, mean_duration=mean))
    return _finish(stats, fresh)


def _sql_summary(conn: Any, column: str, where: str, params: list[Any], *, positive: bool = False) -> Summary:
    cond = f"{where} AND {column} IS NOT NULL" + (f" AND {column} > 0" if positive else "")
    count, mean = conn.execute(f"SELECT COUNT({column}), AVG({column}) FROM records {cond}", params).fetchone()
    if not count:
        return Summary()

    def rank(p: float) -> float:
        offset = max(0, math.ceil(p * count) - 1)
        return float(conn.execute(f"SELECT {column} FROM records {cond} ORDER BY {column} LIMIT 1 OFFSET ?",
                                  [*params, offset]).fetchone()[0])

    return Summary(count=count, mean=mean, p50=rank(0.5), p95=rank(0.95))


def compute_stats_from_files(directory: Path, *, since: float | None = None, case: str | None = None,
                             now: float | None = None, recent: int = 10, top: int = 5,
                             default_timeout: float = 300.0, grace: float = 120.0) -> Stats:
    """The same statistics by reading every JSON record, as the plan did (slow on gcsfuse; for comparison)."""
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    for path in Path(directory).glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            rows.append(record_fields(row_from_record(path.stem, record, 0, 0)))
    rows = [r for r in rows if (case is None or r["case_name"] == case)
            and (since is None or (r["started"] is not None and r["started"] >= since))]
    stats = Stats(source="files", generated_at=datetime.fromtimestamp(now, UTC), since=_dt(since), case=case, total=len(rows))
    stats.by_status = dict(Counter(r["status"] for r in rows))
    fresh = sum(1 for r in rows if r["status"] == "running"
                and _in_progress(r["started"], r["timeout"], now=now, default_timeout=default_timeout, grace=grace))
    timed = [r for r in rows if r["status"] in TIMED]
    stats.duration = _summary([r["duration"] for r in timed if r["duration"] is not None])
    stats.container_start = _summary([r["container_start"] for r in timed
                                      if r["container_start"] is not None and r["container_start"] > 0])
    newest = sorted(rows, key=lambda r: (r["started"] is not None, r["started"] or 0), reverse=True)[:recent]
    stats.recent = [RecentRun(execution_id=r["execution_id"], started_at=_dt(r["started"]), case=r["case_name"],
                              script=r["script_path"], status=r["status"], duration=r["duration"]) for r in newest]
    for column, target in (("script_path", stats.busiest_scripts), ("case_name", stats.busiest_cases)):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            groups[str(r[column])].append(r)
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
        for name, members in ranked:
            durations = [m["duration"] for m in members if m["status"] in TIMED and m["duration"] is not None]
            target.append(Busiest(name=name, runs=len(members),
                                  succeeded=sum(m["status"] == "succeeded" for m in members),
                                  mean_duration=sum(durations) / len(durations) if durations else None))
    return _finish(stats, fresh)


def stats_for_settings(settings: Settings, *, since: str | float | None = None, case: str | None = None,
                       reindex: bool = True, max_age: float = 30.0, **kwargs: Any) -> Stats:
    """Statistics of the configured workspace through its index.

    With `reindex`, the index first catches up with records other hosts wrote, unless it did so
    less than `max_age` seconds ago (0 = always).
    """
    from scoperun.audit.log import AuditLog

    audit = AuditLog.from_settings(settings, Path(settings.workspace).expanduser().resolve())
    assert audit.index is not None
    if reindex:
        audit.index.reindex_if_stale(max_age)
    since_epoch = parse_since(since) if isinstance(since, str) else since
    stats = compute_stats(audit.index, since=since_epoch, case=case, default_timeout=settings.timeout,
                          grace=settings.gc_grace, **kwargs)
    from scoperun.audit.access import access_counts

    try:
        stats.file_access = access_counts(settings, Path(settings.workspace).expanduser().resolve(),
                                          since=since_epoch, case=case)
    except OSError:
        pass  # the statistics of runs stand without them
    return stats


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def render_stats_markdown(stats: Stats) -> str:
    """The statistics as markdown, for agents (`monitor_script_executions`)."""
    scope = []
    if stats.since:
        scope.append(f"since {stats.since:%Y-%m-%d %H:%M} UTC")
    if stats.case:
        scope.append(f"case {stats.case}")
    lines = [f"**Execution statistics** ({', '.join(scope) or 'all time'}): {stats.total} runs", ""]
    if stats.file_access:
        accesses = ", ".join(f"{kind} {n}" for kind, n in stats.file_access.items())
        lines += [f"File accesses (audited): {accesses}", ""]
    if not stats.total:
        return "\n".join([*lines, "No executions logged yet."])
    lines += [f"- {status}: {n}" for status, n in sorted(stats.by_status.items(), key=lambda kv: -kv[1])]
    lines += [
        f"- Success rate: {_pct(stats.success_rate)} (of runs that reached the engine)",
        f"- Duration: mean {_sec(stats.duration.mean)}, p50 {_sec(stats.duration.p50)}, p95 {_sec(stats.duration.p95)}",
        f"- Container start: p50 {_sec(stats.container_start.p50)}, p95 {_sec(stats.container_start.p95)}",
        f"- In progress: {stats.in_progress}",
        "", "**Success metrics (the plan's targets)**", "", "| metric | target | value | met |", "|---|---|---|---|",
    ]
    for t in stats.targets:
        value = _pct(t.value) if "rate" in t.name or "completeness" in t.name else _sec(t.value)
        lines.append(f"| {t.name} | {t.target} | {value} | {'n/a' if t.met is None else ('yes' if t.met else 'NO')} |")
    lines += ["", "**Recent runs**", ""]
    for r in stats.recent:
        when = f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "?"
        mark = "✅" if r.status == "succeeded" else ("⏳" if r.status == "running" else "❌")
        lines.append(f"- {when}: `{r.script}` on {r.case} {mark} {r.status} ({_sec(r.duration)}) — {r.execution_id}")
    for title, items in (("Busiest scripts", stats.busiest_scripts), ("Busiest cases", stats.busiest_cases)):
        lines += ["", f"**{title}**", ""]
        lines += [f"- {b.name}: {b.runs} runs, {b.succeeded} succeeded, mean {_sec(b.mean_duration)}" for b in items]
    return "\n".join(lines)
