"""Writes and uploads into a case: staged as a change set exactly like a staged run's, never written in place.

A write gets an execution id and an audit record (written before anything is staged), its bytes
go to a staging folder's upper layer, the change set is read back from there by the same code a
staged run uses, and the apply policy decides: applied through the journal (undo with
`scoperun rollback <id>`) or kept for review (`scoperun changes|apply|discard <id>`).
No container is needed: nothing is executed.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoperun.audit.log import AuditLog, record_from_result
from scoperun.changes.overlay import StagingArea, read_upper
from scoperun.changes.safefs import CHUNK, CaseRoot, copy_fd
from scoperun.changes.snapshot import Listing, entry_from_stat
from scoperun.changes.store import StagingState, change_lock, now, save_state, staging_root
from scoperun.changeset import ChangeSet, ChangeSetStatus, compute_totals, summarize
from scoperun.config import parse_memory
from scoperun.errors import FileAccessError, ScopeError, ScopeRunError
from scoperun.files.models import WriteResult
from scoperun.fswalk import remove_tree
from scoperun.models import Durations, ExecutionResult, Status

if TYPE_CHECKING:
    from scoperun.files.common import CaseAccess
    from scoperun.scope import Workspace

__all__ = ["WRITE_SCRIPT", "upload_file", "write_file"]

WRITE_SCRIPT = "scoperun:files.write"  # the audit record's script_path of a write


def write_file(files: CaseAccess, case: str, path: str, data: bytes, *, requested_by: str | None = None) -> WriteResult:
    """Stage `data` as the new content of `path` in the case, then apply it as the policy says."""
    def fill(fd: int) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:CHUNK]):]

    return _write(files, case, path, len(data), fill, "write", requested_by)


def upload_file(files: CaseAccess, case: str, path: str, source: Path, *,
                requested_by: str | None = None) -> WriteResult:
    """Stage a local file's bytes as `path` in the case (a symlink or special file as source is refused)."""
    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileAccessError(f"rejected (upload-source): cannot open {str(source)!r} ({exc.strerror}); give a "
                              f"regular file", rule="upload-source", value=str(source)) from None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise FileAccessError(f"rejected (upload-source): {str(source)!r} is not a regular file",
                                  rule="upload-source", value=str(source))
        return _write(files, case, path, st.st_size, lambda fd: copy_fd(src, fd) and None, "upload", requested_by)
    finally:
        os.close(src)


def _write(files: CaseAccess, case: str, path: str, size: int, fill: Callable[[int], None], action: str,
           requested_by: str | None) -> WriteResult:
    from scoperun.audit.access import who
    from scoperun.executor import new_execution_id

    settings = files.settings
    with files._audited(action, case, path, requested_by) as ws:
        rel = files._rel(path)
        shown = files._show(rel)
        if not rel:
            raise FileAccessError("rejected (not-a-file): name the file to write inside the case", rule="not-a-file",
                                  value=shown)
        limit = parse_memory(settings.max_file_size)
        if size > limit:
            raise FileAccessError(f"rejected (too-large): {size:,} bytes is more than the {limit:,} bytes a file may "
                                  f"have (max_file_size)", rule="too-large", value=shown)
        case_dir = ws.case_dir(case)
        with CaseRoot(case_dir) as root:
            listing = _check_target(files, root, rel, shown)
        execution_id = new_execution_id()
        by = who(requested_by)
        audit = AuditLog.from_settings(settings, ws.root)
        started, t0 = datetime.now(UTC), time.monotonic()

        def record(status: Status, message: str, cs: ChangeSet | None, events: list[dict[str, Any]] | None = None) -> None:
            result = ExecutionResult(
                execution_id=execution_id, status=status, exit_code=0 if status is Status.SUCCEEDED else None,
                message=files.redactor.redact(message), script=WRITE_SCRIPT, case=case, args=[shown],
                started_at=started, finished_at=datetime.now(UTC) if status is not Status.RUNNING else started,
                durations=Durations(total=time.monotonic() - t0), write_mode="staged", changes=cs, requested_by=by,
                audit_record=str(Path(settings.audit_dir) / f"{execution_id}.json"))
            data = record_from_result(result, script_sha256=None, env_names=[])
            if events:
                data["events"] = events
            audit.write(data)

        record(Status.RUNNING, f"{action} of {shown}: staging", None)  # AuditError here: nothing is staged
        try:
            cs, events, digest = _stage(files, ws, case, case_dir, rel, listing, fill, execution_id, by)
        except BaseException as exc:
            record(Status.ERROR, f"{action} of {shown} failed: {exc}", None)
            raise
        record(Status.SUCCEEDED, f"{action} of {shown}: {cs.summary}; {cs.note}",
               cs.capped(settings.changes_record_cap), events)
        files.forget_case_stats(case)
        files._event(ws, action, case, shown, requested_by, nbytes=size, sha256=digest, execution_id=execution_id,
                     change_status=cs.status.value)
        return WriteResult(case=case, path=shown, bytes=size, sha256=digest or "", execution_id=execution_id,
                           change_set=cs)


