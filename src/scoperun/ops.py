"""Operations on runs: `ps`, `stop`, `gc`. They act only on scoperun's containers (the
`org.scoperun.managed` label) and, unless asked otherwise, only on this workspace's
(`org.scoperun.workspace`): never on any other container of the host.

Stopping a run writes a marker beside its record (`<execution_id>.stop`) before the container
is killed; the executor that owns the run reads it when the container ends and records the run
as `cancelled` with the operator's reason. `gc` marks runs whose scoperun process died as
`abandoned` and removes their containers and any container past its deadline label.

Extension point for staging leftovers: a module can `register_gc_hook(name, hook)`, or define
`gc_staging(settings, *, now, dry_run) -> list[str]` in `scoperun.changes`; gc calls it and
reports what it returns (the leftovers it removed, or would remove on a dry run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from scoperun.atomicio import write_json_atomic
from scoperun.audit.state import HOST, epoch_of, stale_run
from scoperun.changes.volumes import sweep_staging_volumes, workspace_label
from scoperun.config import Settings
from scoperun.engine.base import (
    EXECUTION_ID_LABEL,
    MANAGED_LABEL,
    WORKSPACE_LABEL,
    ContainerInfo,
    EngineHousekeeping,
)
from scoperun.errors import AuditError, EngineError, ScopeRunError

__all__ = [
    "GcReport",
    "RunInfo",
    "StopOutcome",
    "collect_garbage",
    "list_pool",
    "list_runs",
    "read_stop_marker",
    "register_gc_hook",
    "stop_runs",
    "write_stop_marker",
]

log = logging.getLogger(__name__)
ID_LABEL = EXECUTION_ID_LABEL
GcHook = Callable[..., list[str]]  # hook(settings, *, now: float, dry_run: bool) -> leftovers handled
_GC_HOOKS: dict[str, GcHook] = {}


def register_gc_hook(name: str, hook: GcHook) -> None:
    """Have `scoperun gc` call `hook(settings, now=..., dry_run=...)` (e.g. to clean staging leftovers)."""
    _GC_HOOKS[name] = hook


# -- stop markers ---------------------------------------------------------------------------


def write_stop_marker(audit_dir: Path, execution_id: str, reason: str, *, by: str) -> None:
    """Tell the run's executor why its container is about to end (written before the kill)."""
    marker = {"reason": reason, "by": by, "host": HOST, "at": datetime.now(UTC).isoformat()}
    write_json_atomic(Path(audit_dir) / f"{execution_id}.stop", marker)


