"""ps, stop and gc through the engine contract: which containers they see, touch and leave (FakeBackend)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from scoperun.changes.store import staging_root
from scoperun.config import Settings
from scoperun.engine.base import (
    EXECUTION_ID_LABEL,
    MANAGED_LABEL,
    STAGING_UPPER_LABEL,
    WORKSPACE_LABEL,
    ContainerInfo,
    NetworkInfo,
    VolumeInfo,
)
from scoperun.errors import EngineError, ScopeRunError
from scoperun.ops import POOL_LABEL, collect_garbage, list_pool, list_runs, stop_runs
from scoperun.testing import FakeBackend

NOW = time.time()


def _labels(workspace: str, execution_id: str | None = None, **extra: str) -> dict[str, str]:
    labels = {MANAGED_LABEL: "1", WORKSPACE_LABEL: workspace, "org.scoperun.case": "Case-1",
              "org.scoperun.script": "Tools/x.py", **extra}
    if execution_id:
        labels[EXECUTION_ID_LABEL] = execution_id
    return labels


def _container(cid: str, workspace: str, execution_id: str | None, *, state: str = "running", age: float = 10.0,
               name: str | None = None, **extra: str) -> ContainerInfo:
    return ContainerInfo(cid, name or f"scoperun-{execution_id or cid}", state, NOW - age,
                         _labels(workspace, execution_id, **extra))


@pytest.fixture
def ws(settings: Settings) -> str:
    return str(Path(settings.workspace).resolve())


@pytest.fixture
def engine(ws: str) -> FakeBackend:
    """Two runs of this workspace (one old), one of another workspace, an idle warm container, a stranger."""
    fake = FakeBackend()
    for c in (_container("c1", ws, "exec_new", age=5), _container("c2", ws, "exec_old", age=500),
              _container("c3", "/elsewhere", "exec_other"),
              _container("c4", ws, None, name="scoperun-pool-ab12", **{POOL_LABEL: "host:1"}),
              ContainerInfo("c5", "db", "running", NOW, {"app": "db"})):
        fake.engine_containers[c.id] = c
    fake.memory.update({"c1": 2048, "c2": 4096})
    return fake


def test_ps_lists_this_workspaces_runs_oldest_first_with_memory(settings: Settings, engine: FakeBackend,
                                                                 ws: str) -> None:
    """list_runs shows this workspace's runs (not the idle warm container, not others), oldest first, with memory."""
    runs = list_runs(settings, engine=engine)
    assert [(r.execution_id, r.memory_bytes, r.workspace, r.case) for r in runs] == [
        ("exec_old", 4096, ws, "Case-1"), ("exec_new", 2048, ws, "Case-1")]
    assert runs[0].container == "scoperun-exec_old" and runs[0].state == "running" and runs[0].elapsed >= 500
    assert [r.execution_id for r in list_runs(settings, engine=engine, any_workspace=True, memory=False)] == [
        "exec_old", "exec_other", "exec_new"]
    assert all(r.memory_bytes is None for r in list_runs(settings, engine=engine, memory=False))
    idle = list_pool(settings, engine=engine)
    assert [(r.execution_id, r.container, r.pool) for r in idle] == [("(idle)", "scoperun-pool-ab12", "host:1")]


def test_a_claimed_pool_container_is_a_run_named_by_its_container(settings: Settings, ws: str) -> None:
    """A warm container renamed for a run (no id label) is listed under the run's id from its name."""
    fake = FakeBackend()
    fake.engine_containers["p"] = _container("p", ws, None, name="scoperun-exec_claimed", **{POOL_LABEL: "h:1"})
    assert [(r.execution_id, r.pool) for r in list_runs(settings, engine=fake)] == [("exec_claimed", "h:1")]
    assert list_pool(settings, engine=fake) == []


def test_stop_kills_only_the_named_run_and_writes_its_marker(settings: Settings, engine: FakeBackend,
                                                             workspace: Path) -> None:
    """stop kills the named run's container after writing the stop marker the executor reads."""
    outcomes = stop_runs(settings, ["exec_new"], reason="runaway", by="alice", engine=engine)
    assert [(o.execution_id, o.stopped, o.detail) for o in outcomes] == [("exec_new", True, "killed")]
    assert engine.killed == ["c1"]
    marker = json.loads((workspace / settings.audit_dir / "exec_new.stop").read_text())
    assert marker["reason"] == "runaway" and marker["by"] == "alice"


def test_stop_refuses_a_run_out_of_scope_and_stops_all_of_this_workspace(settings: Settings,
                                                                         engine: FakeBackend) -> None:
    """An id of another workspace is refused (naming ps); --all stops this workspace's runs, never others."""
    with pytest.raises(ScopeRunError, match="scoperun ps") as refused:
        stop_runs(settings, ["exec_other"], reason="r", by="b", engine=engine)
    assert "--any-workspace" in str(refused.value) and engine.killed == []
    outcomes = stop_runs(settings, None, reason="r", by="b", engine=engine)
    assert sorted(o.execution_id for o in outcomes) == ["exec_new", "exec_old"] and sorted(engine.killed) == ["c1", "c2"]


