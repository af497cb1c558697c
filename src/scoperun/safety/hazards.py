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
  are not in the case (a link to a file outside the case makes "the case" reach it);
- `unscanned`: an entry or folder the scan could not examine (too deep, unreadable, vanished
  as a folder); it is reported and skipped, and the scan goes on — it never fails open.

Each hazard says whether this run `introduced` it (its path is in the run's change set) or it
was already there, so a later harmless run is not blamed for what an earlier one left.
The walk is `scoperun.fswalk.walk` (directory descriptors, no recursion, no symlink followed).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scoperun.fswalk import WalkEntry, WalkReport, display_path, walk
from scoperun.models import Hazard, HazardKind

__all__ = ["Hazard", "HazardKind", "HazardReport", "HazardScanner", "display_path", "scan_case", "walk_no_follow"]

MAX_REPORTED = 50  # hazards kept in a result; the total is still counted
_SETID = stat.S_ISUID | stat.S_ISGID


@dataclass
class HazardReport:
    """The outcome of one scan: hazards (capped), their total and whether the walk was cut short."""

    hazards: list[Hazard] = field(default_factory=list)
    total: int = 0
    entries: int = 0
    truncated: bool = False
    # The exact host name (bytes) of each kept hazard, same order, to match a change set; b"" if none.
    raws: list[bytes] = field(default_factory=list, repr=False)

    def add(self, hazard: Hazard, raw: bytes | None = None) -> None:
        """Count `hazard` (found at raw path `raw`); keep it if the cap allows."""
        self.total += 1
        if len(self.hazards) < MAX_REPORTED:
            self.hazards.append(hazard)
            self.raws.append(b"" if raw is None else raw)

    def mark_introduced(self, changed: set[bytes] | None) -> None:
        """Tell this run's hazards (paths in its change set `changed`) from those already there."""
        for h, raw in zip(self.hazards, self.raws, strict=True):
            if h.kind != "unscanned":
                h.introduced = changed is not None and raw in changed

    def as_list(self) -> list[Hazard]:
        """The hazards, plus a `scan-summary` note last when some were not kept or not scanned."""
        items = list(self.hazards)
        if self.total > len(self.hazards) or self.truncated:
            items.append(Hazard.note("scan-summary", f"{self.total} hazard(s) found, {len(self.hazards)} listed"
                                     + (f"; scan stopped after {self.entries} entries" if self.truncated else "")))
        return items


def _hazard(kind: HazardKind, path: str, detail: str, *, neutralised: bool = False, target: str | None = None,
            outside_links: int | None = None) -> Hazard:
    return Hazard(kind=kind, path=path, detail=detail, neutralised=neutralised, target=target,
                  outside_links=outside_links)


def walk_no_follow(root: bytes | str, *, limit: int | None = None) -> Iterator[tuple[bytes, os.stat_result]]:
    """Yield (path relative to root, lstat) for every entry under `root`, never following a symlink.

    Names are bytes, so undecodable names survive. Entries that cannot be read are skipped.
    """
    for entry in walk(root, limit=limit):
        yield entry.rel, entry.st


def _within(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder.rstrip(b"/") + b"/")


def _neutralise_setid(dir_fd: int, name: bytes, expected: os.stat_result) -> bool:
    """Clear setuid/setgid through an fd of the very inode that was scanned (no symlink, no swap)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
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


def _leaves_case(root: bytes, real_root: bytes, rel: bytes, target: bytes) -> bool:
    """Where symlink `rel -> target` leads on the host: out of the case, or not (conservative)."""
    if target.startswith(b"/"):
        return not _within(os.path.normpath(target), real_root)
    lexical = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    if lexical == b".." or lexical.startswith(b"../"):
        return True
    try:
        # Through other links of the case: realpath computes where it leads; nothing is opened.
        return not _within(os.path.realpath(os.path.join(root, rel)), real_root)
    except (OSError, ValueError, RuntimeError):
        return True  # cannot be resolved on the host (e.g. through /proc/1/root): treat as leaving


def scan_case(case_dir: Path, *, limit: int = 200_000, neutralise: bool = True,
              changed: set[bytes] | None = None, deadline: float | None = None) -> HazardReport:
    """Walk the case (lstat only) and report hazards; clear setuid/setgid bits when `neutralise`.

    `changed`: the raw paths of this run's change set, to mark hazards it introduced. One entry
    that cannot be examined is reported as `unscanned` and the scan goes on.
    """
    scanner = HazardScanner(case_dir, limit=limit, neutralise=neutralise)
    walked = WalkReport()
    for e in walk(scanner.root, walked, limit=limit, deadline=deadline):
        scanner.visit(e)
    scanner.walk_ended(walked)
    return scanner.report(changed)


class HazardScanner:
    """The hazard scan of one case, fed by a walk someone else drives (`scan_case`, or the direct
    tracker's listing after a run: one walk serves both): `visit` each entry, `walk_ended`, `report`.

    Only the first `limit` entries are examined; past them the report says the scan was cut short.
    """

    def __init__(self, case_dir: Path, *, limit: int = 200_000, neutralise: bool = True) -> None:
        self.root = os.fsencode(case_dir)
        self.real_root = os.fsencode(os.path.realpath(case_dir))
        self.limit = limit
        self.neutralise = neutralise
        self.result = HazardReport()
        self.walked: WalkReport | None = None  # set by walk_ended: the walk's problems, as of the limit
        self._links_in_case: dict[tuple[int, int], int] = {}
        self._multi_linked: list[tuple[bytes, os.stat_result]] = []
        self._past_limit = False
        self._at_limit: tuple[list[tuple[bytes, str]], int] | None = None  # the walk's problems then

    def visit(self, e: WalkEntry, walked: WalkReport | None = None) -> None:
        """Examine one entry of the walk (`walked`: that walk's report, to know its problems at the limit)."""
        report = self.result
        if report.entries >= self.limit:
            self._past_limit = True
            return
        report.entries += 1
        if report.entries == self.limit and walked is not None:
            self._at_limit = (list(walked.problems), walked.count)
        st = e.st
        mode, rel = st.st_mode, e.rel
        if stat.S_ISDIR(mode) or (stat.S_ISREG(mode) and not mode & _SETID and st.st_nlink == 1):
            return  # the common case, decided without a name to show
        shown = display_path(rel)
        try:
            if stat.S_ISLNK(mode):
                target = e.readlink()
                if _leaves_case(self.root, self.real_root, rel, target):
                    report.add(_hazard("symlink-outside", shown, "symlink leading out of the case; host code must "
                                      "not follow it", target=display_path(target)), rel)
            elif stat.S_ISREG(mode):
                setid: tuple[tuple[int, HazardKind], ...] = ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"))
                for bit, kind in setid:
                    if mode & bit:
                        done = self.neutralise and _neutralise_setid(e.dir_fd, e.name, st)
                        report.add(_hazard(kind, shown, f"{kind} file (mode {stat.S_IMODE(mode):o})"
                                          + ("; bit removed" if done else "; bit NOT removed"), neutralised=done),
                                   rel)
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    self._links_in_case[key] = self._links_in_case.get(key, 0) + 1
                    self._multi_linked.append((rel, st))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                report.add(_hazard("device", shown, f"device file ({os.major(st.st_rdev)}:"
                                  f"{os.minor(st.st_rdev)})"), rel)
            elif stat.S_ISFIFO(mode):
                report.add(_hazard("fifo", shown, "named pipe: a host reader would block on it"), rel)
            elif stat.S_ISSOCK(mode):
                report.add(_hazard("socket", shown, "unix socket"), rel)
        except (OSError, ValueError) as exc:  # one bad entry never ends the scan
            report.add(_hazard("unscanned", shown, f"could not be examined ({exc}); skipped"), rel)

    def walk_ended(self, walked: WalkReport) -> None:
        """The walk that fed `visit` is over (all of it, or cut short as `walked` says)."""
        self.walked = walked

    def report(self, changed: set[bytes] | None = None) -> HazardReport:
        """The hazards found (`changed`: this run's change set, to mark what it introduced)."""
        assert self.walked is not None, "report() before walk_ended()"
        report = self.result
        problems, count = self._at_limit or (self.walked.problems, self.walked.count)
        stopped = [p for p in problems if p[1].startswith("walk stopped")]
        for rel, why in problems:
            if why.startswith("walk stopped: time"):
                report.add(_hazard("unscanned", "", f"hazard scan cut short ({why.removeprefix('walk stopped: ')}); "
                                  f"later entries were not checked"))
            elif not why.startswith("walk stopped"):
                report.add(_hazard("unscanned", display_path(rel), f"{why}; skipped"), rel)
        report.total += count - len(problems)  # problems past the kept ones: counted, not listed
        report.truncated = bool(stopped) or self._past_limit or report.entries >= self.limit
        for rel, st in self._multi_linked:
            outside = st.st_nlink - self._links_in_case[(st.st_dev, st.st_ino)]
            report.add(_hazard("hardlink", display_path(rel),
                              f"{st.st_nlink} hard links, {outside} of them outside the case"
                              + (" (writes here change a file elsewhere)" if outside else ""),
                              outside_links=outside), rel)
        if changed is not None:
            report.mark_introduced(changed)
        return report
