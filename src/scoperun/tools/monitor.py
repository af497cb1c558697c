"""`monitor_script_executions`: recent activity and statistics of the audit trail, as markdown.

Until the audit index lands this reads the JSON records themselves (correctly: unreadable
records are counted, not silently dropped; legacy plan records without `status` are
understood; runs still in progress are not counted as failures; no division by zero).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..output import Redactor

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["RecordStats", "execution_stats_markdown", "read_record_stats", "render_record_stats"]

RECENT = 10
_STALE_GRACE = 120.0  # seconds past a run's timeout before a `running` record is called unfinished
_MARKS = {"succeeded": "✅", "failed": "❌", "timed_out": "⏱", "oom_killed": "❌", "rejected": "⛔",
          "error": "⚠️", "running": "⏳", "unfinished": "❓"}


@dataclass
class RecordStats:
    """What the records say: counts by status, durations and the most recent runs."""

    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    last_24h: int = 0
    durations: list[float] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished_ran(self) -> int:
        """Runs that reached the container and ended (rejected, running and unfinished excluded)."""
        return sum(n for s, n in self.by_status.items() if s not in {"rejected", "running", "unfinished"})

    @property
    def success_rate(self) -> float | None:
        """Succeeded / finished runs that reached the container; None when there are none."""
        ran = self.finished_ran
        return self.by_status.get("succeeded", 0) / ran if ran else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # The plan's records wrote naive UTC timestamps.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status_of(record: dict[str, Any], started: datetime | None, now: float, default_timeout: float) -> str:
    status = record.get("status")
    if not isinstance(status, str):
        return "succeeded" if record.get("success") else "failed"  # a record of the original plan
    if status == "running" and started is not None:
        timeout = (record.get("limits") or {}).get("timeout") or default_timeout
        if now - started.timestamp() > float(timeout) + _STALE_GRACE:
            return "unfinished"  # the process that ran it stopped before writing the end
    return status


def read_record_stats(directory: Path, *, default_timeout: float = 300.0, now: float | None = None) -> RecordStats:
    """Read every `*.json` record in `directory` (one pass) into statistics."""
    now = time.time() if now is None else now
    stats = RecordStats()
    if not directory.is_dir():
        return stats
    rows: list[dict[str, Any]] = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(".json") or entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            with open(entry.path, "rb") as fh:
                record = json.loads(fh.read())
            if not isinstance(record, dict):
                raise ValueError("not an object")  # noqa: TRY004 - caught just below, counted as unreadable
        except (OSError, ValueError):
            stats.unreadable += 1
            continue
        started = _parse_time(record.get("started_at") or record.get("timestamp"))
        status = _status_of(record, started, now, default_timeout)
        stats.total += 1
        stats.by_status[status] = stats.by_status.get(status, 0) + 1
        if started is not None and now - started.timestamp() <= 24 * 3600:
            stats.last_24h += 1
        duration = record.get("duration")
        if isinstance(duration, int | float) and status not in {"rejected", "running", "unfinished"}:
            stats.durations.append(float(duration))
        rows.append({"started": started, "status": status, "script": record.get("script_path", "?"),
                     "case": record.get("case_name", "?"), "duration": duration,
                     "execution_id": record.get("execution_id", entry.name[:-5])})
    floor = datetime.min.replace(tzinfo=UTC)
    rows.sort(key=lambda r: (r["started"] or floor, r["execution_id"]), reverse=True)
    stats.recent = rows[:RECENT]
    return stats


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def render_record_stats(stats: RecordStats, *, redactor: Redactor | None = None) -> str:
    """The statistics as markdown for a model: totals, rate, durations, recent runs."""
    redactor = redactor or Redactor({})
    if not stats.total:
        text = "**Execution Statistics:**\nNo executions logged yet."
        if stats.unreadable:
            text += f"\n({stats.unreadable} record file(s) could not be read.)"
        return text
    lines = ["**Execution Statistics:**", f"- Total: {stats.total} (last 24 h: {stats.last_24h})"]
    order = ["succeeded", "failed", "timed_out", "oom_killed", "rejected", "error", "running", "unfinished"]
    for status in sorted(stats.by_status, key=lambda s: order.index(s) if s in order else len(order)):
        lines.append(f"- {status}: {stats.by_status[status]}")
    rate = stats.success_rate
    lines.append("- Success rate: " + ("n/a (no run reached a container yet)" if rate is None else
                                       f"{rate * 100:.1f}% of {stats.finished_ran} finished runs "
                                       "(rejected runs never started and are not counted)"))
    if stats.durations:
        lines.append(f"- Duration: median {_median(stats.durations):.2f} s, "
                     f"mean {sum(stats.durations) / len(stats.durations):.2f} s, max {max(stats.durations):.2f} s")
    if stats.unreadable:
        lines.append(f"- Unreadable record files: {stats.unreadable}")
    lines += ["", "**Recent Executions:**"]
    for r in stats.recent:
        when = f"{r['started']:%Y-%m-%d %H:%M:%S} UTC" if r["started"] else "time unknown"
        took = f", {r['duration']:.1f} s" if isinstance(r["duration"], int | float) else ""
        line = (f"- {when}: {r['script']} on {r['case']} {_MARKS.get(r['status'], '')} {r['status']}{took}"
                f" — {r['execution_id']}")
        lines.append(redactor.redact(" ".join(line.splitlines())))
    return "\n".join(lines)


def execution_stats_markdown(settings: Settings, *, redactor: Redactor | None = None) -> str:
    """The markdown `monitor_script_executions` returns for the configured workspace."""
    # ---- SWITCH TO THE AUDIT INDEX HERE -------------------------------------------------------
    # When `scoperun.stats` (the SQLite index) is on main, replace the two lines below with:
    #     from ..stats import render_stats_markdown, stats_for_settings
    #     text = render_stats_markdown(stats_for_settings(settings))
    # so statistics no longer read every JSON record on every call (the plan's flaw 13).
    directory = Path(settings.workspace).expanduser().resolve() / settings.audit_dir
    text = render_record_stats(read_record_stats(directory, default_timeout=settings.timeout), redactor=redactor)
    # -------------------------------------------------------------------------------------------
    return (redactor or Redactor({})).redact(text)