def test_stop_reports_a_gone_container_and_an_engine_refusal(settings: Settings, engine: FakeBackend) -> None:
    """A container that vanished is `already gone`; an engine refusal is reported with its message, not raised."""
    engine.failing.add("c2")
    real = engine.force_kill_container

    def vanish(container_id: str) -> bool:
        engine.engine_containers.pop(container_id, None)
        return real(container_id)

    engine.force_kill_container = vanish  # type: ignore[method-assign]
    outcomes = {o.execution_id: o for o in stop_runs(settings, None, reason="r", by="b", engine=engine)}
    assert not outcomes["exec_new"].stopped and outcomes["exec_new"].detail == "already gone"
    assert not outcomes["exec_old"].stopped and "failed to kill container c2" in outcomes["exec_old"].detail


def test_stop_on_a_swarm_scales_the_runs_service_to_zero(settings: Settings, ws: str) -> None:
    """With the swarm backend a run in progress is a service: ps lists it, stop scales it to zero."""
    settings = settings.model_copy(update={"backend": "swarm"})
    fake = FakeBackend()
    fake.engine_services["s1"] = ContainerInfo("s1", "scoperun-exec-a", "running", NOW - 30,
                                               _labels(ws, "exec_a"), service=True)
    fake.engine_services["s2"] = ContainerInfo("s2", "scoperun-exec-b", "running", NOW, _labels("/x", "exec_b"),
                                               service=True)
    runs = list_runs(settings, engine=fake)
    assert [(r.execution_id, r.memory_bytes) for r in runs] == [("exec_a", None)]
    assert [o.stopped for o in stop_runs(settings, ["exec_a"], reason="r", by="b", engine=fake)] == [True]
    assert fake.stopped_services == ["s1"] and fake.killed == []


def test_engine_down_is_an_engine_error_for_ps_and_stop(settings: Settings) -> None:
    """When the engine cannot be reached, ps and stop raise EngineError (the CLI's exit 125) with its message."""
    fake = FakeBackend(unreachable="cannot reach the Docker engine at tcp://127.0.0.1:9 (DOCKER_HOST)")
    for call in (lambda: list_runs(settings, engine=fake), lambda: stop_runs(settings, None, reason="r", by="b",
                                                                              engine=fake)):
        with pytest.raises(EngineError, match="tcp://127.0.0.1:9"):
            call()


def test_gc_removes_overdue_ended_and_orphaned_pool_containers_only(settings: Settings, ws: str) -> None:
    """gc removes containers past their deadline, ended ones past the grace, and warm ones of a dead pool; a dry
    run only lists them; live and foreign containers stay."""
    fake = FakeBackend()
    for c in (_container("due", ws, "exec_due", **{"org.scoperun.deadline": str(int(NOW - 10_000))}),
              _container("ended", ws, "exec_ended", state="exited", age=10_000),
              _container("fresh", ws, "exec_fresh", state="exited", age=1),
              _container("live", ws, "exec_live"),
              _container("orphan", ws, None, name="scoperun-pool-1", **{POOL_LABEL: f"{os.uname().nodename}:4194305"}),
              _container("other", "/elsewhere", "exec_x", state="exited", age=10_000),
              ContainerInfo("stranger", "db", "exited", NOW - 10_000, {"app": "db"})):
        fake.engine_containers[c.id] = c
    dry = collect_garbage(settings, engine=fake, dry_run=True, now=NOW)
    expected = {("exec_due", "past its deadline"), ("exec_ended", "ended and left behind"),
                ("?", "its warm pool's process is gone")}
    assert {(c["execution_id"], c["reason"]) for c in dry.containers_removed} == expected
    assert len(fake.engine_containers) == 7
    report = collect_garbage(settings, engine=fake, now=NOW)
    assert {(c["execution_id"], c["reason"]) for c in report.containers_removed} == expected and not report.errors
    assert sorted(fake.engine_containers) == ["fresh", "live", "other", "stranger"]
    everywhere = collect_garbage(settings, engine=fake, any_workspace=True, now=NOW)
    assert [c["execution_id"] for c in everywhere.containers_removed] == ["exec_x"]
    assert "stranger" in fake.engine_containers


def test_gc_reports_an_engine_refusal_and_an_unreachable_engine(settings: Settings, ws: str) -> None:
    """A container the engine will not remove is an error in the report; an engine that is down is one error, and
    the record bookkeeping and hooks still run."""
    fake = FakeBackend(failing={"due"})
    fake.engine_containers["due"] = _container("due", ws, "exec_due", state="exited", age=10_000)
    report = collect_garbage(settings, engine=fake, now=NOW)
    assert len(report.errors) == 1 and report.errors[0].startswith("cannot remove scoperun-exec_due: ")
    down = collect_garbage(settings, engine=FakeBackend(unreachable="cannot reach the Docker engine"), now=NOW)
    assert down.errors == ["cannot reach the Docker engine"] and "retention" in down.hooks


