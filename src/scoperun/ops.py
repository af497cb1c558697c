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

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from scoperun.audit.state import HOST, epoch_of, stale_run
from scoperun.config import Settings
from scoperun.engine.base import MANAGED_LABEL
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
ID_LABEL = "org.scoperun.execution-id"
WORKSPACE_LABEL = "org.scoperun.workspace"
GcHook = Callable[..., list[str]]  # hook(settings, *, now: float, dry_run: bool) -> leftovers handled
_GC_HOOKS: dict[str, GcHook] = {}


def register_gc_hook(name: str, hook: GcHook) -> None:
    """Have `scoperun gc` call `hook(settings, now=..., dry_run=...)` (e.g. to clean staging leftovers)."""
    _GC_HOOKS[name] = hook


# -- stop markers ---------------------------------------------------------------------------


def write_stop_marker(audit_dir: Path, execution_id: str, reason: str, *, by: str) -> None:
    """Tell the run's executor why its container is about to end (written before the kill)."""
    marker = {"reason": reason, "by": by, "host": HOST, "at": datetime.now(UTC).isoformat()}
    path = Path(audit_dir) / f"{execution_id}.stop"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, path)


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


def _execution_id(container: dict[str, Any]) -> str:
    """The run a container serves: its label, or for a pooled one its name (renamed when it is claimed)."""
    labels = container.get("Labels") or {}
    if labels.get(ID_LABEL):
        return str(labels[ID_LABEL])
    name = (container.get("Names") or [""])[0].lstrip("/")
    return name.removeprefix("scoperun-") if name.startswith("scoperun-exec_") else "?"


def _idle_pooled(container: dict[str, Any]) -> bool:
    return bool((container.get("Labels") or {}).get(POOL_LABEL)) and _execution_id(container) == "?"


def _client(settings: Settings) -> Any:
    from scoperun.engine.docker import connect

    return connect(settings.docker_host, timeout=30)


def _workspace_label(settings: Settings) -> str:
    return str(Path(settings.workspace).expanduser().resolve())


def _containers(api: Any, settings: Settings, *, any_workspace: bool, all_states: bool) -> list[dict[str, Any]]:
    labels = [f"{MANAGED_LABEL}=1"]
    if not any_workspace:
        labels.append(f"{WORKSPACE_LABEL}={_workspace_label(settings)}")
    from docker.errors import DockerException

    try:
        found = api.containers(all=all_states, filters={"label": labels})
    except DockerException as exc:
        raise EngineError(f"cannot list containers ({exc}); check the engine with `scoperun doctor`") from None
    # The engine filtered already; check again so nothing unlabelled is ever touched.
    return [c for c in found if (c.get("Labels") or {}).get(MANAGED_LABEL) == "1"]


def _services(api: Any, settings: Settings, *, any_workspace: bool) -> list[dict[str, Any]]:
    """A swarm manager's run services, shaped like container summaries (Id, Names, Labels)."""
    from docker.errors import DockerException

    try:
        services = api.services(filters={"label": MANAGED_LABEL})
    except DockerException as exc:
        raise EngineError(f"cannot list the swarm's services ({exc}); is docker_host a swarm manager?") from None
    workspace = None if any_workspace else _workspace_label(settings)
    return [{"Id": s["ID"], "Names": [s["Spec"]["Name"]], "Labels": s["Spec"].get("Labels") or {}, "Service": True,
             "State": "running", "Created": _epoch(s.get("CreatedAt", ""))}
            for s in services
            if workspace is None or (s["Spec"].get("Labels") or {}).get(WORKSPACE_LABEL) == workspace]


def _epoch(stamp: str) -> float:
    """Epoch seconds of an engine timestamp (nanoseconds cut to microseconds); now if unreadable."""
    import re

    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp)).timestamp()
    except ValueError:
        return time.time()


def _memory(api: Any, container_id: str) -> int | None:
    try:
        stats = api.stats(container_id, stream=False, one_shot=True)
        mem = stats.get("memory_stats") or {}
        usage = mem.get("usage")
        cache = (mem.get("stats") or {}).get("cache", 0)  # cgroup v1; the CLI shows usage - cache too
        return int(usage - cache) if usage is not None else None
    except Exception:
        return None


