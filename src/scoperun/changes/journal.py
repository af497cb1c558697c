"""The journal of an applied change set, in the workspace, and rollback from it.

`Database/journal/<execution_id>/` holds `manifest.json` and `pre/<n>`: a copy of every file the
apply overwrote or deleted, saved *before* the apply touched the case. It lives in the workspace
(the bucket in production) so an undo survives the loss of the VM. For every path the manifest
keeps its state before (`pre`) and the state the apply leaves (`post`); rollback refuses when a
path is in neither state (someone changed it since), unless forced, and then it first moves the
newer content to `displaced/<n>` so nothing is lost.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from scoperun.changes.safefs import CaseRoot, copy_fd, hash_fd, sync_fs
from scoperun.changes.snapshot import type_of
from scoperun.changeset import ChangeSet, EntryType, decode_name, encode_name
from scoperun.errors import ChangedSinceError, ChangesError

__all__ = ["JournalPath", "Manifest", "PathState", "capture", "changed_since", "load_manifest", "observe",
           "restore_all", "write_manifest"]


class PathState(BaseModel):
    """One path's state: absent (type None), a file (with content hash), a folder or a symlink."""

    type: EntryType | None = None
    size: int | None = None
    mtime_ns: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    sha256: str | None = None
    target: str | None = None
    target_b64: str | None = None
    blob: str | None = None  # pre-image copy, relative to the journal folder

    @property
    def raw_target(self) -> bytes | None:
        return None if self.target is None else decode_name(self.target, self.target_b64)


class JournalPath(BaseModel):
    """A path the apply touched: how it was before and how the apply left it."""

    path: str
    path_b64: str | None = None
    pre: PathState
    post: PathState

    @property
    def raw_path(self) -> bytes:
        return decode_name(self.path, self.path_b64)


class Manifest(BaseModel):
    """`manifest.json` of a journal."""

    execution_id: str
    case: str
    state: Literal["applying", "applied", "rolled_back"]
    created_at: datetime
    updated_at: datetime
    change_set: ChangeSet
    paths: list[JournalPath]
    displaced: list[str] = []


def observe(case: CaseRoot, rel: bytes, *, sha256: str | None = None, hash_file: bool = False) -> PathState:
    """The current state of `rel` in the case (hashing a file only when asked)."""
    st = case.lstat(rel)
    if st is None:
        return PathState()
    state = PathState(type=type_of(st.st_mode), size=st.st_size, mtime_ns=st.st_mtime_ns,
                      mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, sha256=sha256)
    if state.type == "symlink":
        state.target, state.target_b64 = encode_name(case.readlink(rel))
    elif state.type == "file" and hash_file and sha256 is None:
        state.sha256 = case.sha256(rel)
    return state


