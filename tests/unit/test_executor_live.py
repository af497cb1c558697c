"""Live output and cancellation in the executor, above a fake backend (the pure logic)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from scoperun.config import Settings
from scoperun.executor import Executor
from scoperun.live import LiveOutput
from scoperun.models import ExecutionRequest, Status
from scoperun.safety.redaction import Redactor
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def _record(workspace: Path, execution_id: str) -> dict:
    return json.loads((workspace / "Database" / "script_executions" / f"{execution_id}.json").read_text())


def test_live_output_hands_on_whole_redacted_lines() -> None:
    """Chunks split mid-line and mid-secret come out as whole lines with the secret redacted."""
    got: list[tuple[str, str]] = []
    live = LiveOutput(lambda s, t: got.append((s, t)), Redactor({"KEY": "sk-abcdef123456"}))
    for chunk in (b"key sk-abc", b"def123456 ok\nsec", "ond \u00e9".encode()[:-1]):
        live.feed("stdout", chunk)
    live.feed("stderr", b"err\n")
    assert got == [("stdout", "key [REDACTED:KEY] ok\n"), ("stderr", "err\n")]
    live.feed("stdout", "\u00e9".encode()[-1:])
    live.flush()
    assert got[-1] == ("stdout", "second \u00e9") and "sk-abcdef123456" not in "".join(t for _, t in got)


def test_run_reports_output_live_and_keeps_it(settings: Settings) -> None:
    """on_output sees the run's stdout and stderr; the result still holds them."""
    backend = FakeBackend(script=lambda spec: FakeRun(stdout=b"one\ntwo\n", stderr=b"warn\n"))
    seen: list[tuple[str, str]] = []
    result = Executor(settings, backend=backend).run(ExecutionRequest(script="Tools/hello.py", case=CASE),
                                                     on_output=lambda s, t: seen.append((s, t)))
    assert result.success and seen == [("stdout", "one\ntwo\n"), ("stderr", "warn\n")]
    assert result.stdout.text == "one\ntwo\n"


def test_cancel_kills_a_running_run_and_records_who(settings: Settings, workspace: Path) -> None:
    """cancel() from another thread ends a sleeping run at once; the record says cancelled by whom."""
    backend = FakeBackend(script=lambda spec: FakeRun(sleep=60))
    executor = Executor(settings, backend=backend)
    results = []

    def run() -> None:
        results.append(executor.run(ExecutionRequest(script="Tools/hello.py", case=CASE), execution_id="exec_x_1"))

    worker = threading.Thread(target=run)
    t0 = time.monotonic()
    worker.start()
    while backend.running == 0 and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    time.sleep(0.1)  # let the run's handle be registered
    executor.cancel("exec_x_1", by="alice")  # kills it now, or as soon as its handle is registered
    worker.join(30)
    assert time.monotonic() - t0 < 30
    (result,) = results
    assert result.status is Status.CANCELLED and "alice" in result.message
    assert _record(workspace, "exec_x_1")["status"] == "cancelled"


def test_cancel_before_start_never_runs(settings: Settings, workspace: Path) -> None:
    """A run cancelled before it starts is recorded cancelled and no container is started."""
    backend = FakeBackend()
    executor = Executor(settings, backend=backend)
    executor.cancel("exec_y_1", by="bob")
    result = executor.run(ExecutionRequest(script="Tools/hello.py", case=CASE), execution_id="exec_y_1")
    assert result.status is Status.CANCELLED and backend.specs == []
    assert "before it started" in _record(workspace, "exec_y_1")["message"]


def test_cancelling_the_arun_task_cancels_the_run(settings: Settings, workspace: Path) -> None:
    """Cancelling the task that awaits arun kills the run; the record ends cancelled, not running."""
    executor = Executor(settings, backend=FakeBackend(script=lambda spec: FakeRun(stdout=b"up\n", sleep=60)))

    async def scenario() -> None:
        up = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(executor.arun(ExecutionRequest(script="Tools/hello.py", case=CASE),
                                                   on_output=lambda s, t: loop.call_soon_threadsafe(up.set)))
        await asyncio.wait_for(up.wait(), 10)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("not cancelled")

    t0 = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - t0 < 30
    (record,) = [json.loads(p.read_text()) for p in (workspace / "Database" / "script_executions").glob("*.json")]
    assert record["status"] == "cancelled"
    executor.close()
