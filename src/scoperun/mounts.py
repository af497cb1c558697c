"""The mounts of this mount namespace, from psutil: which filesystem holds a path (the workspace may be
a gcsfuse bucket), which mount points lie under a folder, which overlay is mounted."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Mount", "filesystem_of", "is_fuse", "mount_points_under", "mount_table"]


class Mount(NamedTuple):
    """One mount: where, which filesystem type, and its options (super-block options included)."""

    point: str
    fstype: str
    options: str


def mount_table() -> list[Mount] | None:
    """Every mount of this process's mount namespace (escapes such as \\040 decoded), or None if unreadable.

    psutil reads /proc/self/mounts (or /etc/mtab where that is a file); none of scoperun's uses needs
    what only /proc/self/mountinfo has (mount ids, propagation flags).
    """
    import psutil

    try:
        return [Mount(p.mountpoint, p.fstype, p.opts) for p in psutil.disk_partitions(all=True)]
    except OSError:
        return None


def _within(path: str, point: str) -> bool:
    return path == point or path.startswith(point.rstrip("/") + "/")


def filesystem_of(path: Path) -> tuple[str, str] | None:
    """The (mount point, filesystem type) holding `path`, or None when the mount table is unreadable."""
    table = mount_table()
    if table is None:
        return None
    target = str(path)
    best: tuple[str, str] | None = None
    for m in table:
        # `>=`: of two mounts on one point, the later one (listed after) is the one on top.
        if _within(target, m.point) and (best is None or len(m.point) >= len(best[0])):
            best = (m.point, m.fstype)
    return best


_FUSE_SUPER_MAGIC = 0x65735546  # statfs(2) f_type of every FUSE mount (fuse, fuseblk)
_statfs: Any = None  # libc's statfs, or False where it cannot be asked


def _fs_magic(path: Path) -> int | None:
    """statfs(2)'s f_type for `path` (one system call), or None where it cannot be asked: a path
    that does not exist, or a platform whose `struct statfs` does not start with a long f_type."""
    global _statfs
    if _statfs is None:
        _statfs = False
        if sys.platform == "linux" and os.uname().machine in ("x86_64", "aarch64"):
            try:
                import ctypes

                _statfs = ctypes.CDLL(None, use_errno=True).statfs
            except (OSError, AttributeError):
                pass
    if _statfs is False:
        return None
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on these platforms
    if _statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value


def is_fuse(path: Path) -> bool:
    """True when `path` lies on a FUSE filesystem (gcsfuse, rclone, ...)."""
    # statfs names the filesystem that really holds the path (bind mounts and symlinks included)
    # in one system call; the mount table is read only where statfs cannot be asked.
    magic = _fs_magic(path)
    if magic is not None:
        return magic == _FUSE_SUPER_MAGIC
    found = filesystem_of(path)
    return found is not None and found[1].startswith("fuse")


def mount_points_under(root: Path | str) -> list[Path]:
    """Mount points at or below `root`, deepest first; [] when the mount table is unreadable."""
    prefix = str(root).rstrip("/")
    # A point mounted twice is listed twice: each unmount removes only the mount on top.
    points = [Path(m.point) for m in mount_table() or () if _within(m.point, prefix)]
    return sorted(points, key=lambda p: len(p.parts), reverse=True)
