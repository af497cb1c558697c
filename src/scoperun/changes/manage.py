"""Rollback, inspection (with text diffs) and clean-up of staging leftovers."""

from __future__ import annotations

import difflib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from scoperun.changes.apply import journal_dir
from scoperun.changes.journal import load_manifest, restore_all, write_manifest
from scoperun.changes.overlay import StagingArea
from scoperun.changes.safefs import CaseRoot
from scoperun.changes.store import (
    AuditTrail,
    case_lock,
    change_lock,
    load_state,
    now,
    record_event,
    save_state,
    staging_root,
    workspace_trail,
)
from scoperun.changeset import Change, ChangeAction, ChangeSet, ChangeSetStatus
from scoperun.config import Settings
from scoperun.errors import AuditError, ChangesError
from scoperun.fswalk import display_path, remove_tree

if TYPE_CHECKING:
    from scoperun.engine.base import EngineHousekeeping
from scoperun.scope import Workspace

__all__ = ["gc_staging", "load_change_set", "rollback_changes", "text_diffs"]

_FINISHED = {s.value for s in (ChangeSetStatus.APPLIED, ChangeSetStatus.DISCARDED, ChangeSetStatus.ROLLED_BACK,
                               ChangeSetStatus.EMPTY, ChangeSetStatus.RECORDED)}


def rollback_changes(settings: Settings, execution_id: str, *, force: bool = False, by: str | None = None,
                     trail: AuditTrail | None = None) -> ChangeSet:
    """Restore every pre-image of an applied run and remove what it added, byte for byte.

    Raises ChangedSinceError (naming the paths) when the case changed since the apply and
    `force` is False.
    """
    with change_lock(settings, execution_id):
        ws = Workspace.from_settings(settings)
        journal = journal_dir(settings, ws.root, execution_id)
        manifest = load_manifest(journal)
        if manifest is None:
            raise ChangesError(f"run {execution_id} has no journal in {journal.parent}: its changes were never "
                               f"applied by scoperun (direct runs have no undo)", execution_id=execution_id)
        if manifest.state == "rolled_back":
            raise ChangesError(f"run {execution_id} was already rolled back", execution_id=execution_id)
        case_dir = ws.case_dir(manifest.case)
        with case_lock(settings, case_dir), CaseRoot(case_dir) as case:
            kept, displaced = restore_all(case, manifest, journal, force=force, execution_id=execution_id)
        cs = manifest.change_set
        cs.status = ChangeSetStatus.ROLLED_BACK
        cs.note = "rolled back: the case holds its pre-images again" + (
            f"; folders left because they are not empty: {', '.join(kept[:10])}" if kept else "") + (
            f"; newer files kept in {journal.relative_to(ws.root)}/displaced" if displaced else "")
        manifest.state, manifest.displaced, manifest.change_set = "rolled_back", displaced, cs
        write_manifest(journal, manifest)
        loaded = load_state(settings, execution_id)
        if loaded is not None and loaded[1].change_set is not None:
            area, state = loaded
            state.phase, state.change_set = cs.status.value, cs
            save_state(area, state)
        record_event(trail or workspace_trail(settings, ws.root), settings, execution_id, "rolled_back",
                     change_set=cs, detail=cs.note, by=by, forced=force, displaced=displaced)
        return cs


def load_change_set(settings: Settings, execution_id: str, *,
                    trail: AuditTrail | None = None) -> tuple[ChangeSet, str]:
    """A run's change set and where it came from: `staging`, `journal` or `audit` (capped)."""
    loaded = load_state(settings, execution_id)
    if loaded is not None and loaded[1].change_set is not None:
        return loaded[1].change_set, "staging"
    ws = Workspace.from_settings(settings)
    manifest = load_manifest(journal_dir(settings, ws.root, execution_id))
    if manifest is not None:
        return manifest.change_set, "journal"
    try:
        record = (trail or workspace_trail(settings, ws.root)).view(execution_id)
    except AuditError as exc:
        raise ChangesError(str(exc), execution_id=execution_id) from None
    if not record.get("changes"):
        raise ChangesError(f"run {execution_id} has no change set (read-only, rejected, or still running)",
                           execution_id=execution_id)
    return ChangeSet.model_validate(record["changes"]), "audit"


def _read_small(fd: int, limit: int) -> bytes | None:
    data = os.read(fd, limit + 1)
    return None if len(data) > limit else data


