"""The swarm backend on a real two-node swarm made of two private engines (never the main one).

The module's swarm is a manager and a worker, each a private dockerd in its own network
namespace (scoperun.engine.localswarm); the runner image is copied into both with
`docker save | docker load`. Everything is removed at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scoperun.changes import rollback_changes
from scoperun.config import Settings
from scoperun.engine.base import MANAGED_LABEL
from scoperun.engine.swarm import SwarmBackend
from scoperun.executor import Executor
from scoperun.models import ExecutionRequest, Status
from tests.conftest import CASE, OTHER_CASE, make_workspace
from tests.integration.conftest import IMAGE, unavailable

pytestmark = pytest.mark.swarm

WORKER_LABEL = "scoperun.test-worker"  # only the worker has it: runs pinned there


@pytest.fixture(scope="module")
def swarm() -> Iterator[object]:
    """A started two-node swarm with the runner image on both nodes; torn down whatever happens."""
    from scoperun.engine import localswarm

    if os.geteuid() != 0:
        unavailable("a local swarm needs root (network namespaces, private dockerd instances)")
    missing = [t for t in ("ip", "nsenter", "dockerd", "docker") if shutil.which(t) is None]
    if missing:
        unavailable(f"a local swarm needs {', '.join(missing)} (make tools)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False).returncode != 0:
        unavailable(f"image {IMAGE} is not on the main engine; run `make image`")
    with localswarm.local_swarm(images=(IMAGE,)) as s:
        s.manager.docker("node", "update", "--label-add", f"{WORKER_LABEL}=true", s.worker.node_id)
        yield s
    assert not localswarm.leftovers(s.prefix), f"local swarm left behind: {localswarm.leftovers(s.prefix)}"


@pytest.fixture
def swarm_settings(swarm, tmp_path: Path) -> Settings:
    """Settings for a fresh workspace on the swarm (host folders: both nodes see the same paths)."""
    ws = make_workspace(tmp_path / "sws")
    return Settings(workspace=ws, image=IMAGE, timeout=60, network="none", backend="swarm",
                    docker_host=swarm.manager.host, gc_grace=0)


def _executor(settings: Settings, swarm, *, worker_only: bool = False) -> Executor:
    backend = SwarmBackend(swarm.manager.host, node_label=WORKER_LABEL) if worker_only else None
    return Executor(settings, backend=backend)


def _assert_nothing_left(swarm, execution_ids: set[str] | None = None) -> None:
    """No run service on the manager, no run container, network or volume on either node."""
    deadline = time.monotonic() + 30
    while True:
        left = [f"service {n}" for n in swarm.manager.docker("service", "ls", "--format", "{{.Name}}").split()]
        for node in swarm.nodes:
            for kind in ("ps -a", "network ls", "volume ls"):
                out = node.docker(*kind.split(), "--filter", f"label={MANAGED_LABEL}", "--format", "{{.Name}}"
                                  if kind != "ps -a" else "{{.Names}}")
                left += [f"{node.name} {kind.split()[0]} {n}" for n in out.split()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"left behind: {left}"


def test_twenty_runs_land_on_both_nodes_with_results_and_records_as_local(swarm, swarm_settings, settings) -> None:
    """20 runs succeed on the swarm, on both nodes, each record naming its node; same shape as a local run."""
    with _executor(swarm_settings, swarm) as ex, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE,
                                                                  write_mode="direct", args=[str(i)])), range(20)))
    assert [r.status for r in results] == [Status.SUCCEEDED] * 20, [r.message for r in results]
    assert {r.node for r in results} == {swarm.manager.node_id, swarm.worker.node_id}, [r.node for r in results]
    for r in results:
        assert r.stdout.text == f"hello from {CASE}\n" and r.stderr.text == "to stderr\n" and r.exit_code == 0
        record = json.loads((swarm_settings.workspace / r.audit_record).read_text())
        assert record["node"] == r.node and record["status"] == "succeeded"

    # The same run on the main engine with the local backend: the same result and record shape.
    with Executor(settings) as local:
        ref = local.run(ExecutionRequest(script="Tools/hello.py", case=CASE, write_mode="direct", args=["0"]))
    ref_record = json.loads((settings.workspace / ref.audit_record).read_text())
    record = json.loads((swarm_settings.workspace / results[0].audit_record).read_text())
    assert set(record) == set(ref_record) and ref_record["node"] is None
    for key in ("status", "exit_code", "stdout_length", "stderr_length", "success", "network", "limits", "image_id"):
        assert record[key] == ref_record[key], key
    assert (results[0].stdout.text, results[0].stderr.text) == (ref.stdout.text, ref.stderr.text)
    _assert_nothing_left(swarm)


HARDENING_PROBE = r"""
import json, os, resource, socket
def read(p):
    try:
        return open(p).read().strip()
    except OSError as e:
        return f"error {e.errno}"
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    open("/rootfs-probe", "w"); root_ro = False
except OSError as e:
    root_ro = e.errno == 30
