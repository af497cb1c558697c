"""Outputs kept beside records, operator stops seen by the executor, and gc's bookkeeping (no engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from scoperun import ExecutionRequest, Executor, Settings, Status
from scoperun.audit.log import AuditLog
from scoperun.engine.capture import BoundedBuffer
from scoperun.ops import collect_garbage, register_gc_hook, write_stop_marker
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def audit_dir(workspace: Path) -> Path:
    return workspace / "Database" / "script_executions"


def test_spill_keeps_the_whole_stream_on_disk_not_in_memory() -> None:
    """Past the cap, every byte goes to a temporary file (up to the limit); memory keeps only head and tail."""
    buf = BoundedBuffer(1024, spill_limit=1_000_000)
    chunks = [f"line {i}\n".encode() for i in range(20_000)]
    for c in chunks:
        buf.write(c)
    data, complete = buf.full_bytes()
    assert buf.spilled and complete and data == b"".join(chunks)
    assert len(buf._head) + len(buf._tail) <= 3 * 1024
    buf.close()
    small = BoundedBuffer(1024, spill_limit=1_000_000)
    small.write(b"tiny\n")
    assert not small.spilled and small.full_bytes() == (b"tiny\n", True)
    limited = BoundedBuffer(1024, spill_limit=5000)
    limited.write(b"x" * 20_000)
    data, complete = limited.full_bytes()
    assert len(data) == 5000 and not complete
    limited.close()


def test_truncated_output_is_kept_in_full_and_redacted(settings: Settings, workspace: Path, monkeypatch) -> None:
    """A result cut at the cap has its whole (redacted) output beside the record, named in the result and record."""
    monkeypatch.setenv("TAVILY_API_KEY", "tvly-SECRET-0123456789")
    flood = b"".join(f"row {i} tvly-SECRET-0123456789\n".encode() for i in range(5000)) + b"THE END\n"
    settings = settings.model_copy(update={"output_cap": 4096})
    ex = Executor(settings, backend=FakeBackend(script=lambda spec: FakeRun(stdout=flood, stderr=b"warn\n")))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.stdout.truncated and "THE END" in result.stdout.text
    kept = workspace / result.stdout.full_output
    text = kept.read_text()
    assert kept.name == f"{result.execution_id}.stdout"
    assert text.count("\n") == 5001 and "row 4999 [REDACTED:TAVILY_API_KEY]" in text and "SECRET" not in text
    assert (workspace / result.stderr.full_output).read_text() == "warn\n"
    record = json.loads((audit_dir(workspace) / f"{result.execution_id}.json").read_text())
    assert record["stdout_file"] == result.stdout.full_output and record["stdout_truncated"]


def test_full_output_limit_zero_keeps_nothing(settings: Settings, workspace: Path) -> None:
    """With full_output_limit = 0 no output file is written beside the record."""
    settings = settings.model_copy(update={"full_output_limit": 0})
    ex = Executor(settings, backend=FakeBackend(script=lambda spec: FakeRun(stdout=b"x" * 100_000)))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.stdout.full_output is None
    assert not list(audit_dir(workspace).glob("*.stdout"))


def test_operator_stop_ends_the_run_failed_with_the_reason(settings: Settings, workspace: Path) -> None:
    """A stop marker written while the run is in its container makes the run `failed` with the operator's reason."""

    def killed_by_operator(spec) -> FakeRun:
        write_stop_marker(audit_dir(workspace), spec.execution_id, "runaway script", by="alice")
        return FakeRun(exit_code=137)

    result = Executor(settings, backend=FakeBackend(script=killed_by_operator)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.status is Status.CANCELLED
    assert result.message.startswith("stopped by an operator: runaway script (by alice")
    record = json.loads((audit_dir(workspace) / f"{result.execution_id}.json").read_text())
    assert record["status"] == "cancelled" and "runaway script" in record["message"]


def _running_record(execution_id: str, *, pid: int, host: str, started: float) -> dict:
    stamp = datetime.fromtimestamp(started, UTC).isoformat()
    return {"timestamp": stamp, "execution_id": execution_id, "case_name": CASE, "script_path": "Tools/hello.py",
            "exit_code": None, "stdout_length": 0, "stderr_length": 0, "success": False, "status": "running",
            "started_at": stamp, "finished_at": None, "limits": {"timeout": 60}, "host": host, "pid": pid}


def test_gc_marks_dead_and_overdue_runs_abandoned(settings: Settings, workspace: Path) -> None:
    """gc marks a run of a dead local process and an overdue run of another host abandoned, and leaves live ones."""
    from scoperun.audit.state import HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    log = AuditLog.from_settings(settings, workspace.resolve())
    now = time.time()
    log.write(_running_record("exec_dead", pid=dead.pid, host=HOST, started=now - 5))
    log.write(_running_record("exec_overdue", pid=1, host="other-vm", started=now - 3600))
    log.write(_running_record("exec_live", pid=os.getpid(), host=HOST, started=now - 5))
    seen: list[tuple] = []
    register_gc_hook("test-staging", lambda s, *, now, dry_run: seen.append((now, dry_run)) or ["staging/x"])
    try:
        dry = collect_garbage(settings, engine=FakeBackend(), dry_run=True)
        assert sorted(dry.abandoned) == ["exec_dead", "exec_overdue"]
        assert json.loads((audit_dir(workspace) / "exec_dead.json").read_text())["status"] == "running"
        report = collect_garbage(settings, engine=FakeBackend())
    finally:
        from scoperun import ops

        ops._GC_HOOKS.pop("test-staging", None)
    assert sorted(report.abandoned) == ["exec_dead", "exec_overdue"] and not report.errors
    assert report.hooks["test-staging"] == ["staging/x"] and [d for _, d in seen] == [True, False]
    assert report.hooks["staging"] == []  # the staging gc of scoperun.changes ran too (nothing to clean)
    dead_record = json.loads((audit_dir(workspace) / "exec_dead.json").read_text())
    assert dead_record["status"] == "abandoned" and dead_record["success"] is False
    assert f"pid {dead.pid}" in dead_record["message"] and dead_record["finished_at"]
    assert dead_record["chain"]["seq"] >= 1
    assert json.loads((audit_dir(workspace) / "exec_live.json").read_text())["status"] == "running"
    assert collect_garbage(settings, engine=FakeBackend()).abandoned == []


def test_streamed_redaction_never_splits_a_secret_across_chunks() -> None:
    """Redacting the kept output chunk by chunk still catches a secret cut by a chunk boundary."""
    from scoperun.audit.log import _redacted_lines
    from scoperun.safety.redaction import Redactor

    redactor = Redactor({"KEY": "tvly-SECRET-0123456789"})
    data = "ok\nthe key is tvly-SECRET-0123456789 here\nbye é\n".encode()
    chunks = [data[i:i + 5] for i in range(0, len(data), 5)]
    out = b"".join(_redacted_lines(iter(chunks), redactor)).decode()
    assert out == "ok\nthe key is [REDACTED:KEY] here\nbye é\n"
