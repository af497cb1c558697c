"""Which filesystem holds a path, from /proc/mounts (the workspace may be a gcsfuse bucket)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["filesystem_of", "is_fuse"]


def filesystem_of(path: Path) -> tuple[str, str] | None:
    """The (mount point, filesystem type) holding `path`, or None when /proc/mounts is unreadable."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path)
    best: tuple[str, str] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > len(best[0])):
            best = (mount_point, parts[2])
    return best


def is_fuse(path: Path) -> bool:
    """True when `path` lies on a FUSE filesystem (gcsfuse, rclone, ...)."""
    found = filesystem_of(path)
    return found is not None and found[1].startswith("fuse")
