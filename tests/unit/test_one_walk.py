"""A direct run walks its case twice, not three times: the listing after the run feeds the hazard scan."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Executor, Settings
from scoperun.changes import snapshot
from scoperun.fswalk import WalkReport
from scoperun.safety import hazards
from scoperun.safety.hazards import HazardScanner, scan_case
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def _plant(case: Path, outside: Path) -> None:
    """Every kind of hazard, and plain files around them."""
    (case / "sub" / "deeper").mkdir(parents=True)
    for i in range(30):
        (case / "sub" / f"f{i}.txt").write_text(f"{i}\n")
    (case / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(case / "tool", 0o6755)
    os.symlink("/etc/passwd", case / "sub" / "passwd")
    os.symlink("../x", case / "sub" / "deeper" / "up")
    os.symlink("f1.txt", case / "sub" / "fine")
    os.mkfifo(case / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(case / "sock"))
    sock.close()
    os.link(outside, case / "stolen.txt")
    os.link(case / "sub" / "f2.txt", case / "sub" / "deeper" / "f2-again.txt")


def _fed_by_listing(case: Path, *, limit: int = 200_000, changed: set[bytes] | None = None) -> hazards.HazardReport:
    scanner = HazardScanner(case, limit=limit)
    walked = WalkReport()
    snapshot.scan(case, walked, visit=scanner.visit)
    scanner.walk_ended(walked)
    return scanner.report(changed)


@pytest.mark.parametrize("limit", [200_000, 7])
def test_a_scan_fed_by_the_listing_walk_equals_a_scan_of_its_own(tmp_path: Path, limit: int) -> None:
    """The same hazards, notes, counts and defusing, whole or cut at `limit` entries, either way."""
    outside = tmp_path / "outside.txt"
    outside.write_text("elsewhere\n")
    one, two = tmp_path / "one", tmp_path / "two"
    for case in (one, two):
        case.mkdir()
        _plant(case, outside)
    changed = {b"tool", b"sub/passwd"}
    own = scan_case(one, limit=limit, changed=changed)
    fed = _fed_by_listing(two, limit=limit, changed=changed)
    assert [h.model_dump() for h in fed.as_list()] == [h.model_dump() for h in own.as_list()]
    assert (fed.total, fed.entries, fed.truncated) == (own.total, own.entries, own.truncated)
    assert fed.truncated is (limit == 7)
    if limit > 7:
        assert {h.kind for h in fed.hazards} == {"setuid", "setgid", "symlink-outside", "fifo", "socket", "hardlink"}
        assert stat.S_IMODE((two / "tool").stat().st_mode) == 0o755  # defused through the shared walk too


def _count_walks(monkeypatch: pytest.MonkeyPatch, case: Path) -> list[str]:
    """Record which module walked `case` each time it was walked."""
    seen: list[str] = []
    for module in (snapshot, hazards):
        real = module.walk

        def counting(root, *args, _real=real, _name=module.__name__, **kwargs):
            if os.fsencode(root) == os.fsencode(case):
                seen.append(_name)
            return _real(root, *args, **kwargs)

        monkeypatch.setattr(module, "walk", counting)
    return seen


def test_a_direct_run_walks_its_case_twice_and_still_finds_changes_and_hazards(
        settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before and after the run, nothing more; the change set and the hazards are those of three walks."""
    case = workspace / "projects" / CASE
    walks = _count_walks(monkeypatch, case)

    def plant(spec):
        (case / "notes" / "intake.txt").write_text("rewritten\n")
        (case / "new.txt").write_text("new\n")
        (case / "tool").write_bytes(b"#!/bin/sh\n")
        os.chmod(case / "tool", 0o4755)
        os.symlink("/etc/shadow", case / "shadow")
        return FakeRun()

    result = Executor(settings, backend=FakeBackend(script=plant)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE, write_mode="direct"))
    assert walks == ["scoperun.changes.snapshot", "scoperun.changes.snapshot"]
    assert result.changes is not None
    assert {(c.path, c.action.value) for c in result.changes.entries} == {
        ("notes/intake.txt", "modified"), ("new.txt", "added"), ("tool", "added"), ("shadow", "added")}
    found = {(h.kind, h.path, h.introduced, h.neutralised) for h in result.hazards}
    assert found == {("setuid", "tool", True, True), ("symlink-outside", "shadow", True, False)}
    assert stat.S_IMODE((case / "tool").stat().st_mode) == 0o755
    assert "the run left hazards in the case" in result.message


def test_when_the_listing_walk_fails_the_hazard_scan_walks_on_its_own(
        settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change set says it could not be computed; the hazards are still found, by a walk of their own."""
    case = workspace / "projects" / CASE
    real_scan = snapshot.scan

    def failing_after(root, report=None, *, deadline=None, visit=None):
        if visit is not None:  # the walk after the run
            raise PermissionError(13, "denied for the test")
        return real_scan(root, report, deadline=deadline)

    monkeypatch.setattr("scoperun.changes.tracker.scan", failing_after)
    walks = _count_walks(monkeypatch, case)

    def plant(spec):
        os.symlink("/etc/shadow", case / "shadow")
        return FakeRun()

    result = Executor(settings, backend=FakeBackend(script=plant)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE, write_mode="direct"))
    assert result.changes is not None and "could not be computed" in result.changes.note
    assert walks == ["scoperun.changes.snapshot", "scoperun.safety.hazards"]
    assert [(h.kind, h.path, h.introduced) for h in result.hazards] == [("symlink-outside", "shadow", None)]  # unknown
