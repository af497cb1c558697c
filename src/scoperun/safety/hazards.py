"""What a run left in its case that the host must not trust, found without following symlinks.

A container can only write its own case, but what it writes there is later touched by host
code (listing, hashing, clean-up, the next run's mounts) and by people. After every run the
case tree is walked with `lstat` only (`os.scandir`, `follow_symlinks=False`) and reports:

- `symlink-outside`: a symlink whose target, seen from the host, leaves the case
  (absolute targets such as `/etc/passwd`, or `../other-case`);
- `setuid` / `setgid`: a regular file with those bits; the bits are removed at once
  (through a file descriptor opened with O_NOFOLLOW, checked to be the same inode);
- `device`, `fifo`, `socket`: special files (a FIFO can block a host reader forever);
- `hardlink`: a regular file with more than one link; `outside_links` counts the links that
  are not in the case (a link to a file outside the case makes "the case" reach it).

`walk_no_follow` is the traversal other host-side code should reuse.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Hazard", "HazardReport", "display_path", "scan_case", "walk_no_follow"]

HazardKind = Literal["symlink-outside", "setuid", "setgid", "device", "fifo", "socket", "hardlink"]
MAX_REPORTED = 50  # hazards kept in a result; the total is still counted


def display_path(raw: bytes | str) -> str:
    """A printable, JSON-safe form of a file name: undecodable bytes and controls escaped."""
    data = os.fsencode(raw)
    text = data.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


@dataclass
class Hazard:
    """One suspicious entry of the case; `path` is relative to the case folder."""

    kind: HazardKind
    path: str
    detail: str
    neutralised: bool = False
    target: str | None = None
    outside_links: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, without empty fields."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class HazardReport:
    """The outcome of one scan: hazards (capped), their total and whether the walk was cut short."""

    hazards: list[Hazard] = field(default_factory=list)
    total: int = 0
    entries: int = 0
    truncated: bool = False

    def add(self, hazard: Hazard) -> None:
        """Count `hazard`; keep it if the cap allows."""
        self.total += 1
        if len(self.hazards) < MAX_REPORTED:
            self.hazards.append(hazard)

    def as_list(self) -> list[dict[str, Any]]:
        """The hazards as dicts, plus a marker entry when some were not kept or not scanned."""
        items = [h.as_dict() for h in self.hazards]
        if self.total > len(self.hazards) or self.truncated:
            items.append({"kind": "scan-summary", "path": "", "detail": (
                f"{self.total} hazard(s) found, {len(self.hazards)} listed"
                + (f"; scan stopped after {self.entries} entries" if self.truncated else ""))})
        return items


def walk_no_follow(root: bytes | str, *, limit: int | None = None) -> Iterator[tuple[bytes, os.stat_result]]:
    """Yield (path relative to root, lstat) for every entry under `root`, never following a symlink.

    Names are bytes, so undecodable names survive. Directories that vanish mid-walk are skipped.
    """
    root_b = os.fsencode(root)
    stack: list[bytes] = [b""]
    seen = 0
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root_b, rel_dir) if rel_dir else root_b) as it:
                entries = list(it)
        except OSError:
            continue  # removed or unreadable: nothing to follow there
        for entry in entries:
            if limit is not None and seen >= limit:
                return
            seen += 1
            rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield rel, st
            if stat.S_ISDIR(st.st_mode):  # lstat: a symlink to a folder is not a folder here
                stack.append(rel)


def _within(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder.rstrip(b"/") + b"/")


def _neutralise_setid(path: bytes, expected: os.stat_result) -> bool:
    """Clear setuid/setgid through an fd of the very inode that was scanned (no symlink, no swap)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino) or not stat.S_ISREG(st.st_mode):
            return False
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def scan_case(case_dir: Path, *, limit: int = 200_000, neutralise: bool = True) -> HazardReport:
    """Walk the case (lstat only) and report hazards; clear setuid/setgid bits when `neutralise`."""
    report = HazardReport()
    root = os.fsencode(case_dir)
    real_root = os.fsencode(os.path.realpath(case_dir))
    links_in_case: dict[tuple[int, int], int] = {}
    multi_linked: list[tuple[bytes, os.stat_result]] = []
    for rel, st in walk_no_follow(root, limit=limit):
        report.entries += 1
        mode = st.st_mode
        full = os.path.join(root, rel)
        shown = display_path(rel)
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(full)
            except OSError:
                continue
            # realpath only computes where the link leads on the host; nothing is opened.
            lead = os.path.realpath(full)
            if not _within(lead, real_root):
                report.add(Hazard("symlink-outside", shown, "symlink leading out of the case; host code must not "
                                  "follow it", target=display_path(target)))
        elif stat.S_ISREG(mode):
            setid: tuple[tuple[int, HazardKind], ...] = ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"))
            for bit, kind in setid:
                if mode & bit:
                    done = neutralise and _neutralise_setid(full, st)
                    report.add(Hazard(kind, shown, f"{kind} file (mode {stat.S_IMODE(mode):o})"
                                      + ("; bit removed" if done else "; bit NOT removed"), neutralised=done))
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                links_in_case[key] = links_in_case.get(key, 0) + 1
                multi_linked.append((rel, st))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            report.add(Hazard("device", shown, f"device file ({os.major(st.st_rdev)}:{os.minor(st.st_rdev)})"))
        elif stat.S_ISFIFO(mode):
            report.add(Hazard("fifo", shown, "named pipe: a host reader would block on it"))
        elif stat.S_ISSOCK(mode):
            report.add(Hazard("socket", shown, "unix socket"))
    report.truncated = report.entries >= limit
    for rel, st in multi_linked:
        outside = st.st_nlink - links_in_case[(st.st_dev, st.st_ino)]
        report.add(Hazard("hardlink", display_path(rel),
                          f"{st.st_nlink} hard links, {outside} of them outside the case"
                          + (" (writes here change a file elsewhere)" if outside else ""),
                          outside_links=outside))
    return report
