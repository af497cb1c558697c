"""The core run path against the real engine: statuses, output, files, limits, audit, concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scoperun import ExecutionRequest, Limits, Status
from scoperun.executor import Executor
from tests.conftest import CASE, OTHER_CASE
from tests.integration.conftest import leftover_containers, read_record


def write_tool(workspace: Path, name: str, code: str) -> str:
    (workspace / "Tools" / name).write_text(code)
    return f"Tools/{name}"


def test_success_keeps_stdout_and_stderr_apart(executor: Executor, workspace: Path) -> None:
    """A script that exits 0 succeeds, and its stdout and stderr are captured separately."""
    result = executor.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.status is Status.SUCCEEDED, result.message
    assert result.exit_code == 0
    assert result.stdout.text == f"hello from {CASE}\n"
    assert result.stderr.text == "to stderr\n"
    assert result.image_id and result.image_id.startswith("sha256:")


def test_nonzero_exit_is_failed_with_its_code(executor: Executor, workspace: Path) -> None:
    """A script's non-zero exit is a `failed` result carrying the code and stderr, not an exception."""
    script = write_tool(workspace, "boom.py", "import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE))
    assert result.status is Status.FAILED
    assert result.exit_code == 3
    assert "about to fail" in result.stderr.text


def test_shell_tool_runs_with_bash_in_the_case(executor: Executor) -> None:
    """A .sh tool runs with bash, in the case folder as working directory."""
    result = executor.run(ExecutionRequest(script="Tools/hello.sh", case=CASE))
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.stdout.text == f"bash says {CASE}\nintake.txt\n"


def test_files_written_persist_in_the_case(executor: Executor, workspace: Path) -> None:
    """Files a run writes in its case are there on the host afterwards, in nested folders too."""
    script = write_tool(workspace, "writer.py",
                        "import pathlib\np = pathlib.Path('out/deep')\np.mkdir(parents=True)\n"
                        "(p / 'result.txt').write_text('written by the run')\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE))
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert (workspace / "projects" / CASE / "out" / "deep" / "result.txt").read_text() == "written by the run"


def test_run_sees_only_its_case_and_cannot_write_tools(executor: Executor, workspace: Path) -> None:
    """Inside a run, other cases and Database are absent and Tools is read-only."""
    script = write_tool(workspace, "probe.py", f"""
import os
print('projects:', sorted(os.listdir('/workspace/projects')))
print('workspace:', sorted(os.listdir('/workspace')))
print('other case visible:', os.path.exists('/workspace/projects/{OTHER_CASE}'))
try:
    open('/workspace/Tools/planted.py', 'w').write('x')
    print('tools writable: True')
except OSError as e:
    print('tools writable: False', e.errno)
""")
    result = executor.run(ExecutionRequest(script=script, case=CASE))
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert f"projects: ['{CASE}']" in result.stdout.text
    assert "workspace: ['Tools', 'projects']" in result.stdout.text
    assert "other case visible: False" in result.stdout.text
    assert "tools writable: False 30" in result.stdout.text  # EROFS
    assert not (workspace / "Tools" / "planted.py").exists()


def test_read_only_case_cannot_be_written(executor: Executor, workspace: Path) -> None:
    """With read_only the case is visible but every write fails."""
    script = write_tool(workspace, "try_write.py", "open('new.txt', 'w').write('x')\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE, read_only=True))
    assert result.status is Status.FAILED
    assert "Read-only file system" in result.stderr.text
    assert not (workspace / "projects" / CASE / "new.txt").exists()


def test_endless_loop_times_out_near_the_deadline(executor: Executor, workspace: Path, docker_client) -> None:
    """An endless loop is killed at its timeout, reported `timed_out`, and leaves no container."""
    script = write_tool(workspace, "forever.py", "print('start', flush=True)\nwhile True:\n    pass\n")
    t0 = time.monotonic()
    result = executor.run(ExecutionRequest(script=script, case=CASE, limits=Limits(timeout=3)))
    elapsed = time.monotonic() - t0
    assert result.status is Status.TIMED_OUT
    assert "timed out after 3 s" in result.message
    assert result.stdout.text == "start\n"
    assert 3 <= elapsed < 3 + 8, elapsed  # within a few seconds of the deadline
    executor.close()
    assert leftover_containers(docker_client, {result.execution_id}) == []


def test_memory_hog_is_oom_killed(executor: Executor, workspace: Path) -> None:
    """A script that allocates past its memory limit ends `oom_killed`."""
    script = write_tool(workspace, "hog.py", "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE, limits=Limits(memory="64m", timeout=60)))
    assert result.status is Status.OOM_KILLED, (result.status, result.message, result.stderr.text)
    assert result.exit_code == 137


def test_output_flood_is_capped(executor: Executor, workspace: Path) -> None:
    """50 MB on stdout is counted in full but only the capped head and tail are kept."""
    script = write_tool(workspace, "flood.py",
                        "import sys\nline = b'x' * 1023 + b'\\n'\nfor _ in range(50 * 1024):\n"
                        "    sys.stdout.buffer.write(line)\nprint('THE END')\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE))
    assert result.status is Status.SUCCEEDED
    assert result.stdout.total_bytes == 50 * 1024 * 1024 + len("THE END\n")
    assert result.stdout.truncated
    cap = executor.settings.output_cap
    assert len(result.stdout.text.encode()) < cap + 200
    assert result.stdout.text.rstrip().endswith("THE END")  # the tail survives


def test_audit_record_has_plan_and_added_fields(executor: Executor, workspace: Path) -> None:
    """The audit record keeps the plan's fields and adds status, times, limits, image and hashes."""
    result = executor.run(ExecutionRequest(script="Tools/hello.py", case=CASE, args=["--flag", "v"],
                                           requested_by="thread-42"))
    record = read_record(workspace, result.execution_id)
    for key in ("timestamp", "execution_id", "case_name", "script_path", "exit_code", "stdout_length",
                "stderr_length", "success"):
        assert key in record
    assert record["case_name"] == CASE and record["script_path"] == "Tools/hello.py"
    assert record["success"] is True and record["exit_code"] == 0
    assert record["stdout_length"] == len(f"hello from {CASE}\n")
    assert record["status"] == "succeeded"
    assert record["args"] == ["--flag", "v"]
    assert record["requested_by"] == "thread-42"
    assert record["working_dir"] == f"projects/{CASE}"
    assert record["image"] == executor.settings.image and record["image_id"] == result.image_id
    assert record["limits"] == {"timeout": 60.0, "memory": "1g", "cpus": 0.5, "pids_limit": 256}
    assert record["network"] == "none"
    assert len(record["script_sha256"]) == 64
    assert record["started_at"] <= record["finished_at"]
    assert record["duration"] > 0 and record["host"]


def test_eight_runs_with_a_limit_of_four_all_succeed_and_are_audited(workspace: Path, settings, docker_client) -> None:
    """8 concurrent runs under max_concurrent=4: all succeed, the engine never runs more than 4 at once, all audited."""
    script = write_tool(workspace, "nap.py", "import time\ntime.sleep(1.5)\nprint('done')\n")
    ex = Executor(settings.model_copy(update={"max_concurrent": 4}))
    seen: list[int] = []
    done = threading.Event()

    def sample_engine() -> None:
        # Count this workspace's run containers as the engine reports them (not our own timestamps).
        filters = {"label": [f"org.scoperun.workspace={workspace.resolve()}", "org.scoperun.execution-id"],
                   "status": "running"}
        while not done.is_set():
            seen.append(len(docker_client.api.containers(filters=filters)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample_engine, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: ex.run(ExecutionRequest(script=script, case=CASE)), range(8)))
    finally:
        done.set()
        sampler.join()
        ex.close()
    assert [r.status for r in results] == [Status.SUCCEEDED] * 8
    assert sum(1 for r in results if r.durations.queue_wait > 0.5) >= 4  # half of them had to wait
    assert max(seen) >= 2, "the sampler never saw runs overlap: it did not observe the engine"
    assert max(seen) <= 4, f"the engine ran {max(seen)} of this workspace's containers at once"
    for r in results:
        assert read_record(workspace, r.execution_id)["status"] == "succeeded"
    assert leftover_containers(docker_client, {r.execution_id for r in results}) == []


def test_arun_runs_from_an_event_loop(executor: Executor) -> None:
    """`arun` returns the same kind of result from async code, several at once."""
    async def main():
        return await asyncio.gather(*(executor.arun(ExecutionRequest(script="Tools/hello.py", case=CASE))
                                      for _ in range(3)))
    results = asyncio.run(main())
    assert [r.status for r in results] == [Status.SUCCEEDED] * 3
    assert len({r.execution_id for r in results}) == 3


def test_bad_input_is_rejected_with_a_record_and_no_container(executor: Executor, workspace: Path, docker_client) -> None:
    """Unknown case, script outside Tools, `..` and an unsupported kind: rejected, audited, nothing started."""
    (workspace / "outside.py").write_text("print('should never run')\n")
    (workspace / "Tools" / "notes.txt").write_text("not a script")
    cases = [
        (ExecutionRequest(script="Tools/hello.py", case="No-Such-Case"), "unknown-case"),
        (ExecutionRequest(script="outside.py", case=CASE), "script-outside-allowed"),
        (ExecutionRequest(script="Tools/../outside.py", case=CASE), "path-traversal"),
        (ExecutionRequest(script="Tools/hello.py", case=f"../{OTHER_CASE}"), "case-name"),
        (ExecutionRequest(script="Tools/notes.txt", case=CASE), "only .py"),
    ]
    ws_label = f"org.scoperun.workspace={workspace.resolve()}"
    before = {c.id for c in docker_client.containers.list(all=True, sparse=True, filters={"label": ws_label})}
    for request, expected in cases:
        result = executor.run(request)
        assert result.status is Status.REJECTED, request
        assert expected in result.message
        assert read_record(workspace, result.execution_id)["status"] == "rejected"
    after = {c.id for c in docker_client.containers.list(all=True, sparse=True, filters={"label": ws_label})}
    assert after - before == set()


def test_run_code_writes_the_script_and_runs_it(executor: Executor, workspace: Path) -> None:
    """run_code writes the agent's code under Database/temp_scripts with a unique name and runs it."""
    first = executor.run_code("print('custom', 1 + 1)\n", case=CASE, script_name="temp_script.py")
    second = executor.run_code("print('custom again')\n", case=CASE, script_name="temp_script.py")
    assert first.status is Status.SUCCEEDED, first.stderr.text
    assert first.stdout.text == "custom 2\n"
    assert second.stdout.text == "custom again\n"
    assert first.script != second.script
    assert first.script.startswith("Database/temp_scripts/exec_")
    assert (workspace / first.script).read_text() == "print('custom', 1 + 1)\n"


def test_named_private_network(executor: Executor, workspace: Path, docker_client) -> None:
    """A run on a named Docker network is attached to it (an intranet segment)."""
    net = docker_client.networks.create(f"scoperun-test-{workspace.parent.name[-8:]}", internal=True,
                                        labels={"org.scoperun.test": "1"})
    try:
        script = write_tool(workspace, "ifaces.py", "import socket\nprint(socket.gethostbyname(socket.gethostname()))\n")
        result = executor.run(ExecutionRequest(script=script, case=CASE, network=net.name))
        assert result.status is Status.SUCCEEDED, result.stderr.text
        subnet = docker_client.networks.get(net.id).attrs["IPAM"]["Config"][0]["Subnet"]
        import ipaddress
        assert ipaddress.ip_address(result.stdout.text.strip()) in ipaddress.ip_network(subnet)
        missing = executor.run(ExecutionRequest(script=script, case=CASE, network="no-such-net-xyz"))
        assert missing.status is Status.ERROR and "does not exist" in missing.message
    finally:
        executor.close()
        net.remove()


def test_network_none_has_no_interfaces_but_loopback(executor: Executor, workspace: Path) -> None:
    """With network none the container has only the loopback interface."""
    script = write_tool(workspace, "nets.py", "import os\nprint(sorted(os.listdir('/sys/class/net')))\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE, network="none"))
    assert result.stdout.text.strip() == "['lo']"


def test_missing_image_and_unreachable_engine_are_errors(workspace: Path, settings) -> None:
    """A missing image or an unreachable engine gives status `error` with what to do, not a traceback."""
    ex = Executor(settings.model_copy(update={"image": "scoperun-no-such-image:latest"}))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    ex.close()
    assert result.status is Status.ERROR and "scoperun image build" in result.message
    ex = Executor(settings.model_copy(update={"docker_host": "unix:///tmp/scoperun-no-engine.sock"}))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.status is Status.ERROR and "cannot reach the Docker engine" in result.message
    assert read_record(workspace, result.execution_id)["status"] == "error"
