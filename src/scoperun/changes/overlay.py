"""Staged runs: the overlay a run writes into, and the change set read back from its upper layer.

Layout of one run's staging folder, `<staging_dir>/<execution_id>/`:

    lower  -> the case folder (a symlink, so no case name ever needs escaping in mount options)
    upper/    what the run wrote: new and changed files, whiteouts, opaque folders
    work/     the overlay's scratch folder (same filesystem as upper)
    state.json

The upper layer speaks overlayfs: a 0:0 character device is a whiteout (the path was deleted),
a folder with `trusted.overlay.opaque=y` hides everything the case had below it (it was deleted
and re-created). The mount turns `redirect_dir`, `metacopy` and `index` off so the upper layer
always holds whole files and renaming a pre-existing folder falls back to copy + delete (EXDEV),
as `mv` and `shutil.move` do.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from scoperun.changes.safefs import CaseRoot, hash_fd
from scoperun.changes.snapshot import Entry, Listing, entry_from_stat, make_change
from scoperun.changeset import Change, ChangeAction
from scoperun.errors import ChangesError
from scoperun.fswalk import WalkEntry, WalkReport, open_dir_at, walk
from scoperun.mounts import mount_table

__all__ = ["OVERLAY_OPTIONS", "StagingArea", "read_upper"]

OVERLAY_OPTIONS = "redirect_dir=off,metacopy=off,index=off"
_OPAQUE = "trusted.overlay.opaque"
_UNSAFE_IN_OPTIONS = set(",:\\\n= ")
_ESCAPED_IN_OPTIONS = frozenset(b", \t\n\\")


@dataclass(frozen=True)
class StagingArea:
    """The staging folder of one run."""

    root: Path

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def lower(self) -> Path:
        return self.root / "lower"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @classmethod
    def create(cls, staging_dir: Path, execution_id: str, case_dir: Path, *, uid: int, gid: int) -> StagingArea:
        """Make the staging folders; upper belongs to the container user so the run can write."""
        base = Path(os.path.abspath(staging_dir))
        if _UNSAFE_IN_OPTIONS & set(str(base)):
            raise ChangesError(f"staging_dir {base} contains a character overlay mount options cannot carry "
                               f"(one of , : \\ = space); choose a plain path such as /var/lib/scoperun/staging")
        area = cls(base / execution_id)
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            area.root.mkdir(mode=0o700)
            area.upper.mkdir(mode=0o700)
            area.work.mkdir(mode=0o700)
            os.symlink(case_dir, area.lower)
            case_mode = stat.S_IMODE(os.stat(case_dir).st_mode)
            if os.geteuid() == 0:
                os.chown(area.upper, uid, gid)
            # The merged root takes upper's mode: show the case's own mode, writable by its owner.
            os.chmod(area.upper, case_mode | stat.S_IRWXU)
        except OSError as exc:
            raise ChangesError(f"cannot prepare the staging folder {area.root} ({exc.strerror or exc}). Make "
                               f"staging_dir a writable folder on a local disk, or use write_mode=direct.") from None
        return area

    def volume_options(self) -> dict[str, str]:
        """driver_opts of the engine's local volume driver for this overlay."""
        return {"type": "overlay", "device": "overlay",
                "o": f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work},{OVERLAY_OPTIONS}"}

    def is_mounted(self) -> bool:
        """True while an overlay with this upper layer is mounted (in our mount namespace)."""
        try:
            with open("/proc/self/mounts", "rb") as fh:
                table = fh.read()
        except OSError:  # no procfs here: psutil finds the table where it can
            needle = f"upperdir={self.upper},"
            return any(needle in m.options + "," for m in mount_table() or ())
        # The kernel shows option values with , space tab newline and backslash as octal escapes.
        shown = b"upperdir=" + b"".join(b"\\%03o" % c if c in _ESCAPED_IN_OPTIONS else bytes([c])
                                        for c in os.fsencode(self.upper))
        return shown + b"," in table or shown + b" " in table


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(dir_fd: int, name: bytes) -> bool:
    fd = open_dir_at(dir_fd, name)
    try:
        return os.getxattr(fd, _OPAQUE) == b"y"
    except OSError as exc:
        if exc.errno == 1 or exc.errno == 13:  # EPERM/EACCES: trusted.* needs CAP_SYS_ADMIN
            raise ChangesError("reading a staged run's overlay needs root (trusted.overlay.* attributes); "
                               "run scoperun as root on the Docker host") from None
        return False
    finally:
        os.close(fd)


