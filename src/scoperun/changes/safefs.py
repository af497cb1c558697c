"""File operations inside one case folder that never follow a symlink out of it.

Every relative path is checked (no `..`, no absolute path, no empty part), then reached one
folder at a time with `O_NOFOLLOW|O_DIRECTORY` from an open descriptor of the case, so a folder
swapped for a symlink (even during the walk) is refused instead of written through. Files are
written to a temporary name in their folder and renamed over the target: on gcsfuse a rename is
copy + delete, so a reader never sees half a file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scoperun.errors import ScopeError
from scoperun.mounts import is_fuse

__all__ = ["CHUNK", "CaseRoot", "check_rel", "copy_fd", "hash_fd", "sync_fs"]

CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_rel(rel: bytes) -> list[bytes]:
    """Split a case-relative path into parts; refuse anything that could leave the case."""
    shown = rel.decode("utf-8", "backslashreplace")
    if not rel or rel.startswith(b"/") or b"\x00" in rel:
        raise ScopeError(f"rejected (outside-case): {shown!r} is not a path inside the case", rule="outside-case",
                         value=shown)
    parts = rel.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        raise ScopeError(f"rejected (outside-case): {shown!r} leaves the case or is not a plain path",
                         rule="outside-case", value=shown)
    return parts


_ZEROS = bytes(CHUNK)


def _segments(fd: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) runs of `fd` from its current offset to its end; holes come as not data.

    Uses SEEK_DATA/SEEK_HOLE, so a sparse file's holes are neither read nor written as real data;
    a filesystem without them reports the whole file as data.
    """
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    end = os.fstat(fd).st_size
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                yield pos, end - pos, False
                return
            yield pos, end - pos, True  # no SEEK_DATA here: everything is data
            return
        if data > pos:
            yield pos, data - pos, False
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        except OSError:
            hole = end
        yield data, hole - data, True
        pos = hole


def _read_range(fd: int, offset: int, length: int) -> Iterator[bytes]:
    while length > 0:
        chunk = os.pread(fd, min(CHUNK, length), offset)
        if not chunk:
            return
        offset += len(chunk)
        length -= len(chunk)
        yield chunk


def _zeros(length: int) -> Iterator[bytes | memoryview]:
    view = memoryview(_ZEROS)
    while length > 0:
        n = min(CHUNK, length)
        length -= n
        yield view[:n]


def hash_fd(fd: int) -> tuple[str, int]:
    """sha256 and size of what is left to read on `fd` (holes of a sparse file are not read)."""
    h = hashlib.sha256()
    size = 0
    for offset, length, is_data in _segments(fd):
        for chunk in (_read_range(fd, offset, length) if is_data else _zeros(length)):
            h.update(chunk)
            size += len(chunk)
    os.lseek(fd, 0, os.SEEK_END)
    return h.hexdigest(), size


def copy_fd(src: int, dst: int) -> tuple[str, int]:
    """Copy `src` to `dst`, hashing on the way; holes stay holes (sparse files stay sparse). Return (sha256, size)."""
    h = hashlib.sha256()
    size = 0
    for offset, length, is_data in _segments(src):
        if not is_data:
            for chunk in _zeros(length):
                h.update(chunk)
            size += length
            continue
        for chunk in _read_range(src, offset, length):
            h.update(chunk)
            view = memoryview(chunk)
            pos = offset
            while view:
                n = os.pwrite(dst, view, pos)
                view, pos = view[n:], pos + n
            offset += len(chunk)
            size += len(chunk)
    os.ftruncate(dst, size)  # a trailing hole: the size without writing zeros
    os.lseek(src, 0, os.SEEK_END)
    return h.hexdigest(), size


