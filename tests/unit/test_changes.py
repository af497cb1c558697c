"""Change-set logic without an engine: models, summaries, ordering, safe paths, listings, the pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from scoperun import ExecutionRequest, Executor, ScopeError, Settings, Status
from scoperun.changes.apply import plan
from scoperun.changes.safefs import CaseRoot, check_rel
from scoperun.changes.snapshot import diff_listings, make_change, scan
from scoperun.changeset import ChangeAction, compute_totals, decode_name, encode_name, summarize
from scoperun.engine.base import OverlayMount
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def test_names_round_trip_as_text_or_base64() -> None:
    """UTF-8 names stay text; other bytes get a readable rendering plus exact base64 bytes."""
    assert encode_name("Akte/Überweisung.pdf".encode()) == ("Akte/Überweisung.pdf", None)
    text, b64 = encode_name(b"caf\xe9")
    assert text == "caf\\xe9" and b64 is not None
    assert decode_name(text, b64) == b"caf\xe9"


def test_summary_counts_files_folders_links_and_renames() -> None:
    """The one-line summary reads like '3 files added, 1 modified' and counts renames once."""
    entries = [make_change(b"a", ChangeAction.ADDED, "file", size_after=3),
               make_change(b"b", ChangeAction.ADDED, "file", size_after=4, renamed_from="old"),
               make_change(b"old", ChangeAction.DELETED, "file", size_before=4),
               make_change(b"c", ChangeAction.ADDED, "file", size_after=1),
               make_change(b"m", ChangeAction.MODIFIED, "file", size_before=1, size_after=2),
               make_change(b"d", ChangeAction.ADDED, "dir"),
               make_change(b"l", ChangeAction.ADDED, "symlink", target=b"a")]
    totals = compute_totals(entries)
    assert summarize(totals) == "2 files added, 1 modified, 1 renamed, 1 folder added, 1 symlink changed"
    assert totals.bytes_added == 3 + 4 + 1 + 2 and totals.bytes_removed == 4 + 1
    assert summarize(compute_totals([])) == "no changes"


def test_plan_deletes_deepest_first_and_creates_shallowest_first() -> None:
    """Apply order: deletions from the leaves up, then folders before their files, hard links last."""
    entries = [make_change(b"x/y/f", ChangeAction.ADDED, "file"), make_change(b"x", ChangeAction.ADDED, "dir"),
               make_change(b"x/y", ChangeAction.ADDED, "dir"), make_change(b"g", ChangeAction.DELETED, "dir"),
               make_change(b"g/h", ChangeAction.DELETED, "file"),
               make_change(b"k", ChangeAction.ADDED, "file", hardlink_to="x/y/f")]
    assert [c.path for c in plan(entries)] == ["g/h", "g", "x", "x/y", "x/y/f", "k"]


@pytest.mark.parametrize("bad", [b"../x", b"/etc/passwd", b"a/../../b", b"a//b", b"./a", b"", b"a\x00b"])
def test_paths_that_could_leave_the_case_are_refused(bad: bytes) -> None:
    """Absolute, `..`, empty, `.` and NUL-bearing paths are refused before any file operation."""
    with pytest.raises(ScopeError, match="outside-case"):
        check_rel(bad)


def test_case_root_never_writes_through_a_symlinked_folder(tmp_path: Path) -> None:
    """A folder of the case replaced by a symlink to elsewhere is refused, not followed."""
    case, outside = tmp_path / "case", tmp_path / "outside"
    case.mkdir()
    outside.mkdir()
    (case / "sub").symlink_to(outside)
    with CaseRoot(case) as root, pytest.raises(ScopeError, match="symlink"), open(os.devnull, "rb") as src:
        root.write_file(b"sub/x", src.fileno(), mode=0o644)
    assert list(outside.iterdir()) == []


def test_direct_listing_diff_finds_each_kind_of_change(tmp_path: Path) -> None:
    """Before/after lstat listings give added, modified, deleted, renamed (same inode) and mode changes."""
    case = tmp_path / "case"
    case.mkdir()
    (case / "m.txt").write_text("1")
    (case / "d.txt").write_text("gone")
    (case / "r.txt").write_text("moved")
    (case / "x.sh").write_text("echo")
    (case / "link").symlink_to("/nowhere")
    before = scan(case)
    (case / "m.txt").write_text("22")
    (case / "d.txt").unlink()
    (case / "r.txt").rename(case / "r2.txt")
    (case / "x.sh").chmod(0o700)
    (case / "new").mkdir()
    with CaseRoot(case) as root:
        changes = {(c.path, c.action.value): c for c in diff_listings(before, scan(case), root)}
    assert set(changes) == {("m.txt", "modified"), ("d.txt", "deleted"), ("r.txt", "deleted"), ("r2.txt", "added"),
                            ("x.sh", "mode_changed"), ("new", "added")}
    assert changes[("r2.txt", "added")].renamed_from == "r.txt"
    assert changes[("m.txt", "modified")].size_after == 2


def test_read_only_alias_and_contradiction() -> None:
    """read_only=True means write_mode read-only; read_only with another write mode is refused."""
    assert ExecutionRequest(script="Tools/x.py", case=CASE, write_mode="read-only").read_only
    with pytest.raises(ValidationError, match="contradicts"):
        ExecutionRequest(script="Tools/x.py", case=CASE, read_only=True, write_mode="direct")


def test_staged_is_the_default_and_mounts_an_overlay(settings: Settings, workspace: Path) -> None:
    """By default the case is an overlay whose lower is the case and upper is under staging_dir."""
    backend = FakeBackend()
    result = Executor(settings, backend=backend).run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    mount = backend.specs[0].mounts[0]
    assert isinstance(mount, OverlayMount) and mount.lower == workspace / "projects" / CASE
    assert Path(settings.staging_dir) in mount.upper.parents
    assert result.write_mode == "staged" and result.changes.status.value == "empty"
    assert not (Path(settings.staging_dir) / result.execution_id).exists()  # nothing staged, nothing kept


@pytest.mark.parametrize(("run", "applied"), [(FakeRun(exit_code=0), True), (FakeRun(exit_code=1), False),
                                              (FakeRun(exit_code=137, timed_out=True), False)])
def test_on_success_applies_only_succeeded_runs(settings: Settings, workspace: Path, run: FakeRun,
                                                 applied: bool) -> None:
    """With apply on-success a staged write reaches the case only when the run succeeded."""
    run.writes = {"out/report.txt": b"report"}
    result = Executor(settings, backend=FakeBackend(script=lambda spec: run)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE))
    target = workspace / "projects" / CASE / "out" / "report.txt"
    assert target.exists() is applied
    assert result.changes.status.value == ("applied" if applied else "staged")
    assert result.changes.summary == "1 file added, 1 folder added"
    assert (result.status is Status.SUCCEEDED) is applied


def test_unusable_staging_dir_rejects_the_run(settings: Settings, tmp_path: Path) -> None:
    """A staging_dir overlay options cannot carry is refused before anything runs, saying what to do."""
    bad = settings.model_copy(update={"staging_dir": tmp_path / "a,b"})
    backend = FakeBackend()
    result = Executor(bad, backend=backend).run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.status is Status.REJECTED and "staging_dir" in result.message and backend.specs == []


def test_listing_tolerates_files_vanishing_mid_scan(tmp_path: Path, monkeypatch) -> None:
    """A file or folder removed while the case is listed (a concurrent apply's temp file) is skipped, not fatal."""
    import os as real_os

    from scoperun.changes import snapshot

    (tmp_path / "keep.txt").write_text("k")
    (tmp_path / ".apply.tmp").write_text("t")
    (tmp_path / "sub").mkdir()
    original = real_os.scandir

    def racing_scandir(path):
        entries = list(original(path))
        if (tmp_path / ".apply.tmp").exists():
            (tmp_path / ".apply.tmp").unlink()  # renamed away by the other run after we read the folder
        if real_os.path.isdir(tmp_path / "sub"):
            (tmp_path / "sub").rmdir()
        return _Listed(entries)

    class _Listed(list):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(snapshot.os, "scandir", racing_scandir)
    listing = snapshot.scan(tmp_path)
    assert set(listing) == {b"keep.txt"}


def test_gc_removes_only_stale_staging_volumes_of_this_staging_root(settings: Settings) -> None:
    """gc_staging asks the engine contract for managed volumes and removes those whose staging folder is gone."""
    from datetime import timedelta

    from scoperun.changes import gc_staging
    from scoperun.engine.base import MANAGED_LABEL, VolumeInfo

    root = Path(settings.staging_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "exec_live" / "upper").mkdir(parents=True)
    backend = FakeBackend()
    for name, upper in {"gone": root / "exec_gone" / "upper", "live": root / "exec_live" / "upper",
                        "busy": root / "exec_busy" / "upper", "other": Path("/elsewhere/exec_x/upper")}.items():
        backend.engine_volumes[name] = VolumeInfo(name, {MANAGED_LABEL: "1", "org.scoperun.staging-upper": str(upper)})
    backend.engine_volumes["foreign"] = VolumeInfo("foreign", {"org.scoperun.staging-upper": str(root / "e" / "upper")})
    backend.volumes_in_use.add("busy")
    assert gc_staging(settings, timedelta(days=1), engine=backend) == []
    assert sorted(backend.engine_volumes) == ["busy", "foreign", "live", "other"]


def test_fake_backend_fulfils_the_housekeeping_contract() -> None:
    """FakeBackend implements EngineHousekeeping, so unit tests of ops, doctor and changes can use it."""
    from scoperun.engine.base import EngineHousekeeping

    assert isinstance(FakeBackend(), EngineHousekeeping)