class _UpperReader:
    """Turns an upper layer plus the case's listing at the start into a list of changes.

    The upper layer is walked by directory descriptors (`fswalk.walk`): no recursion, no path
    longer than one name, so a hostile run's PATH_MAX-deep tree is read like any other.
    """

    def __init__(self, upper: Path, start: Listing, case: CaseRoot) -> None:
        self.upper = os.fsencode(upper)
        self.start = start
        self.case = case
        self.changes: list[Change] = []
        self.whiteouts = 0
        self.opaque_dirs = 0
        self.walk = WalkReport()
        self.children: dict[bytes, list[bytes]] = defaultdict(list)
        for rel in start:
            parent, _, _ = rel.rpartition(b"/")
            self.children[parent].append(rel)
        self._links: dict[int, Change] = {}
        self.limit: int | None = None
        self.deadline: float | None = None

    def run(self) -> list[Change]:
        seen: set[bytes] = set()
        hidden: set[bytes] = set()  # folders of upper below which the case's old entries are hidden
        for e in walk(self.upper, self.walk, sort=True, limit=self.limit, deadline=self.deadline):
            rel, st = e.rel, e.st
            seen.add(rel)
            parent_hidden = rel.rpartition(b"/")[0] in hidden
            lower = self.start.get(rel)
            if _is_whiteout(st):
                self.whiteouts += 1
                if lower is not None:
                    self.deleted(rel, lower)
            elif stat.S_ISDIR(st.st_mode):
                opaque = _is_opaque(e.dir_fd, e.name)
                self.opaque_dirs += opaque
                if lower is not None and lower.type == "dir":
                    if stat.S_IMODE(st.st_mode) != lower.mode:
                        self.changes.append(make_change(rel, ChangeAction.MODE_CHANGED, "dir", mode_before=lower.mode,
                                                        mode_after=stat.S_IMODE(st.st_mode), start=lower.key))
                    if parent_hidden or opaque:
                        hidden.add(rel)
                else:
                    if lower is not None:
                        self.deleted(rel, lower)
                    self.changes.append(make_change(rel, ChangeAction.ADDED, "dir", mode_after=stat.S_IMODE(st.st_mode),
                                                    start=None))
                    hidden.add(rel)
            else:
                self.entry(e, entry_from_stat(st, e.readlink() if stat.S_ISLNK(st.st_mode) else None), lower)
        # Below an opaque (or re-created) folder the case's old entries are hidden: what upper lacks is gone.
        for rel_dir in sorted(hidden):
            for rel in self.children.get(rel_dir, ()):
                if rel not in seen:
                    self.deleted(rel, self.start[rel])
        self._pair_renames()
        return self.changes

    def entry(self, e: WalkEntry, new: Entry, lower: Entry | None) -> None:
        rel = e.rel
        if lower is not None and lower.type == new.type == "file":
            after = self._hash_upper(e)
            before = self.case.sha256(rel)
            if after != before or new.size != lower.size:
                self.changes.append(make_change(
                    rel, ChangeAction.MODIFIED, "file", size_before=lower.size, size_after=new.size,
                    sha256_before=before, sha256_after=after, mode_before=lower.mode, mode_after=new.mode,
                    start=lower.key))
                self._link(rel, new)
            elif new.mode != lower.mode:
                self.changes.append(make_change(rel, ChangeAction.MODE_CHANGED, "file", mode_before=lower.mode,
                                                mode_after=new.mode, size_before=lower.size, size_after=new.size,
                                                sha256_before=before, sha256_after=after, start=lower.key))
            return  # copied up but unchanged (opened for writing, touched): nothing to apply
        if lower is not None and lower.type == new.type == "symlink":
            if new.target != lower.target:
                self.changes.append(make_change(rel, ChangeAction.MODIFIED, "symlink", target=new.target,
                                                target_before=lower.target, start=lower.key))
            return
        if lower is not None:
            self.deleted(rel, lower)
        fields: dict[str, object] = {"mode_after": new.mode, "start": None}
        if new.type == "file":
            fields.update(size_after=new.size, sha256_after=self._hash_upper(e))
        elif new.type == "symlink":
            fields["target"] = new.target
        change = make_change(rel, ChangeAction.ADDED, new.type, **fields)
        self.changes.append(change)
        if new.type == "file":
            self._link(rel, new, change)

    def deleted(self, rel: bytes, lower: Entry) -> None:
        # Post-order without recursion: a folder's entries are deleted before the folder.
        stack: list[tuple[bytes, bool]] = [(rel, False)]
        while stack:
            path, expanded = stack.pop()
            entry = self.start[path] if path != rel else lower
            if entry.type == "dir" and not expanded:
                stack.append((path, True))
                stack.extend((child, False) for child in reversed(self.children.get(path, ())))
                continue
            fields: dict[str, object] = {"mode_before": entry.mode, "start": entry.key}
            if entry.type == "file":
                fields.update(size_before=entry.size, sha256_before=self.case.sha256(path))
            elif entry.type == "symlink":
                fields["target_before"] = entry.target
            self.changes.append(make_change(path, ChangeAction.DELETED, entry.type, **fields))

    def _hash_upper(self, e: WalkEntry) -> str:
        fd = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=e.dir_fd)
        try:
            return hash_fd(fd)[0]
        finally:
            os.close(fd)

    def _link(self, rel: bytes, new: Entry, change: Change | None = None) -> None:
        # Files of the upper layer sharing an inode are hard links the run made.
        if new.nlink < 2:
            return
        first = self._links.setdefault(new.ino, change or self.changes[-1])
        if change is not None and first is not change:
            change.hardlink_to = first.path

    def _pair_renames(self) -> None:
        # Overlay records a rename as delete + add: pair them by content.
        gone = {c.sha256_before: c for c in self.changes
                if c.action is ChangeAction.DELETED and c.type == "file" and c.sha256_before and c.size_before}
        for c in self.changes:
            if c.action is ChangeAction.ADDED and c.type == "file" and c.sha256_after in gone and not c.hardlink_to:
                c.renamed_from = gone.pop(c.sha256_after).path


def read_upper(upper: Path, start: Listing, case: CaseRoot, report: WalkReport | None = None, *,
               limit: int | None = None, deadline: float | None = None) -> tuple[list[Change], int, int]:
    """The changes a staged run made: (changes, whiteouts, opaque folders).

    What the walk of upper could not read (too deep, unreadable, past `limit` entries or the
    `deadline`) goes to `report`; a change set read with problems is incomplete: never apply it.
    """
    reader = _UpperReader(upper, start, case)
    reader.limit, reader.deadline = limit, deadline
    if report is not None:
        reader.walk = report
    return reader.run(), reader.whiteouts, reader.opaque_dirs
