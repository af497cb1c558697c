"""The one collector of staging volumes: the overlay volumes of staged runs that no run can use any more.

`scoperun gc` (with the runs it just marked abandoned) and `scoperun changes gc` both sweep through it.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from scoperun.changes.store import staging_root
from scoperun.config import Settings
from scoperun.engine.base import (
    EXECUTION_ID_LABEL,
    MANAGED_LABEL,
    STAGING_UPPER_LABEL,
    WORKSPACE_LABEL,
    EngineHousekeeping,
    VolumeInfo,
)
from scoperun.errors import EngineError

__all__ = ["VolumeSweep", "sweep_staging_volumes", "workspace_label"]


@dataclass
class VolumeSweep:
    """What a sweep removed (on a dry run: would remove) and what the engine refused."""

    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def workspace_label(settings: Settings) -> str:
    """The value of the workspace label on this workspace's containers and volumes (its resolved path)."""
    return str(Path(settings.workspace).expanduser().resolve())


def sweep_staging_volumes(settings: Settings, engine: EngineHousekeeping, *, now: float | None = None,
                          abandoned: Collection[str] = (), any_workspace: bool = False,
                          dry_run: bool = False) -> VolumeSweep:
    """Remove scoperun's staging volumes no run can still use (this workspace's unless `any_workspace`).

    A volume goes when its run was abandoned, or when no container of its run is left and either its
    staging folder is gone or it is older than gc's grace. EngineError if the engine cannot list them.
    """
    now = time.time() if now is None else now
    live = {c.labels.get(EXECUTION_ID_LABEL) for c in engine.containers(f"{MANAGED_LABEL}=1", all_states=True)}
    sweep = VolumeSweep()
    for volume in engine.volumes(f"{MANAGED_LABEL}=1"):
        if volume.labels.get(MANAGED_LABEL) != "1":
            continue  # never anything scoperun did not make
        mine, folder_gone = _belongs(settings, volume)
        if not (any_workspace or mine):
            continue
        execution_id = volume.labels.get(EXECUTION_ID_LABEL)
        old = volume.created is not None and volume.created + settings.gc_grace < now
        if execution_id not in abandoned and (execution_id in live or not (folder_gone or old)):
            continue  # a run may be between creating its volume and its container
        sweep.removed.append(volume.name)
        if dry_run:
            continue
        try:
            if engine.remove_volume(volume.name) == "in use":
                sweep.errors.append(f"cannot remove volume {volume.name}: a container still uses it "
                                    f"(a later gc will get it)")
        except EngineError as exc:
            sweep.errors.append(f"cannot remove volume {volume.name}: {exc}")
    return sweep


def _belongs(settings: Settings, volume: VolumeInfo) -> tuple[bool, bool]:
    """(whether the volume is this workspace's, whether its staging folder under this staging root is gone)."""
    upper = volume.labels.get(STAGING_UPPER_LABEL, "")
    # Only folders under this staging root are judged here: another workspace's may live on another host.
    under_root = bool(upper) and Path(upper).parent.parent == staging_root(settings)
    mine = under_root or volume.labels.get(WORKSPACE_LABEL) == workspace_label(settings)
    return mine, under_root and not Path(upper).parent.exists()
