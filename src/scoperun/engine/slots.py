"""Host mounts into a pooled container's slot (root only): the case, a script, read-only where asked.

A pool's folder is bind-mounted on itself and made rshared; each pooled container sees its own slot
(a sub-folder) at /workspace with rslave propagation, so a mount the host makes in the slot after
the container started appears inside it. Read-only mounts are made read-only *before* they are
attached (open_tree + mount_setattr + move_mount): a read-only remount inside the shared tree would
show `ro` on the host but stay writable in the container.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from scoperun.mounts import mount_points_under

__all__ = ["SlotError", "bind", "make_shared_root", "mount_overlay", "mounts_under", "unmount", "usable"]

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 1, 2, 4, 4096, 16384
MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 18, 1 << 19, 1 << 20
MNT_DETACH = 2
# x86_64 and aarch64 share these numbers (the new mount API came after the tables were unified).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC, _AT_RECURSIVE = 1, os.O_CLOEXEC, 0x8000
_AT_EMPTY_PATH, _MOVE_MOUNT_F_EMPTY_PATH = 0x1000, 0x4
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


class SlotError(OSError):
    """A host mount for a pooled slot failed."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise SlotError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: Path, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, os.fsencode(target),
                       fstype.encode() if fstype else None, flags, data.encode() if data else None),
           f"mount {source} on {target}")


def usable() -> str | None:
    """None when this process can make slot mounts; else why not (for doctor and the fallback)."""
    if os.geteuid() != 0:
        return "pooled slots need a root controller (host mounts); runs use fresh containers"
    return None


def make_shared_root(root: Path) -> None:
    """Bind `root` on itself and make it rshared, so mounts below it reach containers' rslave slots."""
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    _mount(str(root), root, None, MS_BIND)
    _mount(None, root, None, MS_SHARED | MS_REC)


def bind(source: Path, target: Path, *, read_only: bool) -> None:
    """Mount `source` on `target` (nosuid, nodev); read-only ones are read-only from their first instant."""
    flags = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if read_only else 0)
    fd = _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source),
                              _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC), f"open_tree {source}")
    try:
        attr = _MountAttr(attr_set=flags)
        _check(_libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                             ctypes.sizeof(attr)), f"mount_setattr {source}")
        _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH),
               f"move_mount {source} to {target}")
    finally:
        os.close(fd)


def mount_overlay(options: str, target: Path) -> None:
    """Mount a staging overlay (`lowerdir=..,upperdir=..,workdir=..`) on `target`."""
    _mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, options)


def unmount(target: Path) -> None:
    """Detach the mount on `target` (and so from every container that sees it); gone is fine."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise SlotError(err, f"umount {target}: {os.strerror(err)}")


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root` in this mount namespace, deepest first."""
    return mount_points_under(root)
