"""monitor_script_executions' markdown, computed through the audit index from the JSON records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scoperun import Settings
from scoperun.safety.redaction import Redactor
from scoperun.tools.monitor import execution_stats_markdown

NOW = datetime.now(UTC)


def write(directory: Path, eid: str, *, minutes_ago: float, status: str, duration: float = 1.0) -> None:
    started = NOW - timedelta(minutes=minutes_ago)
    record = {"timestamp": started.isoformat(), "execution_id": eid, "case_name": "Doe-MVA", "script_path": "Tools/a.py",
              "exit_code": 0 if status == "succeeded" else 1, "stdout_length": 1, "stderr_length": 0,
              "success": status == "succeeded", "status": status, "started_at": started.isoformat(),
              "finished_at": (started + timedelta(seconds=duration)).isoformat(), "duration": duration,
              "durations": {"queue_wait": 0.0, "container_start": 0.3, "run": duration, "total": duration},
              "limits": {"timeout": 300}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{eid}.json").write_text(json.dumps(record))


def test_counts_rate_and_recent_runs_newest_first(settings: Settings, workspace: Path) -> None:
    """Counts by status, the success rate and recent runs (newest first) come from the records."""
    d = workspace / "Database" / "script_executions"
    write(d, "exec_a", minutes_ago=50, status="succeeded", duration=2.0)
    write(d, "exec_b", minutes_ago=40, status="failed", duration=4.0)
    write(d, "exec_c", minutes_ago=10, status="succeeded", duration=1.0)
    text = execution_stats_markdown(settings)
    assert "3 runs" in text and "- succeeded: 2" in text and "- failed: 1" in text
    assert "Success rate: 66.7 %" in text
    assert text.index("exec_c") < text.index("exec_a")


def test_secrets_in_record_fields_are_redacted(settings: Settings, workspace: Path) -> None:
    """A secret that ended up in a case or script name is redacted in what the agent sees."""
    d = workspace / "Database" / "script_executions"
    write(d, "exec_s", minutes_ago=1, status="succeeded")
    record = json.loads((d / "exec_s.json").read_text())
    (d / "exec_s.json").write_text(json.dumps({**record, "case_name": "case-sk-TOPSECRET-123456"}))
    text = execution_stats_markdown(settings, redactor=Redactor({"OPENAI_API_KEY": "sk-TOPSECRET-123456"}))
    assert "TOPSECRET" not in text and "[REDACTED:OPENAI_API_KEY]" in text


def test_no_records_at_all(settings: Settings) -> None:
    """An empty audit folder says so instead of dividing by zero."""
    assert "No executions logged yet." in execution_stats_markdown(settings)