def _volume(name: str, ws: str | None, execution_id: str, *, age: float | None, upper: Path | None = None,
            managed: bool = True) -> VolumeInfo:
    labels = {EXECUTION_ID_LABEL: execution_id}
    if managed:
        labels[MANAGED_LABEL] = "1"
    if ws is not None:
        labels[WORKSPACE_LABEL] = ws
    if upper is not None:
        labels[STAGING_UPPER_LABEL] = str(upper)
    return VolumeInfo(name, labels, None if age is None else time.time() - age)


def test_gc_sweeps_staging_volumes_no_run_can_use(settings: Settings, ws: str) -> None:
    """gc removes volumes of abandoned-run-free, container-free runs past the grace or whose staging folder is gone;
    it keeps young ones, ones a container still serves, foreign and other workspaces' volumes."""
    root = staging_root(settings)
    (root / "exec_kept" / "upper").mkdir(parents=True)
    fake = FakeBackend()
    fake.engine_containers["c"] = _container("c", ws, "exec_busy")
    for v in (_volume("old", ws, "exec_old", age=10_000), _volume("young", ws, "exec_young", age=1),
              _volume("busy", ws, "exec_busy", age=10_000),
              _volume("folder-gone", None, "exec_gone", age=None, upper=root / "exec_gone" / "upper"),
              _volume("folder-kept", None, "exec_kept", age=None, upper=root / "exec_kept" / "upper"),
              _volume("elsewhere", "/elsewhere", "exec_e", age=10_000),
              _volume("foreign", ws, "exec_f", age=10_000, managed=False)):
        fake.engine_volumes[v.name] = v
    dry = collect_garbage(settings, engine=fake, dry_run=True, now=time.time())
    assert sorted(dry.volumes_removed) == ["folder-gone", "old"] and len(fake.engine_volumes) == 7
    report = collect_garbage(settings, engine=fake, now=time.time())
    assert sorted(report.volumes_removed) == ["folder-gone", "old"] and not report.errors
    assert sorted(fake.engine_volumes) == ["busy", "elsewhere", "folder-kept", "foreign", "young"]
    assert collect_garbage(settings, engine=fake, any_workspace=True, now=time.time()).volumes_removed == ["elsewhere"]


def test_gc_reports_a_volume_still_in_use(settings: Settings, ws: str) -> None:
    """A stale volume a container still uses stays, and gc says so (a later gc gets it)."""
    fake = FakeBackend(volumes_in_use={"old"})
    fake.engine_volumes["old"] = _volume("old", ws, "exec_old", age=10_000)
    report = collect_garbage(settings, engine=fake, now=time.time())
    assert report.volumes_removed == ["old"] and "old" in fake.engine_volumes
    assert report.errors == ["cannot remove volume old: a container still uses it (a later gc will get it)"]


def test_gc_on_a_swarm_removes_overdue_services_and_run_networks(settings: Settings, ws: str) -> None:
    """On a swarm manager gc removes this workspace's services past their deadline and the per-run networks."""
    settings = settings.model_copy(update={"backend": "swarm"})
    fake = FakeBackend()
    deadline = {"org.scoperun.deadline": str(int(NOW - 10_000))}
    fake.engine_services["s1"] = ContainerInfo("s1", "scoperun-exec-due", "running", NOW, _labels(ws, "e1", **deadline),
                                               service=True)
    fake.engine_services["s2"] = ContainerInfo("s2", "scoperun-exec-live", "running", NOW,
                                               _labels(ws, "e2", **{"org.scoperun.deadline": str(int(NOW + 600))}),
                                               service=True)
    fake.engine_services["s3"] = ContainerInfo("s3", "scoperun-exec-other", "running", NOW,
                                               _labels("/elsewhere", "e3", **deadline), service=True)
    fake.engine_networks["n1"] = NetworkInfo("n1", "scoperun-none-e1", {MANAGED_LABEL: "1"})
    fake.engine_networks["n2"] = NetworkInfo("n2", "scoperun-shared", {MANAGED_LABEL: "1"})
    assert collect_garbage(settings, engine=fake, dry_run=True, now=NOW).hooks["swarm"] == [
        "service scoperun-exec-due"]
    report = collect_garbage(settings, engine=fake, now=NOW)
    assert report.hooks["swarm"] == ["service scoperun-exec-due", "network scoperun-none-e1"]
    assert sorted(fake.engine_services) == ["s2", "s3"] and sorted(fake.engine_networks) == ["n2"]