def sync_fs(fd: int) -> None:
    """Flush every write of the filesystem holding `fd` to disk at once (syncfs; sync as fallback).

    Applying thousands of files with one fsync each cost most of the time; one syncfs before the
    step that depends on durability (the manifest's next state) gives the same guarantee.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


_DIR_CACHE_MAX = 4096


def _tmp_name(name: bytes) -> bytes:
    return b"." + name[:200] + b".scoperun-" + secrets.token_hex(4).encode() + b".tmp"


class CaseRoot:
    """An open case folder; use as a context manager so its descriptor is closed."""

    def __init__(self, case_dir: Path) -> None:
        self.path = case_dir
        self.real = os.path.realpath(case_dir)
        self.fd = os.open(case_dir, _DIR_FLAGS)
        self.as_root = os.geteuid() == 0
        # On a FUSE bucket syncfs may not reach the bucket: there every file is fsynced (uploaded) itself.
        self.on_fuse = is_fuse(Path(self.real))
        # Folders already reached and checked, by relative path: applying 60,000 files must not
        # walk and resolve the same folders 60,000 times. Dropped when a folder is removed.
        self._dirs: dict[bytes, int] = {}

    def close(self) -> None:
        """Close the case's descriptor (and the folders kept open)."""
        self._forget(b"")
        os.close(self.fd)

    def _forget(self, rel: bytes) -> None:
        for key in [k for k in self._dirs if not rel or k == rel or k.startswith(rel + b"/")]:
            os.close(self._dirs.pop(key))

    def __enter__(self) -> CaseRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reaching a path ----------------------------------------------------------------------

    @contextmanager
    def parent(self, rel: bytes) -> Iterator[tuple[int, bytes]]:
        """Yield (descriptor of the folder holding `rel`, its last part); refuse symlinked folders."""
        parts = check_rel(rel)
        yield self._folder(rel, parts[:-1]), parts[-1]

    def _folder(self, rel: bytes, parts: list[bytes]) -> int:
        """The (cached) descriptor of the folder `parts`, reached one name at a time with O_NOFOLLOW."""
        if not parts:
            return self.fd
        key = b"/".join(parts)
        cached = self._dirs.get(key)
        if cached is not None:
            return cached
        # Start from the deepest cached ancestor.
        depth, fd = 0, self.fd
        for i in range(len(parts) - 1, 0, -1):
            hit = self._dirs.get(b"/".join(parts[:i]))
            if hit is not None:
                depth, fd = i, hit
                break
        for i in range(depth, len(parts)):
            part = parts[i]
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(fd, part):
                    shown = rel.decode("utf-8", "backslashreplace")
                    raise ScopeError(f"rejected (outside-case): {shown!r} passes through a symlink; scoperun "
                                     f"never writes through links", rule="outside-case", value=shown) from None
                raise
            if len(self._dirs) >= _DIR_CACHE_MAX:
                self._forget(b"")
            self._dirs[b"/".join(parts[: i + 1])] = nxt
            fd = nxt
        # Resolve-and-check: the folder reached must still be inside the case. A folder deeper than
        # PATH_MAX has no resolvable name; the O_NOFOLLOW chain from the case already guarantees it.
        try:
            where = os.path.realpath(f"/proc/self/fd/{fd}")
        except OSError:
            return fd
        if where != self.real and not where.startswith(self.real.rstrip("/") + "/"):
            self._forget(key)
            shown = rel.decode("utf-8", "backslashreplace")
            raise ScopeError(f"rejected (outside-case): {shown!r} resolves outside the case", rule="outside-case",
                             value=shown)
        return fd

    def lstat(self, rel: bytes) -> os.stat_result | None:
        """lstat of `rel`, or None when it (or a folder on its way) does not exist."""
        try:
            with self.parent(rel) as (dfd, name):
                return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def readlink(self, rel: bytes) -> bytes:
        """The target of symlink `rel` (never followed)."""
        with self.parent(rel) as (dfd, name):
            return os.readlink(name, dir_fd=dfd)

    @contextmanager
    def open_read(self, rel: bytes) -> Iterator[int]:
        """Open regular file `rel` for reading without following a symlink."""
        with self.parent(rel) as (dfd, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise IsADirectoryError(errno.EISDIR, "not a regular file", rel.decode("utf-8", "replace"))
                yield fd
            finally:
                os.close(fd)

    def sha256(self, rel: bytes) -> str | None:
        """sha256 of regular file `rel`, None when it is missing or not a file."""
        try:
            with self.open_read(rel) as fd:
                return hash_fd(fd)[0]
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    # -- changing a path ----------------------------------------------------------------------

    def write_file(self, rel: bytes, src_fd: int, *, mode: int, uid: int | None = None, gid: int | None = None,
                   mtime_ns: int | None = None, durable: bool = True) -> tuple[str, os.stat_result]:
        """Write `src_fd`'s content to `rel` via a temporary file and a rename; return (sha256, stat).

        `durable=False` skips the per-file fsync: the caller syncs the filesystem once (`sync_fs`).
        """
        with self.parent(rel) as (dfd, name):
            tmp = _tmp_name(name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                try:
                    digest, _ = copy_fd(src_fd, fd)
                    self._own(fd, uid, gid)
                    os.fchmod(fd, mode)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                    if durable or self.on_fuse:
                        os.fsync(fd)
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quiet(tmp, dfd)
                raise
            return digest, st

    def link_in(self, rel: bytes, src: Path, *, mode: int, uid: int | None = None, gid: int | None = None,
                mtime_ns: int | None = None) -> bool:
        """Make `rel` a hard link of file `src` from outside the case (the journal); False when links fail.

        Rollback puts a pre-image back this way without copying it; the inode then gets `mode`,
        owner and mtime as recorded.
        """
        with self.parent(rel) as (dfd, name):
            tmp = _tmp_name(name)
            try:
                os.link(src, tmp, dst_dir_fd=dfd, follow_symlinks=False)
            except OSError:
                return False
            try:
                fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    self._own(fd, uid, gid)
                    os.fchmod(fd, mode)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quiet(tmp, dfd)
                raise
            return True

    def symlink(self, rel: bytes, target: bytes, *, uid: int | None = None, gid: int | None = None) -> None:
        """Create (or replace) symlink `rel` pointing at `target`; the target is never touched."""
        with self.parent(rel) as (dfd, name):
            tmp = _tmp_name(name)
            os.symlink(target, tmp, dir_fd=dfd)
            try:
                if self.as_root and uid is not None:
                    _quiet(lambda: os.chown(tmp, uid, gid if gid is not None else -1, dir_fd=dfd,
                                            follow_symlinks=False))
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quiet(tmp, dfd)
                raise

    def hardlink(self, rel: bytes, existing: bytes) -> bool:
        """Make `rel` a hard link of `existing` in the case; False when the filesystem has none."""
        with self.parent(existing) as (sfd, sname), self.parent(rel) as (dfd, name):
            tmp = _tmp_name(name)
            try:
                os.link(sname, tmp, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                    return False
                raise
            try:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quiet(tmp, dfd)
                raise
            return True

    def mkdir(self, rel: bytes, *, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        """Create folder `rel` (an existing folder is fine) with `mode`."""
        with self.parent(rel) as (dfd, name):
            try:
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                self._own(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def chmod(self, rel: bytes, mode: int) -> None:
        """Change the mode of `rel`; a symlink is refused rather than followed."""
        with self.parent(rel) as (dfd, name):
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                if stat.S_ISLNK(os.fstat(fd).st_mode):
                    raise ScopeError("rejected (symlink-mode): symlinks have no mode of their own", rule="symlink-mode")
                # An O_PATH descriptor cannot be fchmod-ed; its /proc link names that very inode.
                os.chmod(f"/proc/self/fd/{fd}", mode)
            finally:
                os.close(fd)

    def unlink(self, rel: bytes) -> None:
        """Remove file or symlink `rel` (missing is fine)."""
        with self.parent(rel) as (dfd, name):
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass

    def rmdir(self, rel: bytes) -> None:
        """Remove empty folder `rel` (missing is fine)."""
        self._forget(rel)
        with self.parent(rel) as (dfd, name):
            try:
                os.rmdir(name, dir_fd=dfd)
            except FileNotFoundError:
                pass

    def listdir(self, rel: bytes) -> list[bytes]:
        """Names in folder `rel`."""
        with self.parent(rel) as (dfd, name):
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                return [os.fsencode(n) for n in os.listdir(fd)]
            finally:
                os.close(fd)

    def _own(self, fd: int, uid: int | None, gid: int | None) -> None:
        # Keep the owner the run had, so the next run (as the container user) can change the file;
        # filesystems with fixed owners (gcsfuse) refuse and that is fine.
        if self.as_root and uid is not None:
            _quiet(lambda: os.fchown(fd, uid, gid if gid is not None else -1))


def _is_symlink(dfd: int, name: bytes) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _unlink_quiet(name: bytes, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _quiet(call: Callable[[], object]) -> None:
    try:
        call()
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
