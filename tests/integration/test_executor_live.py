"""The library's live output and cancellation on the real engine (issue 11 item 14: a cancelled arun
used to leave its container running to the end)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from scoperun.engine.base import MANAGED_LABEL
from scoperun.executor import Executor
from scoperun.models import ExecutionRequest
from tests.conftest import CASE
from tests.integration.conftest import read_record


def _containers(docker_client, workspace: Path) -> list:
    return docker_client.containers.list(all=True, sparse=True, filters={"label": [
        MANAGED_LABEL, f"org.scoperun.workspace={workspace.resolve()}"]})


def test_on_output_sees_each_line_while_the_script_still_runs(executor: Executor, workspace: Path) -> None:
    """on_output gets line 1 while the script waits for the test to acknowledge it (a file), then line 2."""
    (workspace / "Tools" / "ack.py").write_text(
        "import os, time\nprint('first', flush=True)\nt = time.time() + 30\n"
        "while not os.path.exists('ack') and time.time() < t:\n    time.sleep(0.05)\n"
        "print('second' if os.path.exists('ack') else 'never acknowledged', flush=True)\n")
    case_dir = workspace / "projects" / CASE
    seen: list[tuple[str, str]] = []

    def on_output(stream: str, text: str) -> None:
        seen.append((stream, text))
        if text == "first\n":
            (case_dir / "ack").write_text("")

    result = executor.run(ExecutionRequest(script="Tools/ack.py", case=CASE, write_mode="direct"), on_output=on_output)
    assert result.success and seen == [("stdout", "first\n"), ("stdout", "second\n")]
    assert result.stdout.text == "first\nsecond\n"


def test_live_output_is_redacted(executor: Executor, workspace: Path, monkeypatch) -> None:
    """A secret printed by the script never reaches the live callback."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-secret-1234567890")
    (workspace / "Tools" / "leak.py").write_text("import os\nprint('key', os.environ['OPENAI_API_KEY'])\n")
    chunks: list[str] = []
    result = Executor(executor.settings).run(ExecutionRequest(script="Tools/leak.py", case=CASE),
                                             on_output=lambda s, t: chunks.append(t))
    assert result.success and chunks and "sk-live-secret" not in "".join(chunks)


def test_cancelling_arun_kills_the_container_and_records_cancelled(executor: Executor, workspace: Path,
                                                                   docker_client) -> None:
    """Attack: an agent framework cancels the task awaiting arun; the container must die, the record say so."""
    (workspace / "Tools" / "hang.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    started = threading.Event()

    async def scenario() -> None:
        task = asyncio.ensure_future(executor.arun(ExecutionRequest(script="Tools/hang.py", case=CASE),
                                                   on_output=lambda s, t: started.set()))
        while not started.is_set():
            await asyncio.sleep(0.05)
        assert _containers(docker_client, workspace)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the task was not cancelled")

    t0 = time.monotonic()
    asyncio.run(scenario())
    print(f"arun cancelled and its record written in {time.monotonic() - t0:.2f} s")
    deadline = time.monotonic() + 10
    while _containers(docker_client, workspace) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _containers(docker_client, workspace)
    (record_file,) = (workspace / "Database" / "script_executions").glob("*.json")
    record = read_record(workspace, record_file.stem)
    assert record["status"] == "cancelled" and "asyncio task was cancelled" in record["message"]
    t1 = time.monotonic()
    executor.close()  # used to block until the script's own end
    assert time.monotonic() - t1 < 30


def test_stream_yields_output_then_the_result(executor: Executor) -> None:
    """executor.stream: stdout and stderr events as printed, then one finished event with the result."""

    async def collect() -> list:
        return [ev async for ev in executor.stream(ExecutionRequest(script="Tools/hello.py", case=CASE))]

    events = asyncio.run(collect())
    assert {(e.type, e.text) for e in events[:-1]} == {("stdout", f"hello from {CASE}\n"), ("stderr", "to stderr\n")}
    assert events[-1].type == "finished" and events[-1].result.success
