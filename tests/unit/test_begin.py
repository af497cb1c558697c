"""`begin`: the 'running' record is on disk before the container starts, in every write mode."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import scoperun.pipeline.records as records
from scoperun import ExecutionRequest, Executor, Settings
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


@pytest.mark.parametrize("mode", ["staged", "direct", "read-only"])
def test_the_running_record_is_written_before_the_start(settings: Settings, workspace: Path, mode: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The container starts only after the 'running' record is written; a read-only run (no listing to
    overlap it with) writes it on the calling thread, the others beside their listing of the case."""
    writers: list[str] = []
    real = records.write_record

    def write_record(ctx, facts, result, tracker):
        writers.append(threading.current_thread().name)
        real(ctx, facts, result, tracker)

    monkeypatch.setattr("scoperun.pipeline.running.write_record", write_record)
    seen: list[dict] = []

    def look(spec):
        seen.append(json.loads((workspace / "Database" / "script_executions" / f"{spec.execution_id}.json").read_text()))
        return FakeRun()

    result = Executor(settings, backend=FakeBackend(script=look)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE, write_mode=mode))
    assert result.status.value == "succeeded"
    assert seen[0]["status"] == "running"
    assert (writers == [threading.current_thread().name]) is (mode == "read-only")
