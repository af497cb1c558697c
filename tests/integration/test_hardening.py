"""The container's hardening, read back from the engine while a run is in progress, and gVisor."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Status
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration._adversarial import wait_until
from tests.integration.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]


def _running_container(docker_client, workspace: Path) -> dict | None:
    found = docker_client.api.containers(filters={"label": f"org.scoperun.workspace={workspace.resolve()}",
                                                  "status": "running"})
    return found[0] if found else None


def test_running_container_is_hardened_as_configured(executor: Executor, workspace: Path, docker_client) -> None:
    """Inspecting a running run: non-root user, no capabilities, read-only root, no-new-privileges,
    memory = swap, CPU quota, pids and file ulimits, no devices, no engine log, no network."""
    # The signal goes through Tools (a bind mount): a staged run's overlay does not show files the host
    # adds to the case while it runs.
    go = workspace / "Tools" / "go"
    (workspace / "Tools" / "wait.py").write_text(
        "import os, time\nprint(''.join(l for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs',"
        " 'Seccomp:'))), flush=True)\nwhile not os.path.exists('/workspace/Tools/go'):\n    time.sleep(0.1)\n")
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(
        result=executor.run(ExecutionRequest(script="Tools/wait.py", case=CASE))))
    thread.start()
    try:
        assert wait_until(lambda: _running_container(docker_client, workspace), 30)
        info = docker_client.api.inspect_container(_running_container(docker_client, workspace)["Id"])
    finally:
        go.write_text("")
        go.chmod(0o666)
        thread.join(60)
    host, config = info["HostConfig"], info["Config"]
    settings = executor.settings
    assert config["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True and "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] == settings.memory_bytes
    assert host["NanoCpus"] == int(settings.cpus * 1e9) and host["PidsLimit"] == settings.pids_limit
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits == {"nofile": (settings.nofile,) * 2, "fsize": (2 * 1024**3,) * 2}
    assert not host["Devices"] and not host.get("DeviceCgroupRules") and not host.get("DeviceRequests")
    assert host["LogConfig"]["Type"] == "none"
    assert host["NetworkMode"] == "none" and host["IpcMode"] == "private"
    assert host["Tmpfs"]["/tmp"].startswith("rw,nosuid,nodev,size=")
    # Binds, plus the case itself as this run's staging overlay volume (write_mode staged).
    stage = f"scoperun-stage-{info['Config']['Labels']['org.scoperun.execution-id']}"
    assert all(m["Type"] == "bind" or (m["Type"] == "volume" and m["Name"] == stage) for m in info["Mounts"])
    assert not any("docker.sock" in m["Source"] for m in info["Mounts"])
    result = holder["result"]
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert "CapEff:\t0000000000000000" in result.stdout.text and "NoNewPrivs:\t1" in result.stdout.text
    assert "Seccomp:\t2" in result.stdout.text  # the engine's default seccomp profile is on


@pytest.fixture(scope="module")
def gvisor(docker_client) -> str:
    """The runsc runtime, registered by scripts/install-gvisor.sh when missing (root only)."""
    if "runsc" not in docker_client.info().get("Runtimes", {}):
        if os.geteuid() == 0:
            done = subprocess.run(["bash", str(ROOT / "scripts" / "install-gvisor.sh")], capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
        else:
            unavailable("gVisor (runsc) is not registered; run `sudo bash scripts/install-gvisor.sh`")
    assert "runsc" in docker_client.info()["Runtimes"]
    return "runsc"


def test_gvisor_runtime_runs_the_script_under_gvisor(gvisor: str, settings, workspace: Path) -> None:
    """With runtime = "runsc" the script runs on gVisor's kernel (its dmesg says so) and writes its case."""
    with Executor(settings.model_copy(update={"runtime": gvisor, "network": "none"})) as ex:
        result = ex.run_code(
            "import subprocess\nprint(subprocess.run(['dmesg'], capture_output=True, text=True).stdout)\n"
            "print(open('/proc/version').read())\nopen('gvisor.txt', 'w').write('ok')\n", case=CASE)
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert "Starting gVisor" in result.stdout.text
    assert (workspace / "projects" / CASE / "gvisor.txt").read_text() == "ok"
