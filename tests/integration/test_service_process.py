"""`scoperun serve` as its own process: restart reconciliation after SIGKILL, the CLI through it, /mcp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scoperun.engine.base import MANAGED_LABEL
from tests.conftest import CASE
from tests.integration.conftest import IMAGE, assert_no_containers_left, read_record
from tests.service_helpers import free_port

pytest.importorskip("fastapi")
SCOPERUN = str(Path(sys.executable).parent / "scoperun")


def env_for(workspace: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPERUN_") or k in (
        "SCOPERUN_STATE_DIR", "SCOPERUN_STAGING_DIR")}
    env.update({"SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none",
                "SCOPERUN_TIMEOUT": "120", **extra})
    return env


def start_server(workspace: Path, port: int, **extra: str) -> subprocess.Popen:
    """`scoperun serve` on a loopback port (`extra`: more SCOPERUN_* settings); returns once /healthz answers."""
    proc = subprocess.Popen([SCOPERUN, "serve", "--port", str(port)], env=env_for(workspace, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"scoperun serve did not start: {proc.communicate()[0]}")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture
def served(workspace: Path, docker_client) -> Iterator[str]:
    """A `scoperun serve` process (open on loopback: no token made); yields its URL."""
    port = free_port()
    proc = start_server(workspace, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)
        assert_no_containers_left(docker_client, workspace)


def containers_of(docker_client, execution_id: str) -> list:
    found = docker_client.containers.list(all=True, sparse=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if (c.attrs.get("Labels") or {}).get("org.scoperun.execution-id") == execution_id]


def test_sigkill_mid_run_then_restart_leaves_nothing_running(workspace: Path, docker_client) -> None:
    """The server is SIGKILLed during a run; the restarted server marks the run ended and removes its container."""
    (workspace / "Tools" / "long.py").write_text("import time\nprint('working', flush=True)\ntime.sleep(300)\n")
    port = free_port()
    proc = start_server(workspace, port)
    url = f"http://127.0.0.1:{port}"
    r = httpx.post(f"{url}/v1/runs", json={"script": "Tools/long.py", "case": CASE})
    execution_id = r.json()["execution_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/runs/{execution_id}/output").text.startswith("working"):
            break
        time.sleep(0.1)
    assert containers_of(docker_client, execution_id)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert read_record(workspace, execution_id)["status"] == "running"  # what a crash leaves behind
    restarted = start_server(workspace, port)
    try:
        deadline = time.monotonic() + 60
        while (read_record(workspace, execution_id)["status"] == "running" or containers_of(docker_client,
                                                                                            execution_id)):
            assert time.monotonic() < deadline, "the restarted server did not reconcile the run"
            time.sleep(0.2)
        record = read_record(workspace, execution_id)
        assert record["status"] == "abandoned" and "ended without finishing" in record["message"]
        view = httpx.get(f"{url}/v1/runs/{execution_id}").json()
        assert view["status"] == "abandoned"
    finally:
        stop_server(restarted)
    assert_no_containers_left(docker_client, workspace)


def test_cli_uses_the_server_when_scoperun_url_is_set(served: str, workspace: Path) -> None:
    """With SCOPERUN_URL, `scoperun run` runs on the server (output printed, exit code kept); `logs` prints it."""
    env = env_for(workspace, SCOPERUN_URL=served)
    proc = subprocess.run([SCOPERUN, "run", "Tools/hello.py", "--case", CASE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"hello from {CASE}\n" and "to stderr" in proc.stderr
    execution_id = proc.stderr.split("run ", 1)[1].split()[0]
    assert read_record(workspace, execution_id)["requested_by"] == "anonymous: cli"
    logs = subprocess.run([SCOPERUN, "logs", execution_id], env=env, capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0 and logs.stdout == f"hello from {CASE}\n"
    failing = subprocess.run([SCOPERUN, "run-code", "-", "--case", CASE], input="import sys\nsys.exit(4)\n", env=env,
                             capture_output=True, text=True, timeout=120)
    assert failing.returncode == 4, failing.stderr


@pytest.mark.parametrize(("extra", "client_module"), [({}, "scoperun.cli.remote"),
                                                      ({"SCOPERUN_FULL_CLI": "1"}, "scoperun.client")])
def test_a_run_through_the_server_loads_no_local_engine(served: str, workspace: Path, extra: dict[str, str],
                                                        client_module: str) -> None:
    """`scoperun run-code` with SCOPERUN_URL (lean path or full) imports neither the local pipeline nor the docker SDK."""
    proc = subprocess.run([sys.executable, "-X", "importtime", SCOPERUN, "run-code", "-", "--case", CASE],
                          input="print(2)\n", env=env_for(workspace, SCOPERUN_URL=served, **extra), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "2\n", proc.stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert client_module in loaded  # the imports are seen
    assert not loaded & {"scoperun.pipeline", "scoperun.executor", "scoperun.engine", "docker"}, sorted(
        m for m in loaded if m.startswith(("scoperun.", "docker")))


def test_ctrl_c_on_the_cli_cancels_the_run_on_the_server(served: str, workspace: Path, docker_client) -> None:
    """SIGINT to `scoperun run` (SCOPERUN_URL set) cancels the run: record cancelled, container gone."""
    (workspace / "Tools" / "long.py").write_text("import time\nprint('working', flush=True)\ntime.sleep(300)\n")
    command = [SCOPERUN, "run", "Tools/long.py", "--case", CASE]
    execution_id, _ = interrupt_and_check_cancelled(command, env_for(workspace, SCOPERUN_URL=served), workspace)
    assert not containers_of(docker_client, execution_id)


def interrupt_and_check_cancelled(command: list[str], env: dict[str, str], workspace: Path) -> tuple[str, str]:
    """Start a run that prints `working` then sleeps, SIGINT it once that is printed (live), check exit 130 and
    the record `cancelled`; returns the execution id and what it wrote on stderr."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "working\n"  # printed live, while the run goes on
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    execution_id = err.split("run ", 1)[1].split()[0]
    deadline = time.monotonic() + 30
    while read_record(workspace, execution_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_record(workspace, execution_id)["status"] == "cancelled"
    return execution_id, err


def test_mcp_is_served_on_the_same_port(served: str, workspace: Path) -> None:
    """The official MCP client lists and calls scoperun's tools at /mcp of `scoperun serve`."""
    import anyio
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> None:
        async with Client(streamable_http_client(f"{served}/mcp")) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert "execute_custom_script" in names
            result = await client.call_tool("execute_custom_script", {"script_content": "print('via mcp')",
                                                                      "case_name": CASE})
            assert not result.is_error and "via mcp" in result.content[0].text

    anyio.run(main)