def capture(case: CaseRoot, rel: bytes, journal: Path, blob_name: str, *, durable: bool = True,
            pre_fd: int | None = None) -> PathState:
    """Save the pre-image of `rel` (a file: a hard link, else a copy) into the journal; return its state.

    A hard link costs no copy: the apply replaces or removes the case's name, never writes into
    the inode, so the journal's link keeps the pre-image (checked by sha256 on restore). Where
    the journal is on another filesystem or links are refused, the file is copied. `durable=False`
    skips the per-copy fsync: the caller syncs the journal once (`sync_fs`). `pre_fd`: the open
    `pre/` folder of the journal (made if None).
    """
    state = observe(case, rel)
    if state.type != "file":
        return state
    own_fd = pre_fd is None
    if pre_fd is None:
        (journal / "pre").mkdir(exist_ok=True)
        pre_fd = os.open(journal / "pre", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with case.parent(rel) as (dfd, name):
            try:
                os.link(name, blob_name, src_dir_fd=dfd, dst_dir_fd=pre_fd, follow_symlinks=False)
                linked = True
            except OSError:
                linked = False
        if linked:
            fd = os.open(blob_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pre_fd)
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
                    state.sha256, state.size = hash_fd(fd)
                    state.blob = f"pre/{blob_name}"
                    return state
            finally:
                os.close(fd)
            os.unlink(blob_name, dir_fd=pre_fd)  # not the file observed (swapped meanwhile): copy instead
        with case.open_read(rel) as src:
            dst = os.open(blob_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=pre_fd)
            try:
                state.sha256, state.size = copy_fd(src, dst)
                if durable:
                    os.fsync(dst)
            finally:
                os.close(dst)
        state.blob = f"pre/{blob_name}"
        return state
    finally:
        if own_fd:
            os.close(pre_fd)


def write_manifest(journal: Path, manifest: Manifest) -> None:
    """Write the manifest atomically (a later run's rollback depends on it)."""
    from scoperun.changes.store import now, write_json_atomic

    manifest.updated_at = now()
    write_json_atomic(journal / "manifest.json", manifest)


def load_manifest(journal: Path) -> Manifest | None:
    """The manifest in `journal`, or None when there is none."""
    try:
        fd = os.open(journal / "manifest.json", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            return Manifest.model_validate_json(fh.read())
        except ValueError as exc:
            raise ChangesError(f"the journal manifest {journal}/manifest.json is damaged ({exc}); its pre-images "
                               f"are in {journal}/pre") from None


def _matches(case: CaseRoot, rel: bytes, want: PathState, now: PathState) -> bool:
    if want.type != now.type:
        return False
    if now.type == "file":
        if want.size == now.size and want.mtime_ns is not None and want.mtime_ns == now.mtime_ns:
            return True
        return want.sha256 is not None and case.sha256(rel) == want.sha256
    if now.type == "symlink":
        return want.target == now.target and want.target_b64 == now.target_b64
    return True


def changed_since(case: CaseRoot, manifest: Manifest) -> list[str]:
    """Paths that are neither as the apply left them nor as they were before it."""
    changed = []
    for jp in manifest.paths:
        rel = jp.raw_path
        now = observe(case, rel)
        if not (_matches(case, rel, jp.post, now) or _matches(case, rel, jp.pre, now)):
            changed.append(jp.path)
    return changed


def _displace(case: CaseRoot, rel: bytes, journal: Path, index: int) -> str | None:
    # Forced rollback: keep the newer content a person or a later run wrote.
    st = case.lstat(rel)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    (journal / "displaced").mkdir(exist_ok=True)
    name = f"displaced/{index:06d}"
    with case.open_read(rel) as src:
        dst = os.open(journal / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            copy_fd(src, dst)
            os.fsync(dst)
        finally:
            os.close(dst)
    return name


def _remove(case: CaseRoot, rel: bytes) -> bool:
    st = case.lstat(rel)
    if st is None:
        return True
    if stat.S_ISDIR(st.st_mode):
        try:
            case.rmdir(rel)
        except OSError:
            return False  # not empty: something was added since; it stays
        return True
    case.unlink(rel)
    return True


def restore(case: CaseRoot, jp: JournalPath, journal: Path) -> bool:
    """Put `jp` back to its pre-image; False when a folder could not be removed (not empty)."""
    rel, pre = jp.raw_path, jp.pre
    now = observe(case, rel)
    if pre.type is None:
        return _remove(case, rel)
    if pre.type == "dir":
        if now.type not in (None, "dir") and not _remove(case, rel):
            return False
        case.mkdir(rel, mode=pre.mode if pre.mode is not None else 0o755, uid=pre.uid, gid=pre.gid)
        return True
    if now.type == "dir" and not _remove(case, rel):
        return False
    if pre.type == "symlink":
        case.symlink(rel, pre.raw_target or b"", uid=pre.uid, gid=pre.gid)
    elif pre.type == "file" and pre.blob:
        if _matches(case, rel, pre, now):
            if now.mode != pre.mode and pre.mode is not None:
                case.chmod(rel, pre.mode)
            return True
        fd = os.open(journal / pre.blob, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            digest, _ = hash_fd(fd)
            if digest != pre.sha256:
                raise ChangesError(f"the journal's copy of {jp.path} ({journal / pre.blob}) does not match its "
                                   f"recorded sha256; it was damaged. The case file was left as it is.")
            mode = pre.mode if pre.mode is not None else 0o644
            # The journal is done with this pre-image once it is back: link it rather than copy it.
            if not case.link_in(rel, journal / pre.blob, mode=mode, uid=pre.uid, gid=pre.gid, mtime_ns=pre.mtime_ns):
                os.lseek(fd, 0, os.SEEK_SET)
                case.write_file(rel, fd, mode=mode, uid=pre.uid, gid=pre.gid, mtime_ns=pre.mtime_ns,
                                durable=False)  # restore_all syncs once at the end
        finally:
            os.close(fd)
    return True


def restore_all(case: CaseRoot, manifest: Manifest, journal: Path, *, force: bool,
                execution_id: str) -> tuple[list[str], list[str]]:
    """Roll the case back to every pre-image; return (paths left as they were, displaced copies)."""
    changed = changed_since(case, manifest)
    if changed and not force:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise ChangedSinceError(
            f"rollback of {execution_id} refused: {len(changed)} path(s) changed since the apply: {shown}. "
            f"Look at them first; `scoperun rollback {execution_id} --force` restores anyway and keeps the newer "
            f"files in the journal's displaced/ folder.", execution_id=execution_id, paths=changed)
    changed_set = set(changed)
    kept: list[str] = []
    displaced: list[str] = []
    for i, jp in enumerate(reversed(manifest.paths)):
        if jp.path in changed_set:
            name = _displace(case, jp.raw_path, journal, i)
            if name:
                displaced.append(f"{jp.path} -> {name}")
        if not restore(case, jp, journal):
            kept.append(jp.path)
    sync_fs(case.fd)  # every restored file on disk before the manifest says rolled back
    return kept, displaced
