"""The SQLite audit index and the statistics computed through it (and through every file, as the plan did)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Executor, Settings
from scoperun.audit.index import AuditIndex
from scoperun.audit.log import AuditLog
from scoperun.audit.metrics import make_registry
from scoperun.audit.stats import (
    compute_stats,
    compute_stats_from_files,
    parse_since,
    render_stats_markdown,
    stats_for_settings,
)
from scoperun.errors import ConfigError
from scoperun.testing import FakeBackend, FakeRun, fake_records
from tests.conftest import CASE

NOW = 1_780_000_000.0


def write_records(directory: Path, records: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for r in records:
        (directory / f"{r['execution_id']}.json").write_text(json.dumps(r))


def comparable(stats) -> dict:
    """The stats without their source, floats rounded (SQL and Python sum in different orders)."""

    def rounded(value):
        if isinstance(value, float):
            return round(value, 9)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    data = stats.model_dump()
    data.pop("source")
    return rounded(data)


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "audit"
    records = fake_records(600, seed=7, now=NOW)
    # A plan-era record: no status, only `success`.
    records.append({"timestamp": "2026-05-01T10:00:00", "execution_id": "exec_plan_era", "case_name": CASE,
                    "script_path": "Tools/old.py", "exit_code": 0, "stdout_length": 1, "stderr_length": 0,
                    "success": True})
    write_records(directory, records)
    return directory


@pytest.mark.parametrize(("since", "case"), [(None, None), (NOW - 7 * 86400, None), (None, "Case-003-MVA-2024")])
def test_index_stats_equal_the_read_every_file_stats(tmp_path: Path, audit_dir: Path, since, case) -> None:
    """Statistics through the index equal those computed by reading every record, with and without filters."""
    index = AuditIndex(tmp_path / "idx.sqlite3", audit_dir)
    index.reindex()
    fast = compute_stats(index, since=since, case=case, now=NOW)
    slow = compute_stats_from_files(audit_dir, since=since, case=case, now=NOW)
    assert fast.source == "index" and slow.source == "files"
    assert comparable(fast) == comparable(slow)
    assert fast.total > 0 and fast.duration.p95 >= fast.duration.p50 > 0


def test_stats_figures_and_targets(tmp_path: Path, audit_dir: Path) -> None:
    """Totals, success rate over executed runs, completeness and the plan's four targets are reported."""
    index = AuditIndex(tmp_path / "idx.sqlite3", audit_dir)
    index.reindex()
    stats = compute_stats(index, now=NOW)
    assert stats.total == 601 and sum(stats.by_status.values()) == 601
    executed = sum(stats.by_status.get(s, 0) for s in ("succeeded", "failed", "timed_out", "oom_killed", "error"))
    assert stats.success_rate == pytest.approx(stats.by_status["succeeded"] / executed)
    # fake "running" records are weeks old: not in progress, so they count against completeness.
    assert stats.in_progress == 0
    assert stats.audit_completeness == pytest.approx((601 - stats.by_status["running"]) / 601)
    assert [t.name for t in stats.targets] == ["success rate", "mean execution time (s)",
                                               "container start p95 (s)", "audit completeness"]
    assert stats.targets[3].met is False and stats.targets[2].met is True
    assert len(stats.recent) == 10 and stats.recent[0].started_at >= stats.recent[-1].started_at
    assert len(stats.busiest_scripts) == 5 and stats.busiest_scripts[0].runs >= stats.busiest_scripts[-1].runs


def test_markdown_rendering_carries_the_figures(tmp_path: Path, audit_dir: Path) -> None:
    """The markdown for agents has the totals, the targets table, recent runs and busiest scripts."""
    index = AuditIndex(tmp_path / "idx.sqlite3", audit_dir)
    index.reindex()
    stats = compute_stats(index, now=NOW)
    text = render_stats_markdown(stats)
    assert "601 runs" in text and "| success rate | > 95 % |" in text
    assert "**Recent runs**" in text and stats.recent[0].execution_id in text
    assert f"- {stats.busiest_scripts[0].name}: {stats.busiest_scripts[0].runs} runs" in text
    empty = AuditIndex(tmp_path / "empty.sqlite3", tmp_path / "nothing")
    assert "No executions logged yet." in render_stats_markdown(compute_stats(empty, now=NOW))


