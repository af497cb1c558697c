"""The executor's pipeline above the engine, driven by the package's FakeBackend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scoperun import AuditError, ExecutionRequest, Executor, Limits, Settings, Status
from scoperun.models import ResolvedLimits
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def records(workspace: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workspace / "Database" / "script_executions").glob("*.json"))]


def test_spec_mounts_only_the_case_tools_and_script(settings: Settings, workspace: Path) -> None:
    """The run spec mounts the case read-write, Tools read-only, and the temp script read-only."""
    backend = FakeBackend()
    ex = Executor(settings, backend=backend)
    ex.run_code("print(1)", case=CASE)
    spec = backend.specs[0]
    mounts = {m.target: m for m in spec.mounts}
    assert set(mounts) == {f"/workspace/projects/{CASE}", "/workspace/Tools", spec.command[1]}
    assert not mounts[f"/workspace/projects/{CASE}"].read_only
    assert mounts["/workspace/Tools"].read_only and mounts[spec.command[1]].read_only
    assert spec.command[0] == "python" and spec.working_dir == f"/workspace/projects/{CASE}"
    assert spec.env["EXECUTION_ID"] == spec.execution_id and spec.env["CASE_NAME"] == CASE
    assert spec.user == "1000:1000" and spec.memory_bytes == 1024**3


def test_started_record_is_written_before_the_backend_runs(settings: Settings, workspace: Path) -> None:
    """The audit record says `running` while the container runs, then holds the final status."""
    seen: list[list[dict]] = []
    backend = FakeBackend(script=lambda spec: (seen.append(records(workspace)), FakeRun(stdout=b"hi\n"))[1])
    result = Executor(settings, backend=backend).run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert [r["status"] for r in seen[0]] == ["running"]
    assert seen[0][0]["finished_at"] is None
    final = records(workspace)
    assert len(final) == 1 and final[0]["status"] == "succeeded" and final[0]["stdout_length"] == 3
    assert result.stdout.text == "hi\n"


@pytest.mark.parametrize(
    ("run", "status", "fragment"),
    [
        (FakeRun(exit_code=2), Status.FAILED, "exited with code 2"),
        (FakeRun(exit_code=137, timed_out=True), Status.TIMED_OUT, "timed out after 60 s"),
        (FakeRun(exit_code=137, oom_killed=True), Status.OOM_KILLED, "out of memory"),
        (FakeRun(exit_code=None, error="lost the Docker engine"), Status.ERROR, "lost the Docker engine"),
    ],
)
def test_outcomes_map_to_statuses(settings: Settings, run: FakeRun, status: Status, fragment: str) -> None:
    """Exit codes, timeouts, OOM kills and engine failures map to their statuses and messages."""
    result = Executor(settings, backend=FakeBackend(script=lambda spec: run)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.status is status and fragment in result.message


def test_secrets_are_passed_but_redacted_everywhere(settings: Settings, workspace: Path, monkeypatch) -> None:
    """A passed-through secret reaches the container env but never the result, args or audit record."""
    secret = "tvly-THIS-IS-A-SECRET-VALUE-123"
    monkeypatch.setenv("TAVILY_API_KEY", secret)
    backend = FakeBackend(script=lambda spec: FakeRun(stdout=f"key {secret}\n".encode(), stderr=secret[:12].encode()))
    result = Executor(settings, backend=backend).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE, args=[f"--key={secret}"]))
    assert backend.specs[0].env["TAVILY_API_KEY"] == secret
    dumped = result.model_dump_json() + (workspace / result.audit_record).read_text()
    assert secret not in dumped and secret[:12] not in dumped
    assert "[REDACTED:TAVILY_API_KEY]" in result.stdout.text


def test_refusals_are_audited_and_never_reach_the_backend(settings: Settings, workspace: Path) -> None:
    """A rejected request writes a `rejected` record and the backend is never called."""
    backend = FakeBackend()
    result = Executor(settings, backend=backend).run(ExecutionRequest(script="Tools/../x.py", case=CASE))
    assert result.status is Status.REJECTED and backend.specs == []
    assert records(workspace)[0]["status"] == "rejected"


def test_unwritable_audit_folder_means_nothing_runs(settings: Settings, workspace: Path) -> None:
    """When the audit record cannot be written the run does not start (fail closed)."""
    audit = workspace / "Database" / "script_executions"
    audit.rmdir()
    audit.write_text("a file where the folder should be")
    backend = FakeBackend()
    with pytest.raises(AuditError, match="Nothing was run"):
        Executor(settings, backend=backend).run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert backend.specs == []


def test_concurrency_is_bounded(settings: Settings) -> None:
    """With max_concurrent=2, ten parallel runs never have more than two in the backend at once."""
    backend = FakeBackend(script=lambda spec: FakeRun(sleep=0.05))
    ex = Executor(settings.model_copy(update={"max_concurrent": 2}), backend=backend)
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE)), range(10)))
    assert backend.max_running == 2
    assert all(r.status is Status.SUCCEEDED for r in results)


def test_per_run_limits_override_defaults(settings: Settings) -> None:
    """Limits given in the request replace the configured defaults in the spec and the result."""
    backend = FakeBackend()
    result = Executor(settings, backend=backend).run(ExecutionRequest(
        script="Tools/hello.py", case=CASE, limits=Limits(timeout=5, memory="256m", cpus=1.5, pids_limit=64)))
    spec = backend.specs[0]
    assert (spec.timeout, spec.memory_bytes, spec.cpus, spec.pids_limit) == (5, 256 * 1024**2, 1.5, 64)
    assert result.limits == ResolvedLimits(timeout=5, memory="256m", cpus=1.5, pids_limit=64)


def test_reserved_env_names_cannot_be_overridden() -> None:
    """A request may not set EXECUTION_ID, CASE_NAME, WORKSPACE_ROOT, HOME or PATH."""
    with pytest.raises(ValueError, match="set by scoperun"):
        ExecutionRequest(script="Tools/x.py", case=CASE, env={"CASE_NAME": "other"})


def test_import_needs_no_engine() -> None:
    """`import scoperun` and making an Executor work with no engine and no docker client made."""
    code = ("import sys, scoperun; ex = scoperun.Executor(scoperun.Settings()); "
            "assert 'docker' not in sys.modules, 'docker imported at import time'; print('ok')")
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_result_is_json_serialisable(settings: Settings) -> None:
    """An ExecutionResult round-trips through JSON."""
    result = Executor(settings, backend=FakeBackend()).run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    from scoperun import ExecutionResult

    assert ExecutionResult.model_validate_json(result.model_dump_json()) == result


def test_async_run_does_not_block_the_loop(settings: Settings) -> None:
    """`arun` lets other coroutines progress while a run is in flight."""
    import asyncio

    backend = FakeBackend(script=lambda spec: FakeRun(sleep=0.3))
    ex = Executor(settings, backend=backend)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(5):
            await asyncio.sleep(0.02)
            ticks += 1

    async def run() -> tuple[Status, int]:
        result = await ex.arun(ExecutionRequest(script="Tools/hello.py", case=CASE))
        return result.status, ticks  # ticks seen by the time the run is back: none if arun held the loop

    async def main() -> tuple[Status, int]:
        (status, ticks_during_run), _ = await asyncio.gather(run(), ticker())
        return status, ticks_during_run

    status, ticks_during_run = asyncio.run(main())
    assert status is Status.SUCCEEDED
    assert ticks_during_run >= 1
    assert ticks == 5
    assert threading.active_count() >= 1


def test_stages_run_in_order_with_typed_hand_offs(settings: Settings, workspace: Path) -> None:
    """prepare -> begin -> start -> wait -> finish, called one by one, give the same result as `run`."""
    from scoperun import pipeline

    backend = FakeBackend(script=lambda spec: FakeRun(stdout=b"staged\n"))
    ctx = pipeline.RunContext.open(settings, ExecutionRequest(script="Tools/hello.py", case=CASE))
    prepared = pipeline.prepare(ctx)
    assert isinstance(prepared, pipeline.Prepared) and prepared.spec.execution_id == ctx.execution_id
    assert records(workspace) == []  # nothing is written before `begin`
    pipeline.begin(ctx, prepared)
    assert [r["status"] for r in records(workspace)] == ["running"]
    outcome = pipeline.wait(pipeline.start(prepared, backend))
    result = pipeline.finish(ctx, prepared, outcome, queue_wait=0.0)
    assert result.status is Status.SUCCEEDED and result.stdout.text == "staged\n"
    assert result.limits == ctx.limits and records(workspace)[0]["status"] == "succeeded"


def test_refusal_keeps_what_prepare_learnt(settings: Settings, workspace: Path) -> None:
    """A script refused by the scanner is recorded `rejected` with its hash and findings; no container starts."""
    from scoperun import pipeline

    (workspace / "Tools" / "bad.py").write_text("import os\nos.system('id')\n")
    ctx = pipeline.RunContext.open(settings.model_copy(update={"safety_policy": "block"}),
                                   ExecutionRequest(script="Tools/bad.py", case=CASE))
    refused = pipeline.prepare(ctx)
    assert isinstance(refused, pipeline.Refused) and refused.facts.findings
    assert refused.facts.script_sha256 and refused.facts.working_dir == f"projects/{CASE}"
    result = pipeline.refuse(ctx, refused)
    record = records(workspace)[0]
    assert result.status is Status.REJECTED and record["status"] == "rejected"
    assert record["script_sha256"] == refused.facts.script_sha256 and record["findings"] == [f.model_dump() for f in result.findings]


def test_a_started_run_can_be_killed_from_another_thread(settings: Settings) -> None:
    """The backend's handle ends a long run at once when killed; `wait` then returns the outcome."""
    backend = FakeBackend(script=lambda spec: FakeRun(sleep=30))
    from scoperun import pipeline

    ctx = pipeline.RunContext.open(settings, ExecutionRequest(script="Tools/hello.py", case=CASE))
    prepared = pipeline.prepare(ctx)
    assert isinstance(prepared, pipeline.Prepared)
    handle = pipeline.start(prepared, backend)
    threading.Timer(0.1, handle.kill).start()
    outcome = pipeline.wait(handle)
    assert outcome.exit_code == 137 and backend.running == 0