st = os.statvfs("/tmp")
routes = open("/proc/net/route").read().splitlines()[1:]
s = socket.socket(); s.settimeout(3)
try:
    s.connect((os.environ["PROBE_GW"], 2377)); reached = True
except OSError:
    reached = False
try:
    open("/workspace/Tools/x", "w"); tools_ro = False
except OSError as e:
    tools_ro = e.errno == 30
open("written-by-probe.txt", "w").write("ok")
print(json.dumps({
  "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
  "nnp": status["NoNewPrivs"].strip(), "capeff": status["CapEff"].strip(), "capbnd": status["CapBnd"].strip(),
  "capprm": status["CapPrm"].strip(), "root_ro": root_ro,
  "mem": read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
  "memsw": read("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
  "swaptotal": [l for l in open("/proc/meminfo") if l.startswith("SwapTotal")][0].split()[1],
  "cpu": [read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")],
  "pids": read("/sys/fs/cgroup/pids/pids.max"),
  "nofile": resource.getrlimit(resource.RLIMIT_NOFILE), "fsize": resource.getrlimit(resource.RLIMIT_FSIZE),
  "tmp_bytes": st.f_blocks * st.f_frsize, "default_route": any(r.split()[1] == "00000000" for r in routes),
  "reached_gateway": reached, "tools_ro": tools_ro, "projects": sorted(os.listdir("/workspace/projects")),
  "workspace": sorted(os.listdir("/workspace")), "cwd": os.getcwd(),
}))
"""


def test_hardening_read_back_from_inside_a_task_on_the_worker(swarm, swarm_settings) -> None:
    """On the worker: user, no-new-privileges, no capabilities, read-only root, memory = swap, CPU, pids,
    ulimits, /tmp size, network none, Tools read-only and only the run's case, all read from inside the task."""
    settings = swarm_settings.model_copy(update={"memory": "256m", "cpus": 0.25, "pids_limit": 64, "nofile": 512,
                                                 "tmp_size": "16m", "max_file_size": "100m"})
    with _executor(settings, swarm, worker_only=True) as ex:
        result = ex.run_code(HARDENING_PROBE, case=CASE, write_mode="direct",
                             env={"PROBE_GW": "10.231.2.1"})  # the worker engine's own bridge gateway
    assert result.status is Status.SUCCEEDED, result.stderr.text + result.message
    assert result.node == swarm.worker.node_id
    seen = json.loads(result.stdout.text)
    assert (seen["uid"], seen["gid"], seen["groups"]) == (1000, 1000, [1000])
    assert seen["nnp"] == "1"
    assert int(seen["capeff"], 16) == int(seen["capbnd"], 16) == int(seen["capprm"], 16) == 0
    assert seen["root_ro"] is True
    assert seen["mem"] == str(256 * 1024**2)
    assert seen["memsw"] == seen["mem"] or seen["swaptotal"] == "0"  # no swap usable beyond the limit
    assert seen["cpu"] == ["25000", "100000"]
    assert seen["pids"] == "64"
    assert seen["nofile"] == [512, 512] and seen["fsize"] == [100 * 1024**2, 100 * 1024**2]
    assert seen["tmp_bytes"] == 16 * 1024**2
    assert seen["default_route"] is False and seen["reached_gateway"] is False
    assert seen["tools_ro"] is True
    assert seen["projects"] == [CASE] and OTHER_CASE not in seen["projects"]
    assert set(seen["workspace"]) == {"projects", "Tools", "Database"}  # Database: only the script's folder
    assert seen["cwd"] == f"/workspace/projects/{CASE}"
    assert (swarm_settings.workspace / "projects" / CASE / "written-by-probe.txt").read_text() == "ok"
    record = json.loads((swarm_settings.workspace / result.audit_record).read_text())
    assert record["node"] == swarm.worker.node_id
    _assert_nothing_left(swarm)


def test_staged_changes_on_the_worker_are_applied_and_rolled_back(swarm, swarm_settings) -> None:
    """A staged run on the worker: its overlay changes reach the case on success and rollback restores the case."""
    case = swarm_settings.workspace / "projects" / CASE
    before = (case / "notes" / "intake.txt").read_text()
    code = ("import os\nopen('added.txt','w').write('new')\nopen('notes/intake.txt','a').write('more')\n"
            "os.remove('notes/intake.txt') if False else None\nos.makedirs('sub/deeper')\n")
    with _executor(swarm_settings, swarm, worker_only=True) as ex:
        result = ex.run_code(code, case=CASE, write_mode="staged")
        assert result.status is Status.SUCCEEDED, result.message + result.stderr.text
        assert result.node == swarm.worker.node_id
        assert result.changes is not None and result.changes.status.value == "applied", result.changes
        assert (case / "added.txt").read_text() == "new"
        assert (case / "notes" / "intake.txt").read_text() == before + "more"
        assert (case / "sub" / "deeper").is_dir()
        rollback_changes(swarm_settings, result.execution_id)
        assert not (case / "added.txt").exists() and not (case / "sub").exists()
        assert (case / "notes" / "intake.txt").read_text() == before
        # A failing staged run changes nothing in the case (policy on-success).
        failed = ex.run_code("open('x.txt','w').write('x')\nraise SystemExit(3)", case=CASE, write_mode="staged")
    assert failed.status is Status.FAILED and failed.exit_code == 3 and not (case / "x.txt").exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(swarm_settings.staging_dir) not in mounts  # the staging overlays were unmounted
    _assert_nothing_left(swarm)


def test_timeout_kills_the_task_on_the_worker(swarm, swarm_settings) -> None:
    """A run past its timeout on the worker is killed there: timed_out, its output so far kept, nothing left."""
    with _executor(swarm_settings, swarm, worker_only=True) as ex:
        t0 = time.monotonic()
        result = ex.run_code("import time\nprint('before', flush=True)\ntime.sleep(600)", case=CASE,
                             limits={"timeout": 3}, write_mode="direct")
        took = time.monotonic() - t0
    assert result.status is Status.TIMED_OUT and result.node == swarm.worker.node_id
    assert result.stdout.text == "before\n"
    assert took < 60
    _assert_nothing_left(swarm)


def test_oom_and_failure_and_operator_stop_on_the_swarm(swarm, swarm_settings) -> None:
    """Out of memory is oom_killed, a non-zero exit is failed with its code; `ps` lists a running run and an
    operator stop cancels it, as locally."""
    from scoperun.ops import list_runs, stop_runs

    with _executor(swarm_settings, swarm) as ex:
        oom = ex.run_code("x = bytearray(400 * 2**20)", case=CASE, limits={"memory": "64m"}, write_mode="direct")
        failed = ex.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(7)", case=CASE,
                             write_mode="direct")
        holder: dict[str, object] = {}
        thread = threading.Thread(target=lambda: holder.update(r=ex.run_code(
            "import time\nprint('up', flush=True)\ntime.sleep(600)", case=CASE, write_mode="direct")))
        thread.start()
        deadline = time.monotonic() + 60
        listed = []
        while not listed and time.monotonic() < deadline:  # `scoperun ps` on the swarm: the run's service
            time.sleep(1)
            listed = list_runs(swarm_settings)
        stopped = stop_runs(swarm_settings, None, reason="test stop", by="pytest")
        thread.join(90)
    assert oom.status is Status.OOM_KILLED and oom.stderr.text == "", oom.message
    assert failed.status is Status.FAILED and failed.exit_code == 7
    assert (failed.stdout.text, failed.stderr.text) == ("out\n", "err\n")
    stopped_result = holder["r"]
    assert len(listed) == 1 and listed[0].case == CASE and listed[0].state == "running"
    assert listed[0].execution_id == stopped_result.execution_id
    assert stopped and stopped_result.status is Status.CANCELLED, stopped_result.message  # as a local stop
    assert stopped_result.message.startswith("stopped by an operator: test stop")
    _assert_nothing_left(swarm)


def test_kill_through_the_run_handle_ends_the_task_and_keeps_its_output(swarm, swarm_settings) -> None:
    """`start(spec)` then `kill()` from another thread: `wait` returns exit 137 with the output so far."""
    from scoperun.engine.base import BindMount, RunSpec

    backend = SwarmBackend(swarm.manager.host, node_label=WORKER_LABEL)
    case = swarm_settings.workspace / "projects" / CASE
    spec = RunSpec(execution_id=f"exec_kill_{os.getpid()}", image=IMAGE,
                   command=("python3", "-c", "import time; print('up', flush=True); time.sleep(600)"),
                   working_dir="/workspace/case", mounts=(BindMount(case, "/workspace/case", read_only=True),),
                   env={}, user="1000:1000", timeout=300, memory_bytes=256 * 1024**2, cpus=0.5, pids_limit=64,
                   nofile=256, tmp_size_bytes=16 * 1024**2, network="none", output_cap=4096)
    try:
        handle = backend.start(spec)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "up" not in swarm.manager.docker(
                "service", "logs", "--raw", f"scoperun-exec-kill-{os.getpid()}", check=False):
            time.sleep(0.5)
        t0 = time.monotonic()
        threading.Timer(0.1, handle.kill).start()
        outcome = handle.wait()
        assert time.monotonic() - t0 < 60
    finally:
        backend.close()
    assert outcome.error is None and not outcome.timed_out and outcome.exit_code == 137
    assert outcome.stdout.capture().text == "up\n" and outcome.node == swarm.worker.node_id
    _assert_nothing_left(swarm)


def test_gc_removes_the_service_and_network_of_a_run_whose_scoperun_died(swarm, swarm_settings) -> None:
    """A run service nobody waits for (scoperun crashed) is removed by gc past its deadline, with its network."""
    from scoperun.engine.base import RunSpec
    from scoperun.ops import collect_garbage

    backend = SwarmBackend(swarm.manager.host)
    spec = RunSpec(execution_id=f"exec_gc_{os.getpid()}", image=IMAGE, command=("sleep", "600"),
                   working_dir="/tmp", mounts=(), env={}, user="1000:1000", timeout=1, memory_bytes=64 * 1024**2,
                   cpus=0.5, pids_limit=64, nofile=256, tmp_size_bytes=1024**2, network="none", output_cap=4096,
                   labels={"org.scoperun.workspace": str(swarm_settings.workspace.resolve())})
    backend.start(spec)  # never waited for: as if scoperun had died here
    backend.close()
    assert f"scoperun-exec-gc-{os.getpid()}" in swarm.manager.docker("service", "ls", "--format", "{{.Name}}")
    deadline = time.monotonic() + 60
    removed: list[str] = []
    while time.monotonic() < deadline:  # the network goes once its task has left it
        report = collect_garbage(swarm_settings, now=time.time() + 3600)
        removed += report.hooks.get("swarm", [])
        if any(r.startswith("network") for r in removed):
            break
        time.sleep(2)
    assert f"service scoperun-exec-gc-{os.getpid()}" in removed and any(r.startswith("network") for r in removed)
    _assert_nothing_left(swarm)


def test_doctor_finds_a_node_without_the_image_and_push_nodes_fixes_it(swarm, swarm_settings) -> None:
    """doctor --backend swarm probes every labelled node; after `image push-nodes` the worker has the image."""
    from scoperun.doctor import run_checks
    from scoperun.engine.swarmops import push_image

    tag = "scoperun-runner:push-nodes-test"
    swarm.manager.docker("tag", IMAGE, tag)  # only on the manager: the worker lacks it
    try:
        settings = swarm_settings.model_copy(update={"image": tag})
        before = {c.name: c for c in run_checks(settings)}
        worker = before[f"node {swarm.worker.node_id[:12]}"]
        assert before["swarm"].ok and before["nodes"].ok and before[f"node {swarm.manager.node_id[:12]}"].ok
        assert not worker.ok and "push-nodes" in worker.fix, worker
        assert push_image(tag, [swarm.worker.host], source_host=swarm.manager.host) == [swarm.worker.host]
        after = {c.name: c for c in run_checks(settings)}
        assert after[f"node {swarm.worker.node_id[:12]}"].ok, after[f"node {swarm.worker.node_id[:12]}"]
    finally:
        for node in swarm.nodes:
            node.docker("rmi", tag, check=False)
    _assert_nothing_left(swarm)


def test_worker_engine_stopped_mid_run_ends_the_run_with_an_error_naming_the_node(swarm, swarm_settings) -> None:
    """Stopping the worker's engine mid-run: a terminal error record naming the node, no service left;
    once the worker is back, no task container is left there either."""
    from scoperun.ops import collect_garbage

    holder: dict[str, object] = {}
    with _executor(swarm_settings, swarm, worker_only=True) as ex:
        thread = threading.Thread(target=lambda: holder.update(r=ex.run_code(
            "import time\nprint('up', flush=True)\ntime.sleep(600)", case=CASE, write_mode="direct")))
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not swarm.worker.docker(
                "ps", "--filter", f"label={MANAGED_LABEL}", "-q").strip():
            time.sleep(0.5)
        swarm.worker.kill()
        thread.join(120)
    result = holder["r"]
    assert result.status is Status.ERROR, result.message
    assert swarm.worker.node_id[:12] in result.message and "went down" in result.message
    record = json.loads((swarm_settings.workspace / result.audit_record).read_text())
    assert record["status"] == "error" and record["node"] == swarm.worker.node_id
    assert not swarm.manager.docker("service", "ls", "-q").strip()
    # Bring the worker back; its agent (or scoperun gc on that engine) removes the dead task's container.
    swarm.worker.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        nodes = swarm.manager.docker("node", "inspect", swarm.worker.node_id, "--format", "{{.Status.State}}")
        if nodes.strip() == "ready":
            break
        time.sleep(1)
    collect_garbage(swarm_settings.model_copy(update={"docker_host": swarm.worker.host, "backend": "docker"}))
    _assert_nothing_left(swarm)