def _sides(settings: Settings, ws: Workspace, cs: ChangeSet, c: Change, limit: int) -> tuple[bytes | None, bytes | None]:
    """(before, after) contents of a changed file, when still available and small."""
    rel = c.raw_path
    before = after = None
    area = StagingArea(staging_root(settings) / cs.execution_id)
    journal = journal_dir(settings, ws.root, cs.execution_id)
    manifest = load_manifest(journal) if cs.status is not ChangeSetStatus.STAGED else None
    with CaseRoot(ws.case_dir(cs.case)) as case:
        if c.action is not ChangeAction.ADDED:
            pre = next((jp.pre for jp in manifest.paths if jp.raw_path == rel), None) if manifest else None
            if pre is not None and pre.blob:
                fd = os.open(journal / pre.blob, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    before = _read_small(fd, limit)
                finally:
                    os.close(fd)
            elif cs.status in (ChangeSetStatus.STAGED, ChangeSetStatus.CONFLICT) and case.sha256(rel) == c.sha256_before:
                with case.open_read(rel) as fd:
                    before = _read_small(fd, limit)
        if c.action is not ChangeAction.DELETED:
            staged = os.fsencode(area.upper) + b"/" + rel
            if cs.status is not ChangeSetStatus.APPLIED and os.path.isfile(staged) and not os.path.islink(staged):
                fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    after = _read_small(fd, limit)
                finally:
                    os.close(fd)
            elif case.sha256(rel) == c.sha256_after:
                with case.open_read(rel) as fd:
                    after = _read_small(fd, limit)
    return before, after


def text_diffs(settings: Settings, cs: ChangeSet, *, limit: int = 64 * 1024, max_files: int = 20) -> list[str]:
    """Unified diffs of the change set's small UTF-8 text files whose contents are still available."""
    ws = Workspace.from_settings(settings)
    diffs: list[str] = []
    for c in cs.entries:
        if c.type != "file" or c.action is ChangeAction.MODE_CHANGED or len(diffs) >= max_files:
            continue
        try:
            before, after = _sides(settings, ws, cs, c, limit)
        except (OSError, ChangesError):
            continue
        if (before is None and c.action is not ChangeAction.ADDED) or (after is None and c.action is not
                                                                         ChangeAction.DELETED):
            continue
        try:
            a = (before or b"").decode("utf-8").splitlines(keepends=True)
            b = (after or b"").decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            continue  # binary: the hashes say enough
        name = display_path(c.path)  # a header line: a newline or ESC in a name must not make its own line
        diffs.append("".join(difflib.unified_diff(a, b, f"a/{name}" if before is not None else "/dev/null",
                                                  f"b/{name}" if after is not None else "/dev/null")))
    return [d for d in diffs if d]


def gc_staging(settings: Settings, older_than: timedelta, *, engine: EngineHousekeeping | None = None) -> list[str]:
    """Remove staging folders of runs applied, discarded, rolled back or abandoned longer ago than `older_than`.

    Change sets still waiting for review (`staged`, `conflict`) and overlays still mounted are
    kept. Staging volumes an engine failure left behind are removed too, when the engine answers.
    Returns the execution ids whose staging folder was removed.
    """
    root = staging_root(settings)
    if not root.is_dir():
        return []
    cutoff = now() - older_than
    removed: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        area = StagingArea(entry)
        try:
            loaded = load_state(settings, entry.name)
        except ChangesError:
            loaded = None
        if loaded is not None:
            phase, updated = loaded[1].phase, loaded[1].updated_at
        else:  # no readable state: a run that died before writing one
            phase, updated = "running", _mtime(entry)
        if updated > cutoff or phase not in _FINISHED | {"running"} or area.is_mounted():
            continue
        with change_lock(settings, entry.name):
            remove_tree(entry, ignore_errors=True)
        (root / ".locks" / f"{entry.name}.lock").unlink(missing_ok=True)
        if not entry.exists():
            removed.append(entry.name)
    _remove_stale_volumes(settings, engine)
    return removed


def _remove_stale_volumes(settings: Settings, engine: EngineHousekeeping | None = None) -> None:
    """Sweep staging volumes no run can use any more (best effort; in-use ones stay for a later gc)."""
    from scoperun.changes.volumes import sweep_staging_volumes
    from scoperun.errors import EngineError

    backend = None
    try:
        if engine is None:
            from scoperun.engine.docker import DockerBackend

            engine = backend = DockerBackend(settings.docker_host, remove_in_background=False, timeout=30)
        sweep_staging_volumes(settings, engine)
    except (ImportError, EngineError):
        pass
    finally:
        if backend is not None:
            backend.close()


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
