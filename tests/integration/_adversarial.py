"""Shared checks of the adversarial suite: every hostile run must leave the host, the workspace
outside its case, and the engine as they were, and must be completely audited."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, ExecutionResult, Status
from scoperun.executor import Executor
from scoperun.safety.hazards import walk_no_follow
from tests.conftest import CASE
from tests.integration.conftest import read_record

HOST_FILES = ("/etc/passwd", "/etc/shadow", "/etc/hosts", "/etc/group")
# Folders of the workspace a run legitimately changes from outside the case: its record, its script
# and the journal of pre-images scoperun keeps when it applies a staged run's changes.
RUN_OUTPUTS = ("Database/script_executions", "Database/temp_scripts", "Database/journal")


def _fingerprint(path: bytes, st: os.stat_result) -> tuple:
    if stat.S_ISREG(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        return ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_nlink, digest)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid)


def snapshot_outside(workspace: Path, case: str) -> dict[bytes, tuple]:
    """Every entry of the workspace except the case and the run-output folders, fingerprinted."""
    skip = {os.fsencode(p) for p in (f"projects/{case}", *RUN_OUTPUTS)}
    root = os.fsencode(workspace)
    return {rel: _fingerprint(os.path.join(root, rel), st) for rel, st in walk_no_follow(root)
            if not any(rel == s or rel.startswith(s + b"/") for s in skip)}


def snapshot_host() -> dict[str, str]:
    """Hashes of a few host files a container must never reach, and the engine socket's kind."""
    out = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in HOST_FILES if Path(p).exists()}
    sock = Path("/var/run/docker.sock")
    out["docker.sock"] = str(stat.S_ISSOCK(sock.stat().st_mode)) if sock.exists() else "absent"
    return out


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (a run's processes are visible on the host)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def containers_of(docker_client, execution_id: str) -> list[dict]:
    """The engine's containers (any state) labelled with `execution_id`; one list call, no inspect races."""
    return docker_client.api.containers(all=True, filters={"label": f"org.scoperun.execution-id={execution_id}"})


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.2) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)


class Guard:
    """Runs hostile scripts and checks what every adversarial case must prove."""

    def __init__(self, workspace: Path, executor: Executor, docker_client) -> None:
        self.workspace = workspace
        self.executor = executor
        self.docker = docker_client

    def tool(self, name: str, code: str) -> str:
        """Write a script into Tools (before the snapshot) and return its workspace path."""
        path = self.workspace / "Tools" / name
        path.write_text(code)
        return f"Tools/{name}"

    def run(self, code: str, *, name: str = "probe.py", case: str = CASE, executor: Executor | None = None,
            **fields) -> ExecutionResult:
        """Run `code` as a Tools script on `case`, then verify host, workspace, engine and audit."""
        script = self.tool(name, code)
        before, host = snapshot_outside(self.workspace, case), snapshot_host()
        result = (executor or self.executor).run(ExecutionRequest(script=script, case=case, **fields))
        self.verify(result, before, host, case=case)
        return result

    def verify(self, result: ExecutionResult, before: dict, host: dict, *, case: str = CASE) -> None:
        """The checks common to every case (the status is asserted by the test itself)."""
        assert snapshot_outside(self.workspace, case) == before, "the workspace outside the case changed"
        assert snapshot_host() == host, "a host file changed"
        assert wait_until(lambda: not containers_of(self.docker, result.execution_id), 20), \
            f"container of {result.execution_id} left behind"
        self.assert_audited(result)

    def assert_audited(self, result: ExecutionResult) -> None:
        """Exactly one complete, final audit record matches the result."""
        folder = self.workspace / "Database" / "script_executions"
        names = {p.name for p in folder.iterdir() if result.execution_id in p.name}
        # Beside the record: only its kept outputs (<id>.stdout / .stderr), no temporary files.
        assert f"{result.execution_id}.json" in names
        assert names <= {f"{result.execution_id}.{suffix}" for suffix in ("json", "stdout", "stderr")}, names
        record = read_record(self.workspace, result.execution_id)
        assert record["status"] == result.status.value != "running"
        assert record["exit_code"] == result.exit_code
        assert record["finished_at"] and record["duration"] is not None
        assert record["stdout_length"] == result.stdout.total_bytes
        assert record["stderr_length"] == result.stderr.total_bytes
        assert record["hazards"] == [h.model_dump(mode="json") for h in result.hazards]
        assert record["message"] == result.message
        if result.status is not Status.REJECTED:
            assert record["script_sha256"] and record["image_id"]


@pytest.fixture
def guard(workspace: Path, executor: Executor, docker_client) -> Guard:
    """The adversarial suite's runner-and-checker."""
    return Guard(workspace, executor, docker_client)
