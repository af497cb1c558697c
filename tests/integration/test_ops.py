"""Operations on the real engine: ps, stop (scoped to scoperun's containers of this workspace),
gc after a SIGKILLed scoperun, Prometheus metrics over loopback, full outputs and `audit show`."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, ExecutionResult, Limits, Status
from scoperun.engine.base import MANAGED_LABEL
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration.conftest import IMAGE, read_record
from tests.integration.test_cli import scoperun

SLEEPY = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def bystanders(docker_client, workspace: Path):
    """Two containers stop --all must not touch: an unrelated one, and a scoperun one of another workspace."""
    token = secrets.token_hex(4)
    made = [
        docker_client.containers.run(IMAGE, ["sleep", "300"], detach=True, name=f"scoperun-test-unrelated-{token}",
                                     labels={"org.scoperun.test": "1"}, network_mode="none"),
        docker_client.containers.run(IMAGE, ["sleep", "300"], detach=True, name=f"scoperun-test-otherws-{token}",
                                     labels={"org.scoperun.test": "1", MANAGED_LABEL: "1",
                                             "org.scoperun.execution-id": f"exec_other_{token}",
                                             "org.scoperun.workspace": f"/nonexistent/other-workspace-{token}"},
                                     network_mode="none"),
    ]
    yield made
    for c in made:
        c.remove(force=True)


def test_ps_and_stop_all_touch_only_this_workspaces_runs(executor: Executor, workspace: Path, bystanders) -> None:
    """`ps` shows the run with its memory; `stop --all` ends it `cancelled` with the reason; other containers survive."""
    (workspace / "Tools" / "sleepy.py").write_text(SLEEPY)
    results: list[ExecutionResult] = []
    runner = threading.Thread(target=lambda: results.append(executor.run(
        ExecutionRequest(script="Tools/sleepy.py", case=CASE, limits=Limits(timeout=120)))))
    runner.start()
    try:
        def listed():
            proc = scoperun(workspace, "ps", "--json")
            assert proc.returncode == 0, proc.stderr
            runs = json.loads(proc.stdout)
            return runs if runs and runs[0]["memory_bytes"] else None

        [run] = wait_for(listed, what="the run in `scoperun ps`")
        assert run["case"] == CASE and run["script"] == "Tools/sleepy.py" and run["memory_bytes"] > 0
        assert run["workspace"] == str(workspace.resolve())
        refused = scoperun(workspace, "stop", "exec_other_" + bystanders[1].name.rsplit("-", 1)[1])
        assert refused.returncode == 2 and "scoperun ps" in refused.stderr
        stopped = scoperun(workspace, "stop", "--all", "--reason", "test: stop everything")
        assert stopped.returncode == 0, stopped.stderr
        assert run["execution_id"] in stopped.stdout
        runner.join(60)
    finally:
        runner.join(120)
    [result] = results
    assert result.status is Status.CANCELLED
    assert result.message.startswith("stopped by an operator: test: stop everything")
    assert read_record(workspace, result.execution_id)["status"] == "cancelled"
    assert "test: stop everything" in read_record(workspace, result.execution_id)["message"]
    for c in bystanders:
        c.reload()
        assert c.status == "running", f"{c.name} was touched by stop --all"


def test_gc_cleans_up_after_a_killed_scoperun(workspace: Path, docker_client) -> None:
    """After SIGKILL of a scoperun mid-run, gc removes its container and records the run as abandoned."""
    (workspace / "Tools" / "sleepy.py").write_text(SLEEPY)
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "scoperun", "run", "Tools/sleepy.py", "--case", CASE,
                             "--timeout", "120"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    labels = [f"{MANAGED_LABEL}=1", f"org.scoperun.workspace={workspace.resolve()}"]
    try:
        [container] = wait_for(lambda: docker_client.containers.list(filters={"label": labels}, ignore_removed=True),
                               what="the run's container")
        execution_id = container.labels["org.scoperun.execution-id"]
        assert read_record(workspace, execution_id)["status"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        container.reload()
        assert container.status == "running"  # the crash left it behind: the problem gc solves
        gc = scoperun(workspace, "gc", "--json")
        assert gc.returncode == 0, gc.stderr
        report = json.loads(gc.stdout)
        assert report["abandoned"] == [execution_id]
        assert [c["execution_id"] for c in report["containers_removed"]] == [execution_id]
        assert not docker_client.containers.list(all=True, filters={"label": f"org.scoperun.execution-id={execution_id}"})
        assert not docker_client.volumes.list(filters={"label": f"org.scoperun.execution-id={execution_id}"})
        record = read_record(workspace, execution_id)
        assert record["status"] == "abandoned" and record["success"] is False
        assert f"pid {proc.pid}" in record["message"] and "crashed or killed" in record["message"]
        verify = json.loads(scoperun(workspace, "audit", "verify", "--json").stdout)
        assert verify["ok"] and [(f["kind"], f["execution_id"]) for f in verify["findings"]] == [
            ("abandoned", execution_id)]
        stats = json.loads(scoperun(workspace, "stats", "--json").stdout)
        assert stats["by_status"] == {"abandoned": 1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for c in docker_client.containers.list(all=True, filters={"label": labels}, ignore_removed=True):
            c.remove(force=True)


def test_metrics_endpoint_serves_runs_over_loopback(executor: Executor, workspace: Path) -> None:
    """`scoperun metrics` serves runs by status, the duration histogram and runs in progress on 127.0.0.1."""
    (workspace / "Tools" / "fail.py").write_text("raise SystemExit(4)\n")
    assert executor.run(ExecutionRequest(script="Tools/hello.py", case=CASE)).status is Status.SUCCEEDED
    assert executor.run(ExecutionRequest(script="Tools/fail.py", case=CASE)).status is Status.FAILED
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace)}
    server = subprocess.Popen([sys.executable, "-m", "scoperun", "metrics", "--port", "0"], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/metrics", line)
        assert url, f"no URL announced: {line!r}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        body = opener.open(url.group(0), timeout=30).read().decode()
    finally:
        server.terminate()
        server.wait(30)
        if server.stderr is not None:
            server.stderr.close()
    assert 'scoperun_runs_total{status="succeeded"} 1.0' in body
    assert 'scoperun_runs_total{status="failed"} 1.0' in body
    assert "scoperun_run_duration_seconds_count 2.0" in body
    assert 'scoperun_run_duration_seconds_bucket{le="+Inf"} 2.0' in body
    assert "scoperun_runs_in_progress 0.0" in body


def test_full_output_kept_beside_the_record_and_shown(executor: Executor, workspace: Path) -> None:
    """A flood truncated in the result is kept whole beside the record, and `audit show` prints it."""
    executor.settings = executor.settings.model_copy(update={"output_cap": 4096})
    (workspace / "Tools" / "flood.py").write_text("for i in range(30000):\n    print('line', i)\nprint('LAST LINE')\n")
    result = executor.run(ExecutionRequest(script="Tools/flood.py", case=CASE))
    assert result.status is Status.SUCCEEDED and result.stdout.truncated
    kept = (workspace / result.stdout.full_output).read_text()
    assert kept.count("\n") == 30001 and kept.endswith("LAST LINE\n") and "line 15000\n" in kept
    shown = scoperun(workspace, "audit", "show", result.execution_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["record"]["stdout_truncated"] and data["output"]["stdout"] == kept
    listed = json.loads(scoperun(workspace, "audit", "list", "--status", "succeeded", "--json").stdout)
    assert [r["execution_id"] for r in listed] == [result.execution_id]
