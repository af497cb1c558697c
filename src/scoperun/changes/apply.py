"""Applying a staged change set to its case, discarding it, and telling conflicts apart.

Apply runs in three steps: (1) every path it would touch is compared with the case as it was
when the run started; any difference (a later run or a person changed it) keeps the change set
staged as a `conflict`, nothing touched; (2) the pre-image of every touched path is saved in the
journal and the manifest written; (3) deletions (deepest first), then folders, files, symlinks
and mode changes (shallowest first), then hard links. Files go to a temporary name in their folder
and are renamed over the target. If a step fails, what was done is rolled back from the journal.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scoperun.changes.journal import (
    JournalPath,
    Manifest,
    PathState,
    capture,
    load_manifest,
    observe,
    restore_all,
    write_manifest,
)
from scoperun.changes.overlay import StagingArea
from scoperun.changes.safefs import CaseRoot, sync_fs
from scoperun.changes.store import (
    AuditTrail,
    StagingState,
    case_lock,
    change_lock,
    load_state,
    now,
    record_event,
    save_state,
    workspace_trail,
)
from scoperun.changeset import Change, ChangeAction, ChangeSet, ChangeSetStatus, decode_name
from scoperun.config import Settings
from scoperun.errors import ChangesError, ScopeRunError
from scoperun.fswalk import remove_tree
from scoperun.scope import Workspace

__all__ = ["apply_changes", "apply_staged", "discard_changes", "find_conflicts", "journal_dir", "plan"]


def journal_dir(settings: Settings, workspace_root: Path, execution_id: str) -> Path:
    """The journal folder of a run in the workspace."""
    return workspace_root / settings.journal_dir / execution_id


def _depth(c: Change) -> int:
    return c.raw_path.count(b"/")


def plan(entries: list[Change]) -> list[Change]:
    """The order to apply entries in: deletions deepest first, then the rest shallowest first, links last."""
    deletions = sorted((c for c in entries if c.action is ChangeAction.DELETED), key=lambda c: -_depth(c))
    rest = [c for c in entries if c.action is not ChangeAction.DELETED]
    links = [c for c in rest if c.hardlink_to]
    return deletions + sorted((c for c in rest if not c.hardlink_to), key=_depth) + links


def find_conflicts(case: CaseRoot, entries: list[Change]) -> list[str]:
    """Paths the change set would touch that changed in the case since the run started."""
    by_path: dict[bytes, list[Change]] = {}
    for c in entries:
        by_path.setdefault(c.raw_path, []).append(c)
    added_dirs = {p for p, cs in by_path.items() if any(c.action is ChangeAction.ADDED and c.type == "dir" for c in cs)}
    children: dict[bytes, set[bytes]] = {}
    for p in by_path:
        children.setdefault(p.rpartition(b"/")[0], set()).add(p)
    conflicts: list[str] = []
    for rel, changes in by_path.items():
        start = next((c.start for c in changes if c.start is not None), None)
        st = case.lstat(rel)  # ScopeError when the way there passes through a symlink
        shown = changes[0].path
        if start is None:
            if st is not None and not (rel in added_dirs and stat.S_ISDIR(st.st_mode)):
                conflicts.append(shown)  # created in the case meanwhile
        elif st is None:
            conflicts.append(shown)
        else:
            kind = observe(case, rel).type
            if kind != start[0] or (kind != "dir" and (st.st_size, st.st_mtime_ns) != (start[1], start[2])):
                conflicts.append(shown)
            elif kind == "dir" and any(c.action is ChangeAction.DELETED for c in changes):
                expected = children.get(rel, set())
                if any(rel + b"/" + name not in expected for name in case.listdir(rel)):
                    conflicts.append(shown)  # something was added to a folder the run removed
        parent = rel.rpartition(b"/")[0]
        if parent and parent not in added_dirs:
            pst = case.lstat(parent)
            if pst is None or not stat.S_ISDIR(pst.st_mode):
                conflicts.append(shown)
    return sorted(set(conflicts))


def _planned_post(changes: list[Change], pre: PathState) -> PathState:
    last = changes[-1]
    if last.action is ChangeAction.DELETED:
        return PathState()
    if last.action is ChangeAction.MODE_CHANGED:
        return pre.model_copy(update={"mode": last.mode_after, "blob": None})
    return PathState(type=last.type, size=last.size_after, mode=last.mode_after, sha256=last.sha256_after,
                     target=last.target, target_b64=last.target_b64)


_NO_SETID = ~(stat.S_ISUID | stat.S_ISGID)  # a run's setuid/setgid bits never reach the case


def _apply_one(case: CaseRoot, upper: CaseRoot, c: Change, by_path: dict[str, Change]) -> str | None:
    rel = c.raw_path
    if c.action is ChangeAction.DELETED:
        case.rmdir(rel) if c.type == "dir" else case.unlink(rel)
        return None
    if c.action is ChangeAction.MODE_CHANGED:
        case.chmod(rel, (c.mode_after if c.mode_after is not None else 0o644) & (_NO_SETID if c.type == "file" else ~0))
        return None
    st = upper.lstat(rel)  # the staged copy, reached one folder at a time (no path longer than a name)
    if st is None:
        raise ChangesError(f"the staged copy of {c.path} is gone from staging; nothing of it was applied")
    if c.type == "dir":
        case.mkdir(rel, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
    elif c.type == "symlink":
        case.symlink(rel, c.raw_target or b"", uid=st.st_uid, gid=st.st_gid)
    elif c.type == "file":
        first = by_path.get(c.hardlink_to) if c.hardlink_to else None
        if first is not None and case.hardlink(rel, first.raw_path):
            return c.sha256_after
        with upper.open_read(rel) as fd:
            digest, _ = case.write_file(rel, fd, mode=stat.S_IMODE(st.st_mode) & _NO_SETID, uid=st.st_uid,
                                        gid=st.st_gid, mtime_ns=st.st_mtime_ns, durable=False)
        if digest != c.sha256_after:
            raise ChangesError(f"the staged copy of {c.path} changed after the run ended; nothing of it was trusted")
        return digest
    return None  # fifos, sockets, devices: recorded, never created in a case


def apply_staged(settings: Settings, area: StagingArea, state: StagingState, *, trail: AuditTrail | None,
                 force: bool = False, by: str | None = None) -> tuple[ChangeSet, list[dict[str, Any]]]:
    """Apply a loaded staged change set (caller holds the lock); return it and the events made.

    The events go to `trail`; with None (a run applying its own changes before its record is
    finished) they are only returned, for the record.
    """
    cs = state.change_set
    if cs is None:
        raise ChangesError(f"run {state.execution_id} has no change set yet", execution_id=state.execution_id)
    ws = Workspace.from_settings(settings)
    if str(ws.root) != state.workspace:
        raise ChangesError(f"run {state.execution_id} belongs to workspace {state.workspace}, not {ws.root}; pass "
                           f"--workspace {state.workspace}", execution_id=state.execution_id)
    case_dir = ws.case_dir(state.case)
    if str(case_dir) != state.case_dir:
        raise ChangesError(f"case {state.case} now resolves to {case_dir}, not {state.case_dir}; refusing to apply",
                           execution_id=state.execution_id)
    events: list[dict[str, Any]] = []

    def event(name: str, detail: str, **data: object) -> None:
        if trail is not None:
            events.append(record_event(trail, settings, state.execution_id, name, change_set=cs, detail=detail,
                                       by=by, **data))
        else:
            events.append({"at": now().isoformat(), "event": name, "by": by or "scoperun", "detail": detail, **data})

    if not cs.complete and not force:
        raise ChangesError(f"run {state.execution_id}'s change set is incomplete (the host could not read all of "
                           f"it: {cs.note}); `scoperun apply {state.execution_id} --force` applies what was read, "
                           f"or `scoperun discard {state.execution_id}`", execution_id=state.execution_id)
    journal = journal_dir(settings, ws.root, state.execution_id)
    with case_lock(settings, case_dir), CaseRoot(case_dir) as case:
        conflicts = find_conflicts(case, cs.entries)
        if conflicts and not force:
            return _conflict(area, state, cs, conflicts, event), events
        order = plan(cs.entries)
        by_path = {c.path: c for c in cs.entries}
        touched: dict[bytes, list[Change]] = {}
        for c in order:
            touched.setdefault(c.raw_path, []).append(c)
        old = load_manifest(journal)
        if old is not None and old.state != "rolled_back":
            raise ChangesError(f"run {state.execution_id} already has a journal in state {old.state} ({journal})",
                               execution_id=state.execution_id)
        if old is not None:
            remove_tree(journal)
        journal.mkdir(parents=True)
        paths: list[JournalPath] = []
        mismatched: list[str] = []
        (journal / "pre").mkdir()
        pre_fd = os.open(journal / "pre", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            pres = [capture(case, rel, journal, f"{i:06d}", durable=case.on_fuse, pre_fd=pre_fd)
                    for i, rel in enumerate(touched)]
        finally:
            os.close(pre_fd)
        for pre, changes in zip(pres, touched.values(), strict=True):
            before = next((c.sha256_before for c in changes if c.sha256_before), None)
            if before and pre.type == "file" and pre.sha256 != before and not force:
                mismatched.append(changes[0].path)
            paths.append(JournalPath(path=changes[0].path, path_b64=changes[0].path_b64, pre=pre,
                                     post=_planned_post(changes, pre)))
        if mismatched:
            remove_tree(journal)
            return _conflict(area, state, cs, mismatched, event), events
        manifest = Manifest(execution_id=state.execution_id, case=state.case, state="applying", created_at=now(),
                            updated_at=now(), change_set=cs.model_copy(), paths=paths)
        _sync_folder(journal)  # every pre-image on disk before the manifest names them (one syncfs, not N fsyncs)
        write_manifest(journal, manifest)
        digests: dict[bytes, str | None] = {}
        try:
            with CaseRoot(area.upper) as upper:
                for c in order:
                    digests[c.raw_path] = _apply_one(case, upper, c, by_path) or digests.get(c.raw_path)
            sync_fs(case.fd)  # the applied files on disk before the manifest says applied
        except (OSError, ScopeRunError) as exc:
            restore_all(case, manifest, journal, force=True, execution_id=state.execution_id)
            manifest.state = "rolled_back"
            write_manifest(journal, manifest)
            cs.status, cs.note = ChangeSetStatus.STAGED, f"apply failed ({exc}); the case was restored and the " \
                                                         f"changes are still staged"
            state.phase = cs.status.value
            save_state(area, state)
            event("apply_failed", cs.note)
            raise ChangesError(f"applying {state.execution_id} failed ({exc}); the case was restored from the "
                               f"journal and the changes are still staged", execution_id=state.execution_id) from exc
        for jp in paths:
            rel = jp.raw_path
            jp.post = observe(case, rel, sha256=digests.get(rel) or jp.post.sha256)
        cs.status, cs.conflicts = ChangeSetStatus.APPLIED, []
        cs.journal = str(journal.relative_to(ws.root))
        cs.note = f"applied; undo with `scoperun rollback {state.execution_id}`"
        manifest.state, manifest.change_set = "applied", cs.model_copy()
        write_manifest(journal, manifest)
    state.phase = cs.status.value
    save_state(area, state)
    event("applied", cs.summary + (" (forced over conflicts)" if force and conflicts else ""), files=len(paths))
    return cs, events


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sync_fs(fd)
    finally:
        os.close(fd)


def _conflict(area: StagingArea, state: StagingState, cs: ChangeSet, conflicts: list[str],
              event: Callable[..., None]) -> ChangeSet:
    cs.status, cs.conflicts = ChangeSetStatus.CONFLICT, conflicts
    shown = ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
    cs.note = (f"not applied: {len(conflicts)} path(s) changed in the case since the run started ({shown}). Both "
               f"sides are kept: see `scoperun changes {state.execution_id}`, then `scoperun apply "
               f"{state.execution_id} --force` (the journal keeps the case's versions) or `scoperun discard`.")
    state.phase = cs.status.value
    save_state(area, state)
    event("conflict", cs.note, paths=conflicts[:50])
    return cs


def _load_pending(settings: Settings, execution_id: str) -> tuple[StagingArea, StagingState, ChangeSet]:
    loaded = load_state(settings, execution_id)
    if loaded is None:
        raise ChangesError(f"run {execution_id} has no staged changes here (never staged, cleaned by gc, or staged "
                           f"on another machine); `scoperun changes {execution_id}` shows what is known",
                           execution_id=execution_id)
    area, state = loaded
    cs = state.change_set
    if state.phase == "running" or cs is None:
        raise ChangesError(f"run {execution_id} is still running (or was interrupted); wait for it to end",
                           execution_id=execution_id)
    if cs.status not in (ChangeSetStatus.STAGED, ChangeSetStatus.CONFLICT):
        raise ChangesError(f"run {execution_id}'s changes are {cs.status.value}; only staged or conflicting changes "
                           f"can be applied or discarded", execution_id=execution_id)
    return area, state, cs


def apply_changes(settings: Settings, execution_id: str, *, force: bool = False, by: str | None = None,
                  trail: AuditTrail | None = None) -> ChangeSet:
    """Apply a run's staged changes; a conflict is returned (status `conflict`), not raised.

    Events go to `trail` (default: the workspace's audit log).
    """
    with change_lock(settings, execution_id):
        area, state, _ = _load_pending(settings, execution_id)
        trail = trail or workspace_trail(settings, Path(state.workspace))
        return apply_staged(settings, area, state, trail=trail, force=force, by=by)[0]


def discard_changes(settings: Settings, execution_id: str, *, by: str | None = None,
                    trail: AuditTrail | None = None) -> ChangeSet:
    """Mark a run's staged changes discarded (the case is untouched; gc removes the files later)."""
    with change_lock(settings, execution_id):
        area, state, cs = _load_pending(settings, execution_id)
        cs.status, cs.note = ChangeSetStatus.DISCARDED, "discarded; the case was never changed"
        state.phase = cs.status.value
        save_state(area, state)
        record_event(trail or workspace_trail(settings, Path(state.workspace)), settings, execution_id, "discarded",
                     change_set=cs, detail=cs.summary, by=by)
        return cs


def decode_path(c: Change) -> bytes:
    """The exact bytes of a change's path (helper for callers outside the package)."""
    return decode_name(c.path, c.path_b64)