def list_runs(settings: Settings, *, any_workspace: bool = False, memory: bool = True,
              client: Any = None) -> list[RunInfo]:
    """scoperun's running containers (this workspace's unless `any_workspace`), oldest first."""
    client = client or _client(settings)
    api = client.api
    now = time.time()
    if settings.backend == "swarm":  # a run in progress is a service; its container is on some node
        found = _services(api, settings, any_workspace=any_workspace)
        memory = False
    else:
        found = [c for c in _containers(api, settings, any_workspace=any_workspace, all_states=False)
                 if not _idle_pooled(c)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        mem = list(pool.map(lambda c: _memory(api, c["Id"]) if memory else None, found))
    runs = []
    for c, used in zip(found, mem, strict=True):
        labels = c.get("Labels") or {}
        deadline = labels.get("org.scoperun.deadline")
        runs.append(RunInfo(
            execution_id=_execution_id(c), case=labels.get("org.scoperun.case", ""), pool=labels.get(POOL_LABEL),
            script=labels.get("org.scoperun.script", ""), workspace=labels.get(WORKSPACE_LABEL, ""),
            container=(c.get("Names") or ["?"])[0].lstrip("/"), state=c.get("State", "?"),
            elapsed=max(0.0, now - float(c.get("Created", now))), memory_bytes=used,
            deadline=float(deadline) if deadline and deadline.isdigit() else None,
        ))
    return sorted(runs, key=lambda r: -r.elapsed)


def list_pool(settings: Settings, *, any_workspace: bool = False, client: Any = None) -> list[RunInfo]:
    """Idle warm containers (serving no run yet), listed apart from runs."""
    api = (client or _client(settings)).api
    now = time.time()
    return [RunInfo(execution_id="(idle)", workspace=(c.get("Labels") or {}).get(WORKSPACE_LABEL, ""),
                    container=(c.get("Names") or ["?"])[0].lstrip("/"), state=c.get("State", "?"),
                    elapsed=max(0.0, now - float(c.get("Created", now))), pool=(c.get("Labels") or {}).get(POOL_LABEL))
            for c in _containers(api, settings, any_workspace=any_workspace, all_states=False) if _idle_pooled(c)]


# -- stop -------------------------------------------------------------------------------------


class StopOutcome(BaseModel):
    """What `stop` did to one run."""

    execution_id: str
    container: str
    stopped: bool
    detail: str = ""


def stop_runs(settings: Settings, execution_ids: list[str] | None, *, reason: str, by: str,
              any_workspace: bool = False, client: Any = None) -> list[StopOutcome]:
    """Kill the containers of the given runs (all of this workspace's when None); the runs end `cancelled`.

    Raises ScopeRunError when an id names no running scoperun container in scope.
    """
    client = client or _client(settings)
    api = client.api
    if settings.backend == "swarm":
        found = _services(api, settings, any_workspace=any_workspace)  # one per run in progress
    else:
        found = [c for c in _containers(api, settings, any_workspace=any_workspace, all_states=False)
                 if not _idle_pooled(c)]
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
    return [_stop_one(api, settings, c, reason=reason, by=by) for c in targets]


def _stop_one(api: Any, settings: Settings, container: dict[str, Any], *, reason: str, by: str) -> StopOutcome:
    from docker.errors import DockerException, NotFound

    labels = container.get("Labels") or {}
    execution_id = _execution_id(container)
    name = (container.get("Names") or ["?"])[0].lstrip("/")
    detail = ""
    workspace = labels.get(WORKSPACE_LABEL)
    if workspace:
        try:
            write_stop_marker(Path(workspace) / settings.audit_dir, execution_id, reason, by=by)
        except OSError as exc:
            detail = f"stop marker not written ({exc.strerror}); the record will not say why it ended. "
    try:
        if container.get("Service"):
            from scoperun.engine.swarmops import stop_service

            stop_service(api, execution_id)
        else:
            api.kill(container["Id"])
    except NotFound:
        return StopOutcome(execution_id=execution_id, container=name, stopped=False, detail=detail + "already gone")
    except DockerException as exc:
        return StopOutcome(execution_id=execution_id, container=name, stopped=False, detail=detail + str(exc))
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


def _remove_containers(api: Any, settings: Settings, report: GcReport, now: float, *,
                       any_workspace: bool, dry_run: bool) -> None:
    from docker.errors import DockerException, NotFound

    abandoned = set(report.abandoned)
    for c in _containers(api, settings, any_workspace=any_workspace, all_states=True):
        labels = c.get("Labels") or {}
        execution_id = _execution_id(c)
        deadline = labels.get("org.scoperun.deadline", "")
        created = float(c.get("Created", now))
        if execution_id in abandoned:
            why = "its run was abandoned"
        elif labels.get(POOL_LABEL) and not _owner_alive(labels[POOL_LABEL]):
            why = "its warm pool's process is gone"
        elif deadline.isdigit() and int(deadline) + settings.gc_grace < now:
            why = "past its deadline"
        elif c.get("State") != "running" and created + settings.gc_grace < now:
            why = "ended and left behind"
        else:
            continue
        name = (c.get("Names") or ["?"])[0].lstrip("/")
        report.containers_removed.append({"container": name, "execution_id": execution_id, "reason": why})
        if dry_run:
            continue
        workspace = labels.get(WORKSPACE_LABEL)
        if workspace and c.get("State") == "running" and execution_id not in abandoned:
            try:  # a live executor, if any, then records why its run ended
                write_stop_marker(Path(workspace) / settings.audit_dir, execution_id,
                                  f"removed by scoperun gc: {why}", by="scoperun gc")
            except OSError:
                pass
        try:
            api.remove_container(c["Id"], force=True, v=True)
        except NotFound:
            pass
        except DockerException as exc:
            report.errors.append(f"cannot remove {name}: {exc}")


def _remove_volumes(api: Any, settings: Settings, report: GcReport, now: float, *,
                    any_workspace: bool, dry_run: bool) -> None:
    """Remove staging volumes whose run is abandoned, or has no container and is older than the grace."""
    from docker.errors import APIError, DockerException, NotFound

    labels = [f"{MANAGED_LABEL}=1"]
    if not any_workspace:
        labels.append(f"{WORKSPACE_LABEL}={_workspace_label(settings)}")
    try:
        volumes = api.volumes(filters={"label": labels}).get("Volumes") or []
    except DockerException as exc:
        raise EngineError(f"cannot list volumes ({exc}); check the engine with `scoperun doctor`") from None
    live = {(c.get("Labels") or {}).get(ID_LABEL) for c in _containers(api, settings, any_workspace=True,
                                                                         all_states=True)}
    abandoned = set(report.abandoned)
    for volume in volumes:
        labels_of = volume.get("Labels") or {}
        if labels_of.get(MANAGED_LABEL) != "1":
            continue  # never anything scoperun did not make
        execution_id = labels_of.get(ID_LABEL)
        created = epoch_of(volume.get("CreatedAt"))
        stale = execution_id not in live and created is not None and created + settings.gc_grace < now
        if execution_id not in abandoned and not stale:
            continue  # a run may be between creating its volume and its container
        report.volumes_removed.append(volume["Name"])
        if dry_run:
            continue
        try:
            api.remove_volume(volume["Name"])
        except NotFound:
            pass
        except APIError as exc:  # still in use: a later gc will get it
            report.errors.append(f"cannot remove volume {volume['Name']}: {exc}")


def _staging_hook(gc_staging: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """Adapt changes.gc_staging (settings, older_than) to the hook signature; dry runs list nothing."""
    from datetime import timedelta

    def hook(settings: Settings, *, now: float, dry_run: bool) -> list[str]:
        if dry_run:
            return []
        return gc_staging(settings, timedelta(days=settings.staging_retention_days))

    return hook


def _owner_alive(owner: str) -> bool:
    from scoperun.engine.pool import owner_alive

    return owner_alive(owner)


def _pool_slots_hook(settings: Settings, *, now: float, dry_run: bool) -> list[str]:
    """Unmount and remove warm-pool slots whose process died (a crash leaves the case mounted there)."""
    from scoperun.audit.state import state_dir
    from scoperun.engine.pool import clean_leftover_slots

    return [] if dry_run or os.geteuid() != 0 else clean_leftover_slots(state_dir(settings) / "pool")


def _run_hooks(settings: Settings, report: GcReport, now: float, dry_run: bool) -> None:
    hooks = {"pool-slots": _pool_slots_hook, **_GC_HOOKS}
    try:
        import importlib

        changes = importlib.import_module("scoperun.changes")
        staging = getattr(changes, "gc_staging", None)
        if callable(staging):
            hooks.setdefault("staging", _staging_hook(staging))
    except ImportError:
        pass  # no staging module in this build
    for name, hook in hooks.items():
        try:
            report.hooks[name] = list(hook(settings, now=now, dry_run=dry_run))
        except Exception as exc:
            report.errors.append(f"gc hook {name} failed: {exc}")


def collect_garbage(settings: Settings, *, any_workspace: bool = False, dry_run: bool = False,
                    client: Any = None, now: float | None = None) -> GcReport:
    """Mark dead runs abandoned, remove leftover scoperun containers, then run the gc hooks."""
    now = time.time() if now is None else now
    report = GcReport(dry_run=dry_run)
    _mark_abandoned(settings, report, now, dry_run)
    try:
        api = (client or _client(settings)).api
        _remove_containers(api, settings, report, now, any_workspace=any_workspace, dry_run=dry_run)
        _remove_volumes(api, settings, report, now, any_workspace=any_workspace, dry_run=dry_run)
        if settings.backend == "swarm":
            # docker_host is a manager: leftover run services (their task containers are removed by
            # each node's agent, or by `scoperun gc` run against that node's engine).
            from scoperun.engine.swarmops import remove_leftover_services

            report.hooks["swarm"] = remove_leftover_services(
                client or _client(settings), now=now - settings.gc_grace, dry_run=dry_run,
                workspace=None if any_workspace else _workspace_label(settings))
    except EngineError as exc:
        report.errors.append(str(exc))
    _run_hooks(settings, report, now, dry_run)
    from scoperun.audit.retention import apply_retention

    try:  # old agent scripts, full outputs and browser artefacts, per the retention settings
        report.hooks["retention"] = apply_retention(settings, now=now, dry_run=dry_run)
    except OSError as exc:
        report.errors.append(f"retention failed: {exc}")
    return report
