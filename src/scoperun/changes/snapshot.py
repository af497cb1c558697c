"""lstat listings of a case (symlinks recorded, never followed) and the diff of two listings.

Direct runs write in place, so their change set is the difference between a listing taken before
and one taken after the run. A listing is cheap (one lstat per entry, no reads); contents are
hashed only for paths that changed, and only after the run (the "before" hash of a file a direct
run overwrote is gone, so it is left unknown).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from scoperun.changes.safefs import CaseRoot
from scoperun.changeset import Change, ChangeAction, EntryType, StatKey, encode_name
from scoperun.fswalk import WalkEntry, WalkReport, walk

__all__ = ["Entry", "Listing", "diff_listings", "entry_from_stat", "scan"]


class Entry(NamedTuple):
    """One path of a listing (a named tuple: a listing makes one per path, and a tuple is made fast)."""

    type: EntryType
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    nlink: int
    mode: int  # permission bits only
    target: bytes | None = None  # symlinks

    @property
    def key(self) -> StatKey:
        """(type, size, mtime_ns): what apply compares to tell whether a path changed since."""
        return (self.type, self.size, self.mtime_ns)


Listing = dict[bytes, Entry]  # case-relative bytes path -> entry


def type_of(mode: int) -> EntryType:
    """file, dir, symlink or other for an st_mode."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def entry_from_stat(st: os.stat_result, target: bytes | None = None) -> Entry:
    """An Entry from an lstat result."""
    return Entry(type_of(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink,
                 stat.S_IMODE(st.st_mode), target)


def scan(root: Path, report: WalkReport | None = None, *, deadline: float | None = None,
         visit: Callable[[WalkEntry, WalkReport], None] | None = None) -> Listing:
    """Every path below `root` (not `root` itself), by lstat; symlinks are listed, not entered.

    The walk goes by directory descriptors (no recursion, no long paths); entries it could not
    read are noted in `report` (a listing with problems is incomplete). `visit(entry, report)`
    sees every entry of the walk too (another reader of the same walk, e.g. the hazard scan).
    """
    listing: Listing = {}
    report = report if report is not None else WalkReport()
    for e in walk(os.fspath(root), report, deadline=deadline):
        if visit is not None:
            visit(e, report)
        target = None
        if stat.S_ISLNK(e.st.st_mode):
            try:
                target = e.readlink()
            except FileNotFoundError:
                continue  # e.g. a temporary link of a concurrent apply, already renamed
        listing[e.rel] = entry_from_stat(e.st, target)
    return listing


def make_change(rel: bytes, action: ChangeAction, type_: EntryType, **fields: object) -> Change:
    """A Change for bytes path `rel`, encoding names and symlink targets for the boundary."""
    path, path_b64 = encode_name(rel)
    for key in ("target", "target_before"):
        raw = fields.get(key)
        if isinstance(raw, bytes):
            text, b64 = encode_name(raw)
            fields[key] = text
            if key == "target":
                fields["target_b64"] = b64
    return Change(path=path, path_b64=path_b64, action=action, type=type_, **fields)  # type: ignore[arg-type]


def _content_changed(a: Entry, b: Entry) -> bool:
    if a.type == "symlink":
        return a.target != b.target
    # ctime also moves on a rewrite that restored the mtime; chmod and link-count changes move it too.
    return a.size != b.size or a.mtime_ns != b.mtime_ns or a.ino != b.ino or (
        a.ctime_ns != b.ctime_ns and a.mode == b.mode and a.nlink == b.nlink)


def diff_listings(before: Listing, after: Listing, root: CaseRoot) -> list[Change]:
    """The change set between two listings of the same case (direct mode)."""
    changes: list[Change] = []
    added_by_ino: dict[int, Change] = {}
    deleted_by_ino: dict[int, Change] = {}

    def added(rel: bytes, e: Entry) -> None:
        fields: dict[str, object] = {"mode_after": e.mode, "start": None}
        if e.type == "file":
            fields.update(size_after=e.size, sha256_after=root.sha256(rel))
        elif e.type == "symlink":
            fields["target"] = e.target
        change = make_change(rel, ChangeAction.ADDED, e.type, **fields)
        if e.type == "file":
            first = added_by_ino.setdefault(e.ino, change)
            if first is not change:
                change.hardlink_to = first.path
        changes.append(change)

    def deleted(rel: bytes, e: Entry) -> None:
        change = make_change(rel, ChangeAction.DELETED, e.type, mode_before=e.mode, start=e.key,
                             size_before=e.size if e.type == "file" else None,
                             target_before=e.target if e.type == "symlink" else None)
        if e.type == "file":
            deleted_by_ino[e.ino] = change
        changes.append(change)

    for rel, b in before.items():
        a = after.get(rel)
        if a is None:
            deleted(rel, b)
        elif a.type != b.type:
            deleted(rel, b)
            added(rel, a)
        elif a.type != "dir" and _content_changed(b, a):
            fields: dict[str, object] = {"mode_before": b.mode, "mode_after": a.mode, "start": b.key}
            if a.type == "file":
                fields.update(size_before=b.size, size_after=a.size, sha256_after=root.sha256(rel))
            else:
                fields.update(target=a.target, target_before=b.target)
            changes.append(make_change(rel, ChangeAction.MODIFIED, a.type, **fields))
        elif a.mode != b.mode and a.type != "symlink":
            changes.append(make_change(rel, ChangeAction.MODE_CHANGED, a.type, mode_before=b.mode,
                                       mode_after=a.mode, start=b.key))
    for rel, a in after.items():
        if rel not in before:
            added(rel, a)
    # In place, a rename keeps the inode: pair a deleted and an added file that share one.
    for ino, gone in deleted_by_ino.items():
        new = added_by_ino.get(ino)
        if new is not None and new.hardlink_to is None and new.size_after == gone.size_before:
            new.renamed_from = gone.path
    return changes
