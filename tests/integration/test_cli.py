"""The `scoperun` command against the real engine: exit codes, --json, run-code from stdin, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import CASE
from tests.integration.conftest import IMAGE


def scoperun(workspace: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none"}
    return subprocess.run([sys.executable, "-m", "scoperun", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=300)


def test_run_json_and_exit_codes(workspace: Path, docker_client) -> None:
    """`run --json` prints the result; exit status is 0, the script's code, 124, or 2 as documented."""
    (workspace / "Tools" / "exit7.py").write_text("import sys\nprint(sys.argv[1:])\nsys.exit(7)\n")
    (workspace / "Tools" / "sleepy.py").write_text("import time\ntime.sleep(60)\n")
    ok = scoperun(workspace, "run", "Tools/hello.py", "--case", CASE, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "succeeded"
    failed = scoperun(workspace, "run", "Tools/exit7.py", "--case", CASE, "--", "--format", "json")
    assert failed.returncode == 7
    assert failed.stdout == "['--format', 'json']\n"
    assert "failed" in failed.stderr and "audit record" in failed.stderr
    slow = scoperun(workspace, "run", "Tools/sleepy.py", "--case", CASE, "--timeout", "2")
    assert slow.returncode == 124 and "timed out after 2 s" in slow.stderr
    rejected = scoperun(workspace, "run", "Tools/../x.py", "--case", CASE)
    assert rejected.returncode == 2 and "path-traversal" in rejected.stderr
    assert "Traceback" not in rejected.stderr + slow.stderr + failed.stderr


def test_run_code_from_stdin(workspace: Path, docker_client) -> None:
    """`run-code -` runs code read from stdin and stores it under Database/temp_scripts/."""
    proc = scoperun(workspace, "run-code", "--case", CASE, "--json", "-", stdin="print('from stdin')\n")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stdout"]["text"] == "from stdin\n"
    assert (workspace / result["script"]).read_text() == "print('from stdin')\n"


def test_bad_usage_and_missing_workspace_are_clear(tmp_path: Path, docker_client) -> None:
    """A missing workspace or a bad --env exits 2 with a message that says what to do."""
    proc = scoperun(tmp_path / "nowhere", "run", "Tools/hello.py", "--case", CASE)
    assert proc.returncode == 2 and "SCOPERUN_WORKSPACE" in proc.stderr and "Traceback" not in proc.stderr
    proc = scoperun(tmp_path, "run", "Tools/hello.py", "--case", CASE, "--env", "NOEQUALS")
    assert proc.returncode == 2 and "NAME=value" in proc.stderr


def test_doctor_reports_engine_image_and_workspace(workspace: Path, docker_client) -> None:
    """`doctor --json` reports the engine, the image and the workspace as healthy."""
    proc = scoperun(workspace, "doctor", "--json")
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["engine"]["ok"] and by_name["image"]["ok"] and by_name["workspace"]["ok"]
    assert by_name["audit"]["ok"]
    assert proc.returncode == 0 and report["ok"]
    proc = scoperun(workspace.parent / "missing", "doctor")
    assert proc.returncode == 1 and "scoperun demo" in proc.stdout


def test_ctrl_c_removes_the_container_and_records_the_interruption(workspace: Path, docker_client) -> None:
    """Ctrl-C (SIGINT) during a run removes its container and leaves an `error` record saying so."""
    import signal
    import time

    from tests.integration.conftest import leftover_containers

    (workspace / "Tools" / "long.py").write_text("import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "scoperun", "run", "Tools/long.py", "--case", CASE],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    audit = workspace / "Database" / "script_executions"
    deadline = time.monotonic() + 60
    running: list = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.2)
        running = docker_client.containers.list(
            sparse=True, filters={"label": f"org.scoperun.workspace={workspace.resolve()}"})
    assert running, "the run's container never started"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    records = [json.loads(p.read_text()) for p in audit.glob("*.json")]
    assert len(records) == 1
    assert records[0]["status"] == "error" and "interrupted" in records[0]["message"]
    assert leftover_containers(docker_client, {records[0]["execution_id"]}) == []
