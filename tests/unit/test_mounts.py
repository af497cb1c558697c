"""The mount table comes from psutil: which filesystem holds a path, and which mount points lie under a folder."""

from __future__ import annotations

from pathlib import Path

from scoperun.mounts import Mount, filesystem_of, is_fuse, mount_points_under, mount_table


def _by_hand() -> list[tuple[str, str]]:
    """(mount point, type) of /proc/self/mounts, parsed the way scoperun did before psutil."""
    rows = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        rows.append((parts[1].replace("\\040", " "), parts[2]))
    return rows


def test_mount_table_matches_the_kernels() -> None:
    """psutil lists the very mounts (point and type, in order) that /proc/self/mounts holds."""
    table = mount_table()
    assert table is not None and all(isinstance(m, Mount) for m in table)
    assert [(m.point, m.fstype) for m in table] == _by_hand()
    assert any(m.point == "/proc" and m.fstype == "proc" and m.options for m in table)


def test_filesystem_of_picks_the_deepest_mount(tmp_path: Path) -> None:
    """A path's filesystem is that of the longest mount point above it; /proc/self is on proc."""
    assert filesystem_of(Path("/proc/self")) == ("/proc", "proc")
    point, fstype = filesystem_of(tmp_path) or ("", "")
    assert str(tmp_path) == point or str(tmp_path).startswith(point.rstrip("/") + "/")
    assert (point, fstype) in _by_hand()
    assert not is_fuse(tmp_path)


def test_mount_points_under_lists_deepest_first(tmp_path: Path) -> None:
    """Mount points at or under a folder come deepest first; a plain folder holds none."""
    under_proc = mount_points_under("/proc")
    assert Path("/proc") in under_proc
    assert [len(p.parts) for p in under_proc] == sorted((len(p.parts) for p in under_proc), reverse=True)
    assert mount_points_under(tmp_path) == []
    assert Path("/") in mount_points_under("/")


def test_is_fuse_by_statfs_agrees_with_the_mount_table(tmp_path: Path, monkeypatch) -> None:
    """For every mount point statfs can reach, is_fuse says what the mount table's type says; where
    statfs cannot be asked (a missing path), the table answers."""
    import scoperun.mounts as mounts

    for m in mount_table() or ():
        point = Path(m.point)
        if mounts._fs_magic(point) is None:
            continue
        fstype = (filesystem_of(point) or ("", ""))[1]
        assert is_fuse(point) == fstype.startswith("fuse"), m
    assert mounts._fs_magic(tmp_path / "missing") is None and not is_fuse(tmp_path / "missing")
    monkeypatch.setattr(mounts, "filesystem_of", lambda path: ("/x", "fuse.rclone"))
    assert is_fuse(tmp_path / "missing")  # the table's answer
    assert not is_fuse(tmp_path)  # statfs's answer wins where it can be asked