def test_reindex_is_incremental(tmp_path: Path, audit_dir: Path) -> None:
    """Reindex reads only new or changed files, drops deleted ones, and takes other hosts' records."""
    index = AuditIndex(tmp_path / "idx.sqlite3", audit_dir)
    first = index.reindex()
    assert first.added == 601 and first.scanned == 601
    again = index.reindex()
    assert (again.added, again.updated, again.removed) == (0, 0, 0)
    victim = sorted(audit_dir.glob("*.json"))[0]
    record = json.loads(victim.read_text())
    record["status"], record["message"] = "failed", "changed by hand, longer than before"
    victim.write_text(json.dumps(record))
    sorted(audit_dir.glob("*.json"))[1].unlink()
    other = fake_records(1, seed=99, now=NOW)[0] | {"execution_id": "exec_from_other_host", "host": "vm-2"}
    write_records(audit_dir, [other])
    (audit_dir / "notes.txt").write_text("not a record")
    delta = index.reindex()
    assert (delta.added, delta.updated, delta.removed) == (1, 1, 1)
    assert index.query(status="failed", limit=1000)
    assert [r["host"] for r in index.query(limit=1000) if r["execution_id"] == "exec_from_other_host"] == ["vm-2"]
    assert index.count() == 601


def test_written_records_are_indexed_without_reindex(settings: Settings, workspace: Path) -> None:
    """Runs update the index as their records are written: list and stats see them at once."""
    ex = Executor(settings, backend=FakeBackend(script=lambda spec: FakeRun(exit_code=1)))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    audit = AuditLog.from_settings(settings, workspace.resolve())
    rows = audit.index.query()
    assert [(r["execution_id"], r["status"], r["exit_code"]) for r in rows] == [(result.execution_id, "failed", 1)]
    stats = stats_for_settings(settings, reindex=False)
    assert stats.by_status == {"failed": 1} and stats.success_rate == 0.0


def test_index_path_reused_for_another_workspace_is_rebuilt(tmp_path: Path, audit_dir: Path) -> None:
    """An explicit index path reused for another audit folder is emptied rather than mixed."""
    path = tmp_path / "shared.sqlite3"
    AuditIndex(path, audit_dir).reindex()
    other = tmp_path / "other-audit"
    write_records(other, fake_records(3, seed=1, now=NOW))
    index = AuditIndex(path, other)
    assert index.count() == 0
    index.reindex()
    assert index.count() == 3


def test_index_location_default_and_override(tmp_path: Path, workspace: Path, monkeypatch) -> None:
    """The index lives in the host-local state folder by default; SCOPERUN_INDEX_PATH overrides it."""
    state = tmp_path / "state-here"
    monkeypatch.setenv("SCOPERUN_STATE_DIR", str(state))
    audit = AuditLog.from_settings(Settings(workspace=workspace), workspace)
    assert audit.index.path.parent == state / "index"
    monkeypatch.setenv("SCOPERUN_INDEX_PATH", str(tmp_path / "my.sqlite3"))
    assert AuditLog.from_settings(Settings(workspace=workspace), workspace).index.path == tmp_path / "my.sqlite3"


def test_parse_since() -> None:
    """--since takes spans (7d, 24h, 30m, 2w) and ISO dates, and refuses anything else with advice."""
    assert parse_since("7d", now=NOW) == NOW - 7 * 86400
    assert parse_since("90m", now=NOW) == NOW - 5400
    assert parse_since("2026-01-31") == parse_since("2026-01-31T00:00:00+00:00")
    assert parse_since(None) is None
    with pytest.raises(ConfigError, match="ISO date"):
        parse_since("last week")


def test_metrics_collector_reports_status_histogram_and_in_progress(tmp_path: Path, monkeypatch) -> None:
    """The Prometheus collector reads runs by status, a duration histogram and runs in progress from the index."""
    ws = tmp_path / "ws"
    (ws / "projects").mkdir(parents=True)
    records = fake_records(200, seed=3, now=time.time())
    fresh = dict(records[0], execution_id="exec_in_progress", status="running", started_at=None,
                 timestamp=None, finished_at=None, duration=None, durations=None)
    write_records(ws / "Database" / "script_executions", [*records, fresh])
    registry = make_registry(Settings(workspace=ws), refresh=0)
    counts = {s: sum(1 for r in records if r["status"] == s) for s in {r["status"] for r in records}}
    counts["running"] = counts.get("running", 0) + 1
    for status, n in counts.items():
        assert registry.get_sample_value("scoperun_runs_total", {"status": status}) == n
    timed = [r for r in records if r["status"] in ("succeeded", "failed", "timed_out", "oom_killed", "error")]
    assert registry.get_sample_value("scoperun_run_duration_seconds_count") == len(timed)
    assert registry.get_sample_value("scoperun_run_duration_seconds_bucket", {"le": "+Inf"}) == len(timed)
    assert registry.get_sample_value("scoperun_run_duration_seconds_sum") == pytest.approx(
        sum(r["duration"] for r in timed))
    assert registry.get_sample_value("scoperun_runs_in_progress") == 1
