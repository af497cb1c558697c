"""monitor_script_executions' statistics computed from the JSON audit records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scoperun import Settings
from scoperun.tools.monitor import execution_stats_markdown, read_record_stats, render_record_stats

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def write(directory: Path, eid: str, *, minutes_ago: float, status: str | None, duration: float | None = 1.0,
          timeout: float = 300, **extra) -> None:
    started = NOW - timedelta(minutes=minutes_ago)
    record = {"timestamp": started.isoformat(), "execution_id": eid, "case_name": "Doe", "script_path": "Tools/a.py",
              "success": status == "succeeded", "started_at": started.isoformat(), "duration": duration,
              "limits": {"timeout": timeout}, **extra}
    if status is not None:
        record["status"] = status
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{eid}.json").write_text(json.dumps(record))


def test_counts_rate_and_recent_order(tmp_path: Path) -> None:
    """Counts by status, success rate over runs that reached a container, newest first, durations."""
    d = tmp_path / "audit"
    write(d, "exec_a", minutes_ago=50, status="succeeded", duration=2.0)
    write(d, "exec_b", minutes_ago=40, status="failed", duration=4.0)
    write(d, "exec_c", minutes_ago=30, status="rejected", duration=0.0)
    write(d, "exec_d", minutes_ago=20, status="timed_out", duration=300.0)
    write(d, "exec_e", minutes_ago=10, status="succeeded", duration=1.0)
    stats = read_record_stats(d, now=NOW.timestamp())
    assert stats.total == 5 and stats.by_status == {"succeeded": 2, "failed": 1, "rejected": 1, "timed_out": 1}
    assert stats.finished_ran == 4 and stats.success_rate == 0.5
    assert [r["execution_id"] for r in stats.recent] == ["exec_e", "exec_d", "exec_c", "exec_b", "exec_a"]
    assert sorted(stats.durations) == [1.0, 2.0, 4.0, 300.0]  # the rejected run's 0 s is not a duration
    text = render_record_stats(stats)
    assert "- Success rate: 50.0% of 4 finished runs" in text
    assert text.index("exec_e") < text.index("exec_a")


def test_legacy_plan_records_unreadable_files_and_temp_files(tmp_path: Path) -> None:
    """Records without `status` (the plan's) count by `success`; broken files are counted, .tmp files ignored."""
    d = tmp_path / "audit"
    write(d, "exec_old_ok", minutes_ago=5, status=None)
    (d / "exec_old_ok.json").write_text(json.dumps({**json.loads((d / "exec_old_ok.json").read_text()),
                                                    "success": True}))
    write(d, "exec_old_bad", minutes_ago=6, status=None)
    (d / "exec_broken.json").write_text("{not json")
    (d / ".exec_x.1234.tmp").write_text("{}")
    stats = read_record_stats(d, now=NOW.timestamp())
    assert stats.by_status == {"succeeded": 1, "failed": 1} and stats.unreadable == 1
    assert "Unreadable record files: 1" in render_record_stats(stats)


def test_running_runs_are_not_failures_until_long_past_their_timeout(tmp_path: Path) -> None:
    """A fresh `running` record counts as running; one far past its timeout as unfinished; neither as failed."""
    d = tmp_path / "audit"
    write(d, "exec_now", minutes_ago=1, status="running", duration=None, timeout=300)
    write(d, "exec_stale", minutes_ago=60, status="running", duration=None, timeout=300)
    stats = read_record_stats(d, now=NOW.timestamp())
    assert stats.by_status == {"running": 1, "unfinished": 1}
    assert stats.success_rate is None
    assert "n/a (no run reached a container yet)" in render_record_stats(stats)


def test_no_records_at_all(tmp_path: Path) -> None:
    """A missing or empty audit folder says so instead of dividing by zero."""
    assert "No executions logged yet." in render_record_stats(read_record_stats(tmp_path / "missing"))
    settings = Settings(workspace=tmp_path)
    assert "No executions logged yet." in execution_stats_markdown(settings)