def read_stop_marker(audit_dir: Path, execution_id: str) -> str | None:
    """The operator's reason (with who, where, when) if the run was stopped, else None."""
    try:
        marker = json.loads((Path(audit_dir) / f"{execution_id}.stop").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "stopped (the stop marker is unreadable)"
    return f"{marker.get('reason')} (by {marker.get('by')} on {marker.get('host')} at {marker.get('at')})"


# -- ps ---------------------------------------------------------------------------------------


class RunInfo(BaseModel):
    """One scoperun container as `ps` shows it."""

    execution_id: str
    case: str = ""
    script: str = ""
    workspace: str = ""
    container: str = Field(description="Container name.")
    state: str = Field(description="Engine state: running, exited, created, ...")
    elapsed: float = Field(description="Seconds since the container was created.")
    memory_bytes: int | None = Field(None, description="Memory in use (engine stats, page cache excluded).")
    deadline: float | None = Field(None, description="Epoch seconds after which gc may remove it.")
    pool: str | None = Field(None, description="Warm-pool owner (host:pid) when a pooled container serves the run.")


POOL_LABEL = "org.scoperun.pool"  # engine.pool.POOL_LABEL: a warm container, idle until its name names a run


def _execution_id(container: ContainerInfo) -> str:
    """The run a container serves: its label, or for a pooled one its name (renamed when it is claimed)."""
    if container.labels.get(ID_LABEL):
        return container.labels[ID_LABEL]
    name = container.name
    return name.removeprefix("scoperun-") if name.startswith("scoperun-exec_") else "?"


def _idle_pooled(container: ContainerInfo) -> bool:
    return bool(container.labels.get(POOL_LABEL)) and _execution_id(container) == "?"


@contextlib.contextmanager
def _engine_of(settings: Settings, engine: EngineHousekeeping | None) -> Iterator[EngineHousekeeping]:
    """The given engine, or the Docker engine at settings.docker_host (closed after use)."""
    if engine is not None:
        yield engine
        return
    from scoperun.engine.docker import DockerBackend

    backend = DockerBackend(settings.docker_host, remove_in_background=False, timeout=30)
    try:
        yield backend
    finally:
        backend.close()


def _workspace_label(settings: Settings) -> str:
    return workspace_label(settings)


def _containers(engine: EngineHousekeeping, settings: Settings, *, any_workspace: bool,
                all_states: bool) -> list[ContainerInfo]:
    labels = [f"{MANAGED_LABEL}=1"]
    if not any_workspace:
        labels.append(f"{WORKSPACE_LABEL}={_workspace_label(settings)}")
    found = engine.containers(*labels, all_states=all_states)
    # The engine filtered already; check again so nothing unlabelled is ever touched.
    return [c for c in found if c.labels.get(MANAGED_LABEL) == "1"]


def _services(engine: EngineHousekeeping, settings: Settings, *, any_workspace: bool) -> list[ContainerInfo]:
    """A swarm manager's run services (this workspace's unless `any_workspace`)."""
    workspace = None if any_workspace else _workspace_label(settings)
    return [s for s in engine.services(MANAGED_LABEL)
            if workspace is None or s.labels.get(WORKSPACE_LABEL) == workspace]


def _in_progress(engine: EngineHousekeeping, settings: Settings, *, any_workspace: bool) -> list[ContainerInfo]:
    """What serves each run in progress: a service on a swarm, else a (claimed or fresh) container."""
    if settings.backend == "swarm":  # a run in progress is a service; its container is on some node
        return _services(engine, settings, any_workspace=any_workspace)
    return [c for c in _containers(engine, settings, any_workspace=any_workspace, all_states=False)
            if not _idle_pooled(c)]


def list_runs(settings: Settings, *, any_workspace: bool = False, memory: bool = True,
              engine: EngineHousekeeping | None = None) -> list[RunInfo]:
    """scoperun's running containers (this workspace's unless `any_workspace`), oldest first."""
    now = time.time()
    with _engine_of(settings, engine) as eng:
        found = _in_progress(eng, settings, any_workspace=any_workspace)
        memory = memory and settings.backend != "swarm"
        with ThreadPoolExecutor(max_workers=8) as pool:
            mem = list(pool.map(lambda c: eng.container_memory(c.id) if memory else None, found))
    runs = []
    for c, used in zip(found, mem, strict=True):
        deadline = c.labels.get("org.scoperun.deadline")
        runs.append(RunInfo(
            execution_id=_execution_id(c), case=c.labels.get("org.scoperun.case", ""), pool=c.labels.get(POOL_LABEL),
            script=c.labels.get("org.scoperun.script", ""), workspace=c.labels.get(WORKSPACE_LABEL, ""),
            container=c.name, state=c.state, elapsed=max(0.0, now - c.created), memory_bytes=used,
            deadline=float(deadline) if deadline and deadline.isdigit() else None,
        ))
    return sorted(runs, key=lambda r: -r.elapsed)


def list_pool(settings: Settings, *, any_workspace: bool = False,
              engine: EngineHousekeeping | None = None) -> list[RunInfo]:
    """Idle warm containers (serving no run yet), listed apart from runs."""
    now = time.time()
    with _engine_of(settings, engine) as eng:
        found = _containers(eng, settings, any_workspace=any_workspace, all_states=False)
    return [RunInfo(execution_id="(idle)", workspace=c.labels.get(WORKSPACE_LABEL, ""), container=c.name,
                    state=c.state, elapsed=max(0.0, now - c.created), pool=c.labels.get(POOL_LABEL))
            for c in found if _idle_pooled(c)]


# -- stop -------------------------------------------------------------------------------------


class StopOutcome(BaseModel):
    """What `stop` did to one run."""

    execution_id: str
    container: str
    stopped: bool
    detail: str = ""


def stop_runs(settings: Settings, execution_ids: list[str] | None, *, reason: str, by: str,
              any_workspace: bool = False, engine: EngineHousekeeping | None = None) -> list[StopOutcome]:
    """Kill the containers of the given runs (all of this workspace's when None); the runs end `cancelled`.

    Raises ScopeRunError when an id names no running scoperun container in scope.
    """
    with _engine_of(settings, engine) as eng:
        found = _in_progress(eng, settings, any_workspace=any_workspace)  # on a swarm, one service per run
        by_id = {_execution_id(c): c for c in found}
        if execution_ids is not None:
            missing = [i for i in execution_ids if i not in by_id]
            if missing:
                scope = "on this engine" if any_workspace else f"in workspace {_workspace_label(settings)}"
                raise ScopeRunError(f"no running scoperun run {', '.join(missing)} {scope}; list them with "
                                    f"`scoperun ps`{'' if any_workspace else ' (or add --any-workspace)'}")
            targets = [by_id[i] for i in execution_ids]
        else:
            targets = found
        return [_stop_one(eng, settings, c, reason=reason, by=by) for c in targets]


def _stop_one(engine: EngineHousekeeping, settings: Settings, container: ContainerInfo, *, reason: str,
              by: str) -> StopOutcome:
    execution_id = _execution_id(container)
    name = container.name
    detail = ""
    workspace = container.labels.get(WORKSPACE_LABEL)
    if workspace:
        try:
            write_stop_marker(Path(workspace) / settings.audit_dir, execution_id, reason, by=by)
        except OSError as exc:
            detail = f"stop marker not written ({exc.strerror}); the record will not say why it ended. "
    try:
        if container.service:
            ended = engine.stop_service(container.id)
        else:
            ended = engine.force_kill_container(container.id)
    except EngineError as exc:
        return StopOutcome(execution_id=execution_id, container=name, stopped=False, detail=detail + str(exc))
    if not ended:
        return StopOutcome(execution_id=execution_id, container=name, stopped=False, detail=detail + "already gone")
    return StopOutcome(execution_id=execution_id, container=name, stopped=True, detail=detail + "killed")


# -- gc ---------------------------------------------------------------------------------------


class GcReport(BaseModel):
    """What `gc` did (or, on a dry run, would do)."""

    dry_run: bool = False
    abandoned: list[str] = Field(default_factory=list, description="Runs marked abandoned.")
    containers_removed: list[dict[str, str]] = Field(default_factory=list)
    volumes_removed: list[str] = Field(default_factory=list, description="Staging volumes of ended runs.")
    hooks: dict[str, list[str]] = Field(default_factory=dict, description="Hook name -> leftovers it handled.")
    errors: list[str] = Field(default_factory=list)


def _abandon_reason(record: dict[str, Any], settings: Settings, now: float) -> str | None:
    stale = stale_run(record, now=now, grace=settings.gc_grace, default_timeout=settings.timeout)
    if stale is None:
        return None
    if stale.why == "process-gone":
        return (f"its scoperun process (pid {stale.pid} on {stale.host}) ended without finishing the run "
                f"(crashed or killed)")
    return (f"still 'running' {stale.elapsed:.0f} s after it started, past its timeout ({stale.timeout:g} s) "
            f"and gc's grace ({settings.gc_grace:g} s); its scoperun process on {stale.host} never finished it")


def _mark_abandoned(settings: Settings, report: GcReport, now: float, dry_run: bool) -> None:
    from scoperun.audit.log import AuditLog

    root = Path(settings.workspace).expanduser().resolve()
    audit = AuditLog.from_settings(settings, root)
    if audit.index is not None:
        audit.index.reindex()  # catch up first: running records other processes wrote
        running = [row["execution_id"] for row in audit.index.running()]
    else:
        running = [p.stem for p in audit.directory.glob("*.json")]
    for execution_id in running:
        try:
            record = audit.read(execution_id)
        except AuditError as exc:
            report.errors.append(str(exc))
            continue
        reason = _abandon_reason(record, settings, now)
        if reason is None:
            continue
        report.abandoned.append(execution_id)
        if dry_run:
            continue
        started = epoch_of(record.get("started_at") or record.get("timestamp"))
        record.update({
            "status": "abandoned", "success": False,
            "message": f"abandoned: {reason}; marked by scoperun gc (pid {os.getpid()} on {HOST})",
            "finished_at": datetime.fromtimestamp(now, UTC).isoformat(),
            "duration": round(now - started, 3) if started else None,
            "abandoned": {"by": "scoperun gc", "host": HOST, "at": datetime.fromtimestamp(now, UTC).isoformat(),
                          "reason": reason},
        })
        try:
            audit.write(record)
        except AuditError as exc:
            report.errors.append(str(exc))


def _remove_containers(engine: EngineHousekeeping, settings: Settings, report: GcReport, now: float, *,
                       any_workspace: bool, dry_run: bool) -> None:
    abandoned = set(report.abandoned)
    for c in _containers(engine, settings, any_workspace=any_workspace, all_states=True):
        labels = c.labels
        execution_id = _execution_id(c)
        deadline = labels.get("org.scoperun.deadline", "")
        if execution_id in abandoned:
            why = "its run was abandoned"
        elif labels.get(POOL_LABEL) and not _owner_alive(labels[POOL_LABEL]):
            why = "its warm pool's process is gone"
        elif deadline.isdigit() and int(deadline) + settings.gc_grace < now:
            why = "past its deadline"
        elif c.state != "running" and c.created + settings.gc_grace < now:
            why = "ended and left behind"
        else:
            continue
        report.containers_removed.append({"container": c.name, "execution_id": execution_id, "reason": why})
        if dry_run:
            continue
        workspace = labels.get(WORKSPACE_LABEL)
        if workspace and c.state == "running" and execution_id not in abandoned:
            try:  # a live executor, if any, then records why its run ended
                write_stop_marker(Path(workspace) / settings.audit_dir, execution_id,
                                  f"removed by scoperun gc: {why}", by="scoperun gc")
            except OSError:
                pass
        try:
            engine.force_remove_container(c.id)  # False: gone already, fine
        except EngineError as exc:
            report.errors.append(f"cannot remove {c.name}: {exc}")


def _remove_volumes(engine: EngineHousekeeping, settings: Settings, report: GcReport, now: float, *,
                    any_workspace: bool, dry_run: bool) -> None:
    """Remove staging volumes no run can use (its run abandoned, or no container left and stale): the one sweep."""
    sweep = sweep_staging_volumes(settings, engine, now=now, abandoned=report.abandoned,
                                  any_workspace=any_workspace, dry_run=dry_run)
    report.volumes_removed.extend(sweep.removed)
    report.errors.extend(sweep.errors)


def _remove_leftover_services(engine: EngineHousekeeping, *, now: float, dry_run: bool,
                              workspace: str | None) -> list[str]:
    """Remove scoperun services past their deadline label, and the per-run networks (gc on a swarm manager)."""
    removed: list[str] = []
    for svc in engine.services(MANAGED_LABEL):
        if workspace is not None and svc.labels.get(WORKSPACE_LABEL) != workspace:
            continue
        if int(svc.labels.get("org.scoperun.deadline", "0")) > now:
            continue
        removed.append(f"service {svc.name}")
        if not dry_run:
            with contextlib.suppress(EngineError):
                engine.remove_service(svc.id)
    for net in engine.networks(MANAGED_LABEL):
        if net.name.startswith("scoperun-none-") and not dry_run:
            with contextlib.suppress(EngineError):
                if engine.remove_network(net.id):
                    removed.append(f"network {net.name}")
    return removed


def _staging_hook(gc_staging: Callable[..., list[str]], engine: EngineHousekeeping) -> Callable[..., list[str]]:
    """Adapt changes.gc_staging (settings, older_than, engine) to the hook signature; dry runs list nothing."""
    from datetime import timedelta

    def hook(settings: Settings, *, now: float, dry_run: bool) -> list[str]:
        if dry_run:
            return []
        return gc_staging(settings, timedelta(days=settings.staging_retention_days), engine=engine)

    return hook


def _owner_alive(owner: str) -> bool:
    from scoperun.engine.pool import owner_alive

    return owner_alive(owner)


def _pool_slots_hook(settings: Settings, *, now: float, dry_run: bool) -> list[str]:
    """Unmount and remove warm-pool slots whose process died (a crash leaves the case mounted there), and
    the script copies of pre-started containers of such a process."""
    from scoperun.audit.state import state_dir
    from scoperun.engine.pool import clean_leftover_slots
    from scoperun.engine.prestart import clean_leftover_prestart

    if dry_run:
        return []
    pool_dir = state_dir(settings) / "pool"
    return [*(clean_leftover_slots(pool_dir) if os.geteuid() == 0 else []), *clean_leftover_prestart(pool_dir)]


def _run_hooks(settings: Settings, engine: EngineHousekeeping, report: GcReport, now: float, dry_run: bool) -> None:
    hooks = {"pool-slots": _pool_slots_hook, **_GC_HOOKS}
    try:
        import importlib

        changes = importlib.import_module("scoperun.changes")
        staging = getattr(changes, "gc_staging", None)
        if callable(staging):
            hooks.setdefault("staging", _staging_hook(staging, engine))
    except ImportError:
        pass  # no staging module in this build
    for name, hook in hooks.items():
        try:
            report.hooks[name] = list(hook(settings, now=now, dry_run=dry_run))
        except Exception as exc:
            report.errors.append(f"gc hook {name} failed: {exc}")


def collect_garbage(settings: Settings, *, any_workspace: bool = False, dry_run: bool = False,
                    engine: EngineHousekeeping | None = None, now: float | None = None) -> GcReport:
    """Mark dead runs abandoned, remove leftover scoperun containers, then run the gc hooks."""
    now = time.time() if now is None else now
    report = GcReport(dry_run=dry_run)
    _mark_abandoned(settings, report, now, dry_run)
    with _engine_of(settings, engine) as eng:
        try:
            _remove_containers(eng, settings, report, now, any_workspace=any_workspace, dry_run=dry_run)
            _remove_volumes(eng, settings, report, now, any_workspace=any_workspace, dry_run=dry_run)
            if settings.backend == "swarm":
                # docker_host is a manager: leftover run services (their task containers are removed by
                # each node's agent, or by `scoperun gc` run against that node's engine).
                report.hooks["swarm"] = _remove_leftover_services(
                    eng, now=now - settings.gc_grace, dry_run=dry_run,
                    workspace=None if any_workspace else _workspace_label(settings))
        except EngineError as exc:
            report.errors.append(str(exc))
        _run_hooks(settings, eng, report, now, dry_run)
    from scoperun.audit.retention import apply_retention

    try:  # old agent scripts, full outputs and browser artefacts, per the retention settings
        report.hooks["retention"] = apply_retention(settings, now=now, dry_run=dry_run)
    except OSError as exc:
        report.errors.append(f"retention failed: {exc}")
    return report
