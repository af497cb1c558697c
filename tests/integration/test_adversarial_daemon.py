"""Adversarial case 18: the Docker daemon restarted in the middle of a run.

This really stops and restarts the machine's dockerd (every container on it without live-restore
dies), then starts it again exactly as it was started (same command line, environment and working
folder, in the background, its log appended to /var/log/dockerd.log) and waits until it answers.
It runs only under CI=true or with SCOPERUN_TEST_DAEMON_RESTART=1 (see tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Limits, Status
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration._adversarial import Guard, snapshot_host, snapshot_outside, wait_until
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.daemon_restart

PIDFILE = Path("/var/run/docker.pid")
LOG = "/var/log/dockerd.log"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Daemon:
    """How the running dockerd was started, so it can be started again the same way."""

    pid: int
    argv: list[bytes]
    env: dict[bytes, bytes]
    cwd: str

    @classmethod
    def current(cls) -> Daemon:
        pid = int(PIDFILE.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        env = dict(item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                   if b"=" in item)
        return cls(pid, argv, env, os.readlink(f"/proc/{pid}/cwd"))

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        assert wait_until(lambda: not _alive(self.pid), 90, 0.1), "dockerd did not stop within 90 s"

    def start(self, docker_client) -> None:
        """Start dockerd in the background as before (`dockerd >>LOG 2>&1 &`) and wait for `docker info`."""
        # setsid: the engine must outlive this test process and whatever session started it.
        subprocess.run(["sh", "-c", f'setsid "$@" >>{LOG} 2>&1 </dev/null &', "sh", *self.argv], env=self.env,
                       cwd=self.cwd, check=True, timeout=30)
        assert wait_until(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, 90, 0.5), \
            f"dockerd did not answer within 90 s; see {LOG}"
        wait_until(lambda: _pings(docker_client), 30)
        self.pid = int(PIDFILE.read_text().strip())


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def daemon(docker_client):
    """The machine's dockerd; whatever happens in the test, it is running again afterwards."""
    if os.geteuid() != 0 or not PIDFILE.exists():
        unavailable("restarting dockerd needs root and a dockerd started with /var/run/docker.pid")
    d = Daemon.current()
    yield d
    if not _alive(d.pid):
        d.start(docker_client)


def _running(docker_client, workspace: Path) -> bool:
    return bool(docker_client.api.containers(
        filters={"label": f"org.scoperun.workspace={workspace.resolve()}", "status": "running"}))


def test_18_daemon_restart_mid_run_ends_error_with_one_record(guard: Guard, executor: Executor, workspace: Path,
                                                               docker_client, daemon: Daemon) -> None:
    """A run whose engine restarts under it ends `error` saying the engine was lost, with exactly one
    final audit record; its container is removed once the engine is back."""
    script = guard.tool("long.py", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    before, host = snapshot_outside(workspace, CASE), snapshot_host()
    holder: dict = {}
    run = threading.Thread(target=lambda: holder.update(
        result=executor.run(ExecutionRequest(script=script, case=CASE, limits=Limits(timeout=300)))))
    run.start()
    assert wait_until(lambda: _running(docker_client, workspace), 30), "the run's container never started"
    time.sleep(1)
    daemon.stop()
    daemon.start(docker_client)
    run.join(240)
    assert not run.is_alive(), "the run did not end after the engine restarted"
    result = holder["result"]
    assert result.status is Status.ERROR, result.message
    assert "lost the Docker engine" in result.message and "run it again" in result.message
    guard.verify(result, before, host)
