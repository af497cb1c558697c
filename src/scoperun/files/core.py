"""Cases and file access for agents and people: scoped to one case like a run, and audited.

Every path is checked (no `..`, absolute path, NUL) and reached one folder at a time from an
open descriptor of the case without following a symlink (changes/safefs.py's CaseRoot); special
files (FIFOs, devices, sockets) are refused before they are opened. Every access, refusals
included, leaves an audit event (events.py). Document parsing never happens here: see documents.py.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from scoperun.atomicio import write_json_atomic
from scoperun.audit.access import record_access
from scoperun.changes.safefs import CHUNK, CaseRoot
from scoperun.changes.snapshot import type_of
from scoperun.config import Settings, load_settings
from scoperun.errors import AuditError, FileAccessError, ScopeError
from scoperun.files.common import _DIR_FLAGS, MAX_DEPTH, MAX_SCAN, Walk, sniff_kind
from scoperun.files.models import (
    CaseInfo,
    CaseList,
    DocumentText,
    FileEntry,
    FileListing,
    FileText,
    SearchResult,
    WriteResult,
)
from scoperun.safety.redaction import Redactor
from scoperun.scope import Workspace, check_relative_path

if TYPE_CHECKING:
    from scoperun.executor import Executor

__all__ = ["CASE_STATS_TTL", "MAX_DEPTH", "MAX_LIST", "MAX_READ", "MAX_SCAN", "CaseFiles", "sniff_kind"]

MAX_LIST = 1000  # entries in one page of a listing
MAX_PATH_PARTS = 256  # folder levels a path may name
MAX_READ = 1024 * 1024  # bytes of text one read_file returns
DEFAULT_READ = 64 * 1024
CASE_STATS_TTL = 300.0  # seconds a case's cached file count stays fresh
_COUNT_BUDGET = 2.0  # seconds one `cases` call may spend recounting stale cases
def _iso(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _special(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


class CaseFiles:
    """Case listing and file access over one workspace; thread-safe, no engine until a document is read."""

    def __init__(self, executor: Executor | None = None, *, settings: Settings | None = None) -> None:
        self._executor = executor
        self._owns_executor = False
        self.settings = executor.settings if executor is not None else (settings or load_settings())
        self.redactor = Redactor({n: os.environ[n] for n in self.settings.secret_env if os.environ.get(n)})

    @property
    def executor(self) -> Executor:
        """The executor document extraction runs through (made on first use, then owned and closed by us)."""
        if self._executor is None:
            from scoperun.executor import Executor

            self._executor = Executor(self.settings)
            self._owns_executor = True
        return self._executor

    def close(self) -> None:
        """Close the executor this object made (one given to it stays open)."""
        if self._executor is not None and self._owns_executor:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workspace(self) -> Workspace:
        """The workspace, resolved now (WorkspaceError when unusable)."""
        return Workspace.from_settings(self.settings)

    # -- audit --------------------------------------------------------------------------------

    def _event(self, ws: Workspace, action: str, case: str, path: str | None, requested_by: str | None,
               **data: Any) -> dict[str, Any]:
        return record_access(self.settings, ws.root, action=action, case=case,
                             path=None if path is None else self.redactor.redact(path),
                             requested_by=requested_by, **data)

    @contextmanager
    def _audited(self, action: str, case: str, path: str | None, requested_by: str | None) -> Iterator[Workspace]:
        """Yield the workspace; a refusal is recorded (with its rule) before it reaches the caller."""
        ws = self.workspace
        try:
            yield ws
        except ScopeError as exc:
            self._event(ws, action, case, path, requested_by, outcome="refused", reason=exc.rule,
                        detail=self.redactor.redact(str(exc))[:500])
            raise

    # -- paths --------------------------------------------------------------------------------

    @staticmethod
    def _rel(path: str | None) -> bytes:
        """A caller's case-relative path as bytes; '' is the case itself."""
        if path is None or path.strip() in {"", ".", "./"}:
            return b""
        rel = check_relative_path(path, what="path")
        if len(rel.parts) > MAX_PATH_PARTS:
            raise ScopeError(f"rejected (path-too-deep): the path has {len(rel.parts):,} folder levels (limit "
                             f"{MAX_PATH_PARTS})", rule="path-too-deep", value=path[:200])
        return os.fsencode(rel.as_posix())

    def _show(self, rel: bytes) -> str:
        """A path for output: undecodable bytes escaped, secrets redacted."""
        return self.redactor.redact(rel.decode("utf-8", "backslashreplace")) if rel else "."

    @staticmethod
    def _symlink_refusal(root: CaseRoot, rel: bytes, shown: str) -> ScopeError:
        try:
            target = root.readlink(rel).decode("utf-8", "backslashreplace")
        except OSError:
            target = "?"
        return ScopeError(f"rejected (symlink): {shown!r} is a symlink (to {target!r}); scoperun never follows "
                          f"links, read the file it points to by its own path if that is inside the case",
                          rule="symlink", value=shown)

    def _open_dir(self, root: CaseRoot, rel: bytes) -> int:
        if not rel:
            return os.dup(root.fd)
        shown = self._show(rel)
        st = self._lstat(root, rel)
        if stat.S_ISLNK(st.st_mode):
            raise self._symlink_refusal(root, rel, shown)
        if not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else _special(st.st_mode)
            raise FileAccessError(f"rejected (not-a-folder): {shown!r} is {what}, not a folder", rule="not-a-folder",
                                  value=shown)
        with root.parent(rel) as (dfd, name):
            return os.open(name, _DIR_FLAGS, dir_fd=dfd)

    def _lstat(self, root: CaseRoot, rel: bytes) -> os.stat_result:
        st = root.lstat(rel)
        if st is None:
            shown = self._show(rel)
            raise FileAccessError(f"rejected (not-found): {shown!r} does not exist in the case; list the folder "
                                  f"with list_files to see what is there", rule="not-found", value=shown)
        return st

    @contextmanager
    def _open_file(self, root: CaseRoot, rel: bytes) -> Iterator[tuple[int, os.stat_result]]:
        """A regular file opened without following links; special files refused before opening."""
        shown = self._show(rel)
        if not rel:
            raise FileAccessError("rejected (not-a-file): the case itself is a folder; name a file in it",
                                  rule="not-a-file", value=shown)
        st = self._lstat(root, rel)
        if stat.S_ISLNK(st.st_mode):
            raise self._symlink_refusal(root, rel, shown)
        if not stat.S_ISREG(st.st_mode):
            # Opening a FIFO blocks and opening a device can act on it: refuse on lstat alone.
            raise FileAccessError(f"rejected (special-file): {shown!r} is {_special(st.st_mode)}, not a regular "
                                  f"file; only regular files are read", rule="special-file", value=shown)
        with root.parent(rel) as (dfd, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._symlink_refusal(root, rel, shown) from None
                raise FileAccessError(f"rejected (unreadable): {shown!r} cannot be opened ({exc.strerror})",
                                      rule="unreadable", value=shown) from None
            try:
                now = os.fstat(fd)
                if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(now.st_mode):
                    raise FileAccessError(f"rejected (changed): {shown!r} was replaced while being opened; try "
                                          f"again", rule="changed", value=shown)
                yield fd, now
            finally:
                os.close(fd)

    # -- cases ----------------------------------------------------------------------------------

    def cases(self, prefix: str | None = None, *, limit: int = 500, requested_by: str | None = None) -> CaseList:
        """Cases whose name starts with `prefix` (case-insensitive): file count, size, last run."""
        ws = self.workspace
        names = ws.case_names()
        if prefix:
            folded = prefix.casefold()
            names = [n for n in names if n.casefold().startswith(folded)]
        page = names[:max(1, min(limit, 10_000))]
        stats = self._case_stats(ws, page)
        runs = self._last_runs(ws, page)
        out = []
        for name in page:
            info = CaseInfo(name=self.redactor.redact(name), **stats.get(name, {}))
            run = runs.get(name)
            if run:
                info.last_run_id, info.last_run_status = run[0], run[1]
                info.last_run_at = datetime.fromtimestamp(run[2], UTC) if run[2] else None
            out.append(info)
        self._event(ws, "cases", "*", prefix or None, requested_by, count=len(out))
        return CaseList(cases=out, total=len(names), truncated=len(page) < len(names))

    def _stats_file(self, ws: Workspace) -> Path:
        from scoperun.audit.state import audit_dir_key, state_dir

        return state_dir(self.settings) / "cases" / f"{audit_dir_key(ws.audit_dir)}.json"

    def _case_stats(self, ws: Workspace, names: list[str]) -> dict[str, dict[str, Any]]:
        """Cached counts; stale ones recounted within a time budget (a huge case is never walked per call)."""
        path = self._stats_file(ws)
        try:
            cache: dict[str, dict[str, Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        now, spent, changed = time.time(), 0.0, False
        for name in names:
            entry = cache.get(name)
            if entry is not None and now - entry.get("at", 0) < CASE_STATS_TTL:
                continue
            if spent > _COUNT_BUDGET:
                continue  # counted on a later call; this answer shows the older count (or none)
            t0 = time.monotonic()
            counted = _count_case(ws.projects / name)
            spent += time.monotonic() - t0
            if counted is not None:
                cache[name] = {**counted, "at": now}
                changed = True
        if changed:
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_json_atomic(path, cache)
            except OSError:
                pass  # a cache: the next call counts again
        result = {}
        for name in names:
            e = cache.get(name)
            if e:
                result[name] = {"files": e["files"], "bytes": e["bytes"], "count_capped": e["capped"],
                                "last_modified": _iso(e["mtime_ns"]) if e.get("mtime_ns") else None,
                                "counted_at": datetime.fromtimestamp(e["at"], UTC)}
        return result

    def forget_case_stats(self, case: str) -> None:
        """Drop a case's cached count (after a write through scoperun), so the next listing recounts it."""
        path = self._stats_file(self.workspace)
        try:
            cache = json.loads(path.read_text())
            if cache.pop(case, None) is not None:
                write_json_atomic(path, cache)
        except (OSError, ValueError):
            pass

    def _last_runs(self, ws: Workspace, names: list[str]) -> dict[str, tuple[str, str, float | None]]:
        from scoperun.audit.index import AuditIndex
        from scoperun.audit.state import index_path

        try:
            index = AuditIndex(index_path(self.settings, ws.audit_dir), ws.audit_dir)
            try:
                index.reindex_if_stale(60.0)
                # SQLite returns the other columns of the row holding MAX(started). scoperun's own
                # operations (document extraction, file writes) are not the case's "last run".
                rows = index.connect().execute(
                    "SELECT case_name, execution_id, status, MAX(started) FROM records "
                    "WHERE script_path NOT LIKE 'scoperun:%' GROUP BY case_name").fetchall()
            finally:
                index.close()
        except (AuditError, OSError, Exception):
            return {}
        wanted = set(names)
        return {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] in wanted}

    # -- listing --------------------------------------------------------------------------------

    def list_files(self, case: str, path: str = ".", *, pattern: str | None = None, recursive: bool = False,
                   offset: int = 0, limit: int = 200, requested_by: str | None = None) -> FileListing:
        """A page of the entries under `path` (sorted; recursive walks stop at MAX_DEPTH and MAX_SCAN)."""
        limit = max(1, min(limit, MAX_LIST))
        offset = max(0, offset)
        with self._audited("list", case, path, requested_by) as ws:
            rel = self._rel(path)
            with CaseRoot(ws.case_dir(case)) as root:
                fd = self._open_dir(root, rel)
                walk = Walk(fd, rel, recursive=recursive, pattern=pattern)
                entries: list[FileEntry] = []
                more = False
                try:
                    for n, (entry_rel, st, target, _, _) in enumerate(walk):
                        if n < offset:
                            continue
                        if len(entries) == limit:
                            more = True
                            break
                        entries.append(FileEntry(
                            path=self._show(entry_rel), type=type_of(st.st_mode),
                            size=st.st_size, modified=_iso(st.st_mtime_ns),
                            target=self._show(target) if target is not None else None))
                finally:
                    walk.close()
            listing = FileListing(case=case, path=self._show(rel), entries=entries, offset=offset, more=more,
                                  scanned=walk.scanned, stopped=walk.stopped)
            self._event(ws, "list", case, listing.path, requested_by, entries=len(entries),
                        reason=walk.stopped_rule)
            return listing

    # -- reading --------------------------------------------------------------------------------

    def read_file(self, case: str, path: str, *, offset: int = 0, limit: int = DEFAULT_READ,
                  requested_by: str | None = None) -> FileText:
        """Text of a file from byte `offset`, at most `limit` bytes (MAX_READ); binary files refused with their type."""
        limit = max(1, min(limit, MAX_READ))
        offset = max(0, offset)
        with self._audited("read", case, path, requested_by) as ws:
            rel = self._rel(path)
            with CaseRoot(ws.case_dir(case)) as root, self._open_file(root, rel) as (fd, st):
                shown = self._show(rel)
                kind = sniff_kind(os.pread(fd, 8192, 0), shown)
                if kind is not None:
                    hint = ("read it with read_document" if kind.endswith("document") else
                            "download it, or process it with a script")
                    raise FileAccessError(f"rejected (binary-file): {shown!r} is a {kind} ({st.st_size:,} bytes), "
                                          f"not text; {hint}", rule="binary-file", value=shown)
                data = os.pread(fd, limit, offset)
                end = offset + len(data)
                if end < st.st_size:
                    data = _whole_chars(data)
                    end = offset + len(data)
            text = data.decode("utf-8", "replace")
            truncated = end < st.st_size
            self._event(ws, "read", case, shown, requested_by, nbytes=len(data), offset=offset)
            return FileText(case=case, path=shown, size=st.st_size, offset=offset, text=text, truncated=truncated,
                            next_offset=end if truncated else None)

    def download(self, case: str, path: str, dest: Path | str, *, requested_by: str | None = None) -> tuple[str, int]:
        """Copy a case file's exact bytes to `dest` on this machine (never overwritten); return (sha256, size)."""
        from scoperun.changes.safefs import copy_fd

        with self._audited("download", case, path, requested_by) as ws:
            rel = self._rel(path)
            with CaseRoot(ws.case_dir(case)) as root, self._open_file(root, rel) as (fd, _):
                out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    digest, size = copy_fd(fd, out)
                finally:
                    os.close(out)
            self._event(ws, "download", case, self._show(rel), requested_by, nbytes=size, sha256=digest)
            return digest, size

    def read_bytes(self, case: str, path: str, *, max_bytes: int = 100 * 1024 * 1024,
                   requested_by: str | None = None) -> bytes:
        """A case file's exact bytes (FileAccessError above `max_bytes`: use download for big files)."""
        with self._audited("download", case, path, requested_by) as ws:
            rel = self._rel(path)
            with CaseRoot(ws.case_dir(case)) as root, self._open_file(root, rel) as (fd, st):
                shown = self._show(rel)
                if st.st_size > max_bytes:
                    raise FileAccessError(f"rejected (too-large): {shown!r} has {st.st_size:,} bytes, more than "
                                          f"{max_bytes:,}; download it to a file instead", rule="too-large",
                                          value=shown)
                chunks, size = [], 0
                while size <= max_bytes and (chunk := os.read(fd, CHUNK)):
                    chunks.append(chunk)
                    size += len(chunk)
            data = b"".join(chunks)
            self._event(ws, "download", case, shown, requested_by, nbytes=len(data))
            return data

    # -- documents, search and writes live in their own modules ---------------------------------

    def read_document(self, case: str, path: str, *, requested_by: str | None = None) -> DocumentText:
        """Text of a PDF, DOCX, XLSX/CSV or an image's metadata, extracted inside a container (cached)."""
        from scoperun.files.documents import read_document

        return read_document(self, case, path, requested_by=requested_by)

    def search(self, case: str, query: str, *, glob: str | None = None, limit: int = 50,
               requested_by: str | None = None) -> SearchResult:
        """Case-insensitive text search across text files and extracted document text, bounded."""
        from scoperun.files.documents import search

        return search(self, case, query, glob=glob, limit=limit, requested_by=requested_by)

    def write_file(self, case: str, path: str, content: str | bytes, *,
                   requested_by: str | None = None) -> WriteResult:
        """Write a file through a staged change set (reviewable, undoable with `scoperun rollback`)."""
        from scoperun.files.writes import write_file

        data = content.encode("utf-8") if isinstance(content, str) else content
        return write_file(self, case, path, data, requested_by=requested_by)

    def upload(self, case: str, path: str, source: Path | str, *, requested_by: str | None = None) -> WriteResult:
        """Upload a local file into the case through a staged change set, like write_file."""
        from scoperun.files.writes import upload_file

        return upload_file(self, case, path, Path(source), requested_by=requested_by)


def _whole_chars(data: bytes) -> bytes:
    """Drop a multi-byte UTF-8 character cut at the end, so the next part starts on a character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its character complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _count_case(case_dir: Path) -> dict[str, Any] | None:
    """Regular files, bytes and newest mtime below a case, without following links (capped at MAX_SCAN)."""
    files = size = newest = seen = 0
    stack = [os.fsencode(case_dir)]
    try:
        newest = os.stat(case_dir, follow_symlinks=False).st_mtime_ns
    except OSError:
        return None
    while stack and seen < MAX_SCAN:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for de in it:
                seen += 1
                try:
                    st = de.stat(follow_symlinks=False)
                except OSError:
                    continue
                newest = max(newest, st.st_mtime_ns)
                if stat.S_ISREG(st.st_mode):
                    files += 1
                    size += st.st_size
                elif stat.S_ISDIR(st.st_mode):
                    stack.append(de.path)
    return {"files": files, "bytes": size, "mtime_ns": newest, "capped": bool(stack) or seen >= MAX_SCAN}
