"""A staging folder's state: fsynced whenever a person may act on it, not while the run is only running."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Executor, Settings
from scoperun.changes.overlay import StagingArea
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def _state_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each fsync of a staging state file (by the name its descriptor has)."""
    import scoperun.atomicio as atomicio

    synced: list[str] = []
    real = atomicio.os.fsync

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".state.json." in name:
            synced.append(name)
        real(fd)

    monkeypatch.setattr(atomicio.os, "fsync", fsync)
    return synced


def test_a_run_that_changed_nothing_fsyncs_no_staging_state(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'running' state is written (readable at once) but not fsynced; the empty staging folder goes."""
    synced = _state_fsyncs(monkeypatch)
    seen: list[bytes] = []

    def look(spec):
        upper = spec.mounts[0].upper
        seen.append((upper.parent / "state.json").read_bytes())
        return FakeRun()

    result = Executor(settings, backend=FakeBackend(script=look)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert b'"phase":"running"' in seen[0]
    assert synced == []
    assert result.changes is not None and result.changes.status.value == "empty"


def test_a_change_set_kept_for_review_is_fsynced(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A staged change set waiting for a person is in a state file that reached the disk."""
    synced = _state_fsyncs(monkeypatch)
    run = FakeRun(writes={"out/report.txt": b"report"})
    result = Executor(settings, backend=FakeBackend(script=lambda spec: run)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE, apply="never"))
    assert result.changes is not None and result.changes.status.value == "staged"
    assert len(synced) >= 1
    state = Path(settings.staging_dir) / result.execution_id / "state.json"
    assert b'"phase":"staged"' in state.read_bytes()


@pytest.mark.parametrize("content", [b"", b'{"execution_id": "exec_2'])
def test_gc_removes_a_staging_folder_whose_unsynced_state_a_crash_lost(settings: Settings, content: bytes) -> None:
    """A state file a crash left empty or cut is a run that died 'running': gc removes its folder once stale."""
    from scoperun.changes import gc_staging

    execution_id = "exec_20240101_000000_0badc0de"
    area = StagingArea.create(Path(settings.staging_dir), execution_id, settings.workspace / "projects" / CASE,
                              uid=os.getuid(), gid=os.getgid())
    area.state_file.write_bytes(content)
    old = 1_000_000_000
    os.utime(area.root, (old, old))
    assert gc_staging(settings, timedelta(hours=1), engine=FakeBackend()) == [execution_id]
    assert not area.root.exists()


def test_an_empty_staging_folder_goes_off_the_callers_path_but_before_the_result(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that changed nothing: its staging folder is removed on a helper thread, and is gone when run returns."""
    import threading

    import scoperun.changes.tracker as tracker

    removed_by: list[str] = []
    real = tracker.remove_tree

    def remove(path, **kwargs):
        removed_by.append(threading.current_thread().name)
        real(path, **kwargs)

    monkeypatch.setattr(tracker, "remove_tree", remove)
    result = Executor(settings, backend=FakeBackend()).run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.changes is not None and result.changes.status.value == "empty"
    assert len(removed_by) == 1 and removed_by[0] != threading.current_thread().name
    assert not (Path(settings.staging_dir) / result.execution_id).exists()


def test_an_engine_failure_leaves_no_empty_staging_folder(settings: Settings) -> None:
    """When the container never started, the run's empty staging folder is removed all the same."""
    from scoperun.errors import EngineError

    def refuse(spec):
        raise EngineError("the engine said no (test)")

    result = Executor(settings, backend=FakeBackend(script=refuse)).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert result.status.value == "error" and "the engine said no" in result.message
    assert not (Path(settings.staging_dir) / result.execution_id).exists()
