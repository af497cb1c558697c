"""What CaseFiles and its document and write modules share: limits, the bounded walk, file sniffing.

The modules that act for CaseFiles (documents.py, writes.py) take it as a `CaseAccess`, so that
core.py imports them and they never import core.py.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from scoperun.changes.safefs import CaseRoot
from scoperun.config import Settings
from scoperun.safety.redaction import Redactor
from scoperun.scope import Workspace

if TYPE_CHECKING:
    from scoperun.executor import Executor

__all__ = ["MAX_DEPTH", "MAX_SCAN", "CaseAccess", "Walk", "sniff_kind"]

MAX_SCAN = 200_000  # entries one listing (or one case count) looks at, at most
MAX_DEPTH = 32  # folder levels a recursive listing goes down
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAGIC = ((b"%PDF-", "PDF document"), (b"PK\x03\x04", "zip archive (e.g. DOCX or XLSX)"),
          (b"\x89PNG", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF8", "GIF image"),
          (b"\xd0\xcf\x11\xe0", "legacy Office document"), (b"\x7fELF", "executable"))


def sniff_kind(head: bytes, name: str = "") -> str | None:
    """What a binary file is ('PDF document', ...), or None when `head` looks like text."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            if magic == b"PK\x03\x04" and name.lower().endswith((".docx", ".xlsx")):
                return f"{name.rsplit('.', 1)[1].upper()} document"
            return kind
    if b"\x00" in head:
        return "binary data"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte character at the end is still text
            return "binary data (not UTF-8 text)"
    return None


class CaseAccess(Protocol):
    """What documents.py and writes.py ask of CaseFiles: settings, audit, paths, opening files."""

    settings: Settings
    redactor: Redactor

    @property
    def executor(self) -> Executor: ...

    def _event(self, ws: Workspace, action: str, case: str, path: str | None, requested_by: str | None,
               **data: Any) -> dict[str, Any]: ...

    def _audited(self, action: str, case: str, path: str | None,
                 requested_by: str | None) -> AbstractContextManager[Workspace]: ...

    @staticmethod
    def _rel(path: str | None) -> bytes: ...

    def _show(self, rel: bytes) -> str: ...

    def _open_file(self, root: CaseRoot, rel: bytes) -> AbstractContextManager[tuple[int, os.stat_result]]: ...

    def forget_case_stats(self, case: str) -> None: ...


class Walk:
    """Sorted entries below an open folder, depth-first, never through a link; bounded."""

    def __init__(self, fd: int, rel: bytes, *, recursive: bool, pattern: str | None) -> None:
        self.fd, self.rel, self.recursive = fd, rel, recursive
        self.pattern = pattern.casefold() if pattern else None
        self.scanned = 0
        self.stopped: str | None = None
        self.stopped_rule: str | None = None
        self._open: list[int] = [fd]

    def close(self) -> None:
        for fd in self._open:
            try:
                os.close(fd)
            except OSError:
                pass
        self._open = []

    def _matches(self, rel: bytes, name: bytes) -> bool:
        if self.pattern is None:
            return True
        text = (rel if "/" in self.pattern else name).decode("utf-8", "surrogateescape").casefold()
        return fnmatch.fnmatchcase(text, self.pattern)

    def __iter__(self) -> Iterator[tuple[bytes, os.stat_result, bytes | None, int, bytes]]:
        """(path, lstat, symlink target, descriptor of its folder, name): open files with the last two."""
        yield from self._dir(self.fd, self.rel, 1)

    def _dir(self, fd: int, rel: bytes, depth: int) -> Iterator[tuple[bytes, os.stat_result, bytes | None, int, bytes]]:
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if self.scanned >= MAX_SCAN:
                self.stopped, self.stopped_rule = f"stopped after {MAX_SCAN:,} entries", "scan-cap"
                return
            self.scanned += 1
            name = os.fsencode(entry.name)
            child = rel + b"/" + name if rel else name
            try:
                # d_type answers is_dir without a stat call: only matching entries are stat-ed.
                is_dir = entry.is_dir(follow_symlinks=False)
                if self._matches(child, name):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    target = None
                    if stat.S_ISLNK(st.st_mode):
                        try:
                            target = os.readlink(name, dir_fd=fd)
                        except OSError:
                            target = b"?"
                    yield child, st, target, fd, name
            except OSError:
                continue  # vanished while listed
            if self.recursive and is_dir:
                if depth >= MAX_DEPTH:
                    self.stopped = f"folders deeper than {MAX_DEPTH} levels were not listed"
                    self.stopped_rule = "depth-limit"
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # swapped for a link or removed: not entered
                self._open.append(sub)
                try:
                    yield from self._dir(sub, child, depth + 1)
                finally:
                    self._open.remove(sub)
                    os.close(sub)
