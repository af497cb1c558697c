"""The one way host code walks a folder a run could write: by directory descriptors, never
following a symlink, never recursing on the call stack.

Each folder is opened with `openat(parent, name, O_NOFOLLOW|O_DIRECTORY)` from its parent's
descriptor, so no path longer than one name is ever handed to the kernel (a tree deeper than
PATH_MAX is walked like any other) and a folder swapped for a symlink mid-walk is refused. One
descriptor per level is held open; past `max_depth` levels a folder is reported and skipped.
An entry that cannot be read is reported in `WalkReport.problems` and the walk goes on.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["MAX_DEPTH", "WalkEntry", "WalkReport", "display_path", "open_dir_at", "remove_tree", "walk"]

MAX_DEPTH = 1000  # levels below the root; real case folders are a few dozen deep
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_PROBLEMS = 50  # problems kept with detail; all are counted
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class WalkEntry(NamedTuple):
    """One entry: its path relative to the root, its lstat, and where it lives (valid while yielded).

    A named tuple: a walk makes one per entry, and a tuple is made several times faster than a
    frozen dataclass.
    """

    rel: bytes
    st: os.stat_result
    dir_fd: int  # descriptor of the folder holding it; closed once the walk leaves that folder
    name: bytes
    depth: int  # 1 for the root's own entries

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    def readlink(self) -> bytes:
        """The symlink's target (never followed)."""
        return os.readlink(self.name, dir_fd=self.dir_fd)


@dataclass
class WalkReport:
    """What a walk could not see: `problems` (path, why), counted in full, kept up to a cap."""

    problems: list[tuple[bytes, str]] = field(default_factory=list)
    count: int = 0
    entries: int = 0

    def add(self, rel: bytes, why: str) -> None:
        """Note one entry or folder that was skipped."""
        self.count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append((rel, why))

    @property
    def complete(self) -> bool:
        """True when every entry below the root was seen."""
        return self.count == 0


_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")


def display_path(raw: bytes | str) -> str:
    """A printable, JSON-safe form of a file name: undecodable bytes and controls escaped."""
    data = os.fsencode(raw)
    if _PRINTABLE_ASCII.fullmatch(data):  # the common case, checked in C: nothing to escape
        return data.decode("ascii")
    text = data.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def open_dir_at(dir_fd: int, name: bytes) -> int:
    """Open folder `name` of `dir_fd` without following a symlink (OSError otherwise)."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _ensure_descriptors(needed: int) -> None:
    # A deep tree holds one descriptor per level; lift the soft limit toward the hard one if low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name}: {exc.strerror or exc}"


def walk(root: bytes | str | int, report: WalkReport | None = None, *, max_depth: int = MAX_DEPTH,
         limit: int | None = None, sort: bool = False, deadline: float | None = None) -> Iterator[WalkEntry]:
    """Yield every entry below `root` (a path or an open folder descriptor), parents before children.

    A folder is entered after all entries of its parent were yielded. The caller must not keep
    `dir_fd` beyond the step it got it in. Problems go to `report`; the walk never raises for one
    entry. `limit` stops after that many entries and `deadline` (time.monotonic) at that time,
    both noted in `report`.
    """
    report = report if report is not None else WalkReport()
    _ensure_descriptors(max_depth + 256)
    if isinstance(root, int):
        top = os.dup(root)
    else:
        top = os.open(os.fsencode(root), _DIR_FLAGS)
    # Each frame: (folder descriptor, its relative path, depth, the subfolders left to enter).
    frames: list[tuple[int, bytes, int, list[bytes]]] = []
    pending: tuple[int, bytes, int] | None = (top, b"", 0)
    try:
        while pending is not None or frames:
            if pending is not None:
                fd, rel_dir, depth = pending
                pending = None
                subdirs: list[bytes] = []
                frames.append((fd, rel_dir, depth, subdirs))
                try:
                    with os.scandir(fd) as it:
                        # A descriptor's scandir names are str: encoded as os.fsencode does, without its checks.
                        names = [de.name.encode(_FS_ENCODING, _FS_ERRORS) for de in it]
                except OSError as exc:
                    report.add(rel_dir, f"folder not listed ({_why(exc)})")
                    names = []
                if sort:
                    names.sort()
                for name in names:
                    if limit is not None and report.entries >= limit:
                        report.add(rel_dir, f"walk stopped after {limit} entries")
                        return
                    if deadline is not None and report.entries % 256 == 0 and time.monotonic() > deadline:
                        report.add(rel_dir, f"walk stopped: time budget spent after {report.entries} entries")
                        return
                    rel = rel_dir + b"/" + name if rel_dir else name
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we listed (a concurrent apply's temporary file)
                    except OSError as exc:
                        report.add(rel, f"not examined ({_why(exc)})")
                        continue
                    report.entries += 1
                    yield WalkEntry(rel, st, fd, name, depth + 1)
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append(name)
                subdirs.reverse()  # entered in listing order
            fd, rel_dir, depth, subdirs = frames[-1]
            if not subdirs:
                os.close(fd)
                frames.pop()
                continue
            name = subdirs.pop()
            rel = rel_dir + b"/" + name if rel_dir else name
            if depth + 1 >= max_depth:
                report.add(rel, f"deeper than {max_depth} levels; not entered")
                continue
            try:
                child = open_dir_at(fd, name)
            except FileNotFoundError:
                continue
            except OSError as exc:  # swapped for a symlink (ELOOP/ENOTDIR), unreadable, out of descriptors
                report.add(rel, f"folder not entered ({_why(exc)})")
                continue
            pending = (child, rel, depth + 1)
    finally:
        if pending is not None:
            os.close(pending[0])
        for fd, *_ in frames:
            os.close(fd)


def remove_tree(path: bytes | str | os.PathLike[str], *, ignore_errors: bool = False) -> None:
    """Remove `path` and all below it: by descriptors, no recursion, no symlink followed (missing is fine).

    What a run leaves can be thousands of folders deep; `shutil.rmtree` recurses on the call
    stack (RecursionError) and joins paths past PATH_MAX.
    """
    full = os.path.abspath(os.fsencode(path))
    parent, name = os.path.split(full)
    try:
        top = os.open(parent, _DIR_FLAGS)
    except FileNotFoundError:
        return
    frames: list[tuple[int, bytes, int]] = []  # (parent descriptor, name in it, own descriptor)
    try:
        try:
            st = os.stat(name, dir_fd=top, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=top)
            return
        _ensure_descriptors(MAX_DEPTH * 4)
        frames.append((top, name, open_dir_at(top, name)))
        while frames:
            parent_fd, own_name, fd = frames[-1]
            sub = None
            with os.scandir(fd) as it:
                for de in it:
                    if de.is_dir(follow_symlinks=False):
                        sub = os.fsencode(de.name)
                        break
                    try:
                        os.unlink(de.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
            if sub is not None:
                frames.append((fd, sub, open_dir_at(fd, sub)))
                continue
            frames.pop()
            os.close(fd)
            os.rmdir(own_name, dir_fd=parent_fd)
    except OSError:
        if not ignore_errors:
            raise
    finally:
        for _, _, fd in frames:
            os.close(fd)
        os.close(top)