def _check_target(files: CaseAccess, root: CaseRoot, rel: bytes, shown: str) -> Listing:
    """The case's entries on the way to `rel` (the staged change set's 'before'); links and specials refused."""
    listing: Listing = {}
    parts = rel.split(b"/")
    for i in range(1, len(parts) + 1):
        prefix = b"/".join(parts[:i])
        st = root.lstat(prefix)
        if st is None:
            break
        last = i == len(parts)
        if stat.S_ISLNK(st.st_mode):
            raise ScopeError(f"rejected (symlink): {files._show(prefix)!r} is a symlink; scoperun never writes "
                             f"through links", rule="symlink", value=shown)
        if not last and not stat.S_ISDIR(st.st_mode):
            raise FileAccessError(f"rejected (not-a-folder): {files._show(prefix)!r} is not a folder",
                                  rule="not-a-folder", value=shown)
        if last and not stat.S_ISREG(st.st_mode):
            raise FileAccessError(f"rejected (special-file): {shown!r} exists and is not a regular file; only "
                                  f"regular files are replaced", rule="special-file", value=shown)
        listing[prefix] = entry_from_stat(st)
    return listing


def _stage(files: CaseAccess, ws: Workspace, case: str, case_dir: Path, rel: bytes, listing: Listing,
           fill: Callable[[int], None], execution_id: str, by: str) -> tuple[ChangeSet, list[dict[str, Any]], str | None]:
    settings = files.settings
    uid_s, _, gid_s = settings.container_user.partition(":")
    uid, gid = int(uid_s), int(gid_s or uid_s)
    area = StagingArea.create(staging_root(settings), execution_id, case_dir, uid=uid, gid=gid)
    as_root = os.geteuid() == 0
    try:
        upper = os.fsencode(area.upper)
        parts = rel.split(b"/")
        for i in range(1, len(parts)):
            prefix = b"/".join(parts[:i])
            target = upper + b"/" + prefix
            lower = listing.get(prefix)
            os.mkdir(target, 0o700)
            os.chmod(target, lower.mode if lower is not None else 0o755)  # same mode: not reported as a change
            if as_root:
                os.chown(target, uid, gid)  # owned like a run's writes, so later runs can change them
        old = listing.get(rel)
        fd = os.open(upper + b"/" + rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fill(fd)
            os.fchmod(fd, (old.mode if old is not None else 0o644) & 0o777)
            if as_root:
                os.fchown(fd, uid, gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        state = StagingState(execution_id=execution_id, case=case, case_dir=str(case_dir), workspace=str(ws.root),
                             uid=uid, gid=gid, phase="running", created_at=now(), updated_at=now())
        cs = ChangeSet(execution_id=execution_id, case=case, mode="staged", status=ChangeSetStatus.STAGED)
        with CaseRoot(case_dir) as root:
            cs.entries, _, _ = read_upper(area.upper, listing, root)
        cs.totals = compute_totals(cs.entries)
        cs.summary = summarize(cs.totals)
        digest = next((c.sha256_after for c in cs.entries if c.raw_path == rel), None) or (
            old is not None and _sha_of(case_dir, rel)) or None
        if not cs.entries:
            cs.status, cs.note = ChangeSetStatus.EMPTY, "the file already has this content; nothing changed"
            remove_tree(area.root, ignore_errors=True)
            return cs, [], digest
        state.phase, state.change_set = cs.status.value, cs
        save_state(area, state)
    except BaseException:
        remove_tree(area.root, ignore_errors=True)
        raise
    events: list[dict[str, Any]] = []
    if settings.apply_policy == "never":
        cs.note = (f"kept for review (apply policy is never); the case is unchanged. See `scoperun changes "
                   f"{execution_id}`, then `scoperun apply {execution_id}` or `scoperun discard {execution_id}`")
        save_state(area, state)
        return cs, events, digest
    from scoperun.changes.apply import apply_staged

    try:
        with change_lock(settings, execution_id):
            cs, events = apply_staged(settings, area, state, trail=None, by=by)
    except (OSError, ScopeRunError) as exc:
        cs.note = f"not applied: {exc}"
    return cs, events, digest


def _sha_of(case_dir: Path, rel: bytes) -> str | None:
    with CaseRoot(case_dir) as root:
        return root.sha256(rel)
