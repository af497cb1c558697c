"""`scoperun firewall`: the metadata-server rule is installed, and the same mechanism really blocks
a server on a private Docker network the test creates. No traffic is ever sent to 169.254.169.254."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Status
from scoperun.executor import Executor
from scoperun.safety.firewall import status
from tests.conftest import CASE
from tests.integration.conftest import IMAGE, unavailable

METADATA = "169.254.169.254/32"
TEST_LABEL = {"org.scoperun.test": "1"}


def scoperun(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace)}
    return subprocess.run([sys.executable, "-m", "scoperun", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        unavailable("the firewall tests need root (iptables)")


def test_install_puts_the_metadata_rule_in_docker_user_and_doctor_sees_it(workspace: Path, docker_client) -> None:
    """`firewall install` adds the DROP rule for the metadata server; `status` and `doctor` report it."""
    had_rule = status([METADATA]).ok
    try:
        installed = scoperun(workspace, "firewall", "install", "--json")
        assert installed.returncode == 0, installed.stderr
        assert json.loads(installed.stdout)["blocked"] == [METADATA]
        rule = ["iptables", "-C", "DOCKER-USER", "-d", METADATA, "-m", "comment", "--comment", "scoperun-block",
                "-j", "DROP"]
        assert subprocess.run(rule, capture_output=True).returncode == 0
        state = scoperun(workspace, "firewall", "status", "--json")
        assert state.returncode == 0 and json.loads(state.stdout)["ok"] is True
        doctor = json.loads(scoperun(workspace, "doctor", "--json").stdout)
        check = next(c for c in doctor["checks"] if c["name"] == "firewall")
        assert check["ok"] and "169.254.169.254/32" in check["detail"]
    finally:
        if not had_rule:
            assert scoperun(workspace, "firewall", "remove").returncode == 0
    assert status([METADATA]).ok is had_rule


@pytest.fixture
def private_server(docker_client) -> Iterator[tuple[str, str]]:
    """A private Docker network and an HTTP server container on it: (network name, server IP)."""
    name = f"scoperun-test-fw-{secrets.token_hex(4)}"
    network = docker_client.networks.create(name, driver="bridge", labels=TEST_LABEL)
    server = None
    try:
        server = docker_client.containers.run(
            IMAGE, ["python", "-m", "http.server", "8080"], detach=True, name=f"{name}-server", labels=TEST_LABEL,
            network=name, user="1000:1000", working_dir="/tmp", read_only=True, tmpfs={"/tmp": "size=1m"})
        server.reload()
        yield name, server.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
    finally:
        if server is not None:
            server.remove(force=True)
        network.remove()


def test_extra_cidr_blocks_a_server_on_a_private_network(private_server: tuple[str, str], executor: Executor,
                                                          workspace: Path) -> None:
    """A run on the test network reaches the server; after `firewall install --cidr IP` it cannot; after
    `firewall remove --cidr IP` it can again."""
    network, ip = private_server
    (workspace / "Tools" / "fetch.py").write_text(
        "import sys, time, urllib.request\n"
        "for attempt in range(20):\n"
        "    try:\n"
        "        print(urllib.request.urlopen(f'http://{sys.argv[1]}:8080/', timeout=3).status); break\n"
        "    except OSError as e:\n"
        "        if sys.argv[2] == 'once': print('blocked', type(e).__name__); break\n"
        "        time.sleep(0.5)\n")

    def fetch(mode: str) -> str:
        result = executor.run(ExecutionRequest(script="Tools/fetch.py", case=CASE, network=network, args=[ip, mode]))
        assert result.status is Status.SUCCEEDED, result.stderr.text
        return result.stdout.text.strip()

    assert fetch("retry") == "200"  # retries only while the server starts
    try:
        added = scoperun(workspace, "firewall", "install", "--only", "--cidr", ip)
        assert added.returncode == 0, added.stderr
        assert status([f"{ip}/32"]).ok
        assert fetch("once").startswith("blocked")
    finally:
        removed = scoperun(workspace, "firewall", "remove", "--only", "--cidr", ip)
        assert removed.returncode == 0, removed.stderr
    assert not status([f"{ip}/32"]).ok
    assert fetch("retry") == "200"
