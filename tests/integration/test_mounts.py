"""The mount table (psutil) on real mounts: odd names, stacked mounts and overlays, as pool and staging rely on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoperun.engine import slots
from scoperun.mounts import filesystem_of, mount_points_under, mount_table
from tests.integration.conftest import unavailable


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A folder to mount under (needs root); every mount under it is removed afterwards."""
    if slots.usable() is not None:
        unavailable("mounting needs root")
    yield tmp_path
    for _ in range(5):  # a mount hidden under another is only reachable once that one is gone
        for point in mount_points_under(tmp_path):
            slots.unmount(point)


def test_mount_points_with_spaces_and_stacked_mounts(root: Path) -> None:
    """A mount point with a space is decoded; a point mounted twice is listed twice, deepest first."""
    source, target = root / "src", root / "a b" / "deep dir"
    (source / "deep dir").mkdir(parents=True)
    (root / "a b").mkdir()
    slots.bind(source, root / "a b", read_only=False)  # so "a b/deep dir" is source/deep dir
    slots.bind(source, target, read_only=True)
    slots.bind(source, target, read_only=True)
    assert mount_points_under(root) == [target, target, root / "a b"]
    assert filesystem_of(target / "file")[0] == str(target)  # type: ignore[index]
    for _ in range(3):
        slots.unmount(mount_points_under(root)[0])
    assert mount_points_under(root) == []


def test_an_overlay_shows_its_upper_folder_in_its_options(root: Path) -> None:
    """An overlay's options (what staging's is_mounted looks for) carry its upperdir."""
    for name in ("lower", "upper", "work", "merged"):
        (root / name).mkdir()
    slots.mount_overlay(f"lowerdir={root / 'lower'},upperdir={root / 'upper'},workdir={root / 'work'}", root / "merged")
    found = [m for m in mount_table() or () if m.point == str(root / "merged")]
    assert [m.fstype for m in found] == ["overlay"] and f"upperdir={root / 'upper'}," in found[0].options + ","
    assert os.path.ismount(root / "merged")


@pytest.mark.parametrize("name", ["plain", "tab\there"])
def test_a_staging_areas_overlay_is_seen_mounted_and_then_unmounted(root: Path, name: str) -> None:
    """is_mounted reads /proc/self/mounts itself: it sees the overlay of this upper (odd characters the kernel
    escapes included), not that of another upper whose name starts the same, and not once it is unmounted."""
    from scoperun.changes.overlay import StagingArea

    area, other = StagingArea(root / name), StagingArea(root / f"{name}-other")
    for a in (area, other):
        for sub in ("lower", "upper", "work"):
            (a.root / sub).mkdir(parents=True)
    (root / "merged").mkdir()
    assert not area.is_mounted()
    slots.mount_overlay(f"lowerdir={other.root / 'lower'},upperdir={other.upper},workdir={other.work}", root / "merged")
    assert other.is_mounted() and not area.is_mounted()
    slots.unmount(root / "merged")
    slots.mount_overlay(f"lowerdir={area.root / 'lower'},upperdir={area.upper},workdir={area.work}", root / "merged")
    assert area.is_mounted() and not other.is_mounted()
    slots.unmount(root / "merged")
    assert not area.is_mounted()
