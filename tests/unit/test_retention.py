"""Retention applied by gc: age, count and bytes for agent scripts, full outputs and browser artefacts;
records, running runs and symlinks untouched; hashes kept so verify and `audit show` still work."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from scoperun import ExecutionRequest, Executor, Settings
from scoperun.audit.retention import RETENTION_LOG, apply_retention
from scoperun.cli.main import app
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE

DAY = 86400.0


def _script(workspace: Path, n: int, age_days: float, size: int = 10) -> Path:
    path = workspace / "Database" / "temp_scripts" / f"exec_20261129_1913{n:02d}_abcdef{n:02d}_script.py"
    path.write_bytes(b"#" * size)
    os.utime(path, (time.time() - age_days * DAY,) * 2)
    return path


def test_age_count_and_bytes_each_remove_the_oldest(workspace: Path) -> None:
    """Age removes what is older; count keeps the newest N; bytes keeps the newest up to the size."""
    scripts = [_script(workspace, n, age_days=10 - n, size=100) for n in range(6)]  # n=0 oldest
    base = Settings(workspace=workspace, temp_scripts_max_age_days=None)
    assert apply_retention(base) == []
    apply_retention(base.model_copy(update={"temp_scripts_max_age_days": 8.5}))
    assert [p.exists() for p in scripts] == [False, False, True, True, True, True]
    apply_retention(base.model_copy(update={"temp_scripts_max_count": 3}))
    assert [p.exists() for p in scripts] == [False, False, False, True, True, True]
    apply_retention(base.model_copy(update={"temp_scripts_max_bytes": "250"}))
    assert [p.exists() for p in scripts] == [False, False, False, False, True, True]
    log = [json.loads(line) for line in (workspace / "Database" / "script_executions" / RETENTION_LOG).open()]
    assert [e["path"].rsplit("/", 1)[1][:29] for e in log] == [
        f"exec_20261129_1913{n:02d}_abcdef{n:02d}" for n in range(4)]
    assert all(len(e["sha256"]) == 64 and e["bytes"] == 100 and e["reason"] for e in log)


def test_dry_run_changes_nothing(workspace: Path) -> None:
    """`dry_run` says what would go and leaves every file and the log alone."""
    old = _script(workspace, 1, age_days=60)
    said = apply_retention(Settings(workspace=workspace), dry_run=True)
    assert said and said[0].startswith("would remove") and old.exists()
    assert not (workspace / "Database" / "script_executions" / RETENTION_LOG).exists()


def test_running_runs_records_and_symlinks_are_never_touched(workspace: Path, tmp_path: Path) -> None:
    """A running run's script stays; records stay; a symlink named like a script is neither followed nor removed."""
    running = _script(workspace, 2, age_days=60)
    audit = workspace / "Database" / "script_executions"
    (audit / "exec_20261129_191302_abcdef02.json").write_text(json.dumps(
        {"execution_id": "exec_20261129_191302_abcdef02", "status": "running"}))
    os.utime(audit / "exec_20261129_191302_abcdef02.json", (time.time() - 90 * DAY,) * 2)
    outside = tmp_path / "outside.txt"
    outside.write_text("not scoperun's\n")
    link = workspace / "Database" / "temp_scripts" / "exec_20261129_191303_abcdef03_x.py"
    link.symlink_to(outside)
    os.utime(link, (time.time() - 90 * DAY,) * 2, follow_symlinks=False)
    apply_retention(Settings(workspace=workspace, temp_scripts_max_count=0, full_outputs_max_count=0))
    assert running.exists() and link.is_symlink() and outside.read_text() == "not scoperun's\n"
    assert (audit / "exec_20261129_191302_abcdef02.json").exists()


def test_browser_artefacts_go_by_run_folder_only(workspace: Path) -> None:
    """Browser folders named by a run id go whole; other case files and odd folders stay."""
    browser = workspace / "projects" / CASE / "browser"
    run = browser / "exec_20261129_191304_abcdef04"
    run.mkdir(parents=True)
    (run / "page.png").write_bytes(b"\x89PNG")
    (browser / "notes-by-a-lawyer").mkdir()
    os.utime(run, (time.time() - 90 * DAY,) * 2)
    apply_retention(Settings(workspace=workspace, browser_artifacts_max_age_days=30))
    assert not run.exists() and (browser / "notes-by-a-lawyer").is_dir()
    assert (workspace / "projects" / CASE / "notes" / "intake.txt").exists()


def test_removed_outputs_keep_verify_green_and_show_says_why(workspace: Path) -> None:
    """After retention removes a run's full output, `audit verify` passes and `audit show` gives its sha256."""
    settings = Settings(workspace=workspace, timeout=60, network="none")
    ex = Executor(settings, backend=FakeBackend(script=lambda spec: FakeRun(stdout=b"x" * 5000 + b"\n")))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE))
    ex.close()
    assert result.stdout.full_output
    said = apply_retention(settings.model_copy(update={"full_outputs_max_count": 0}))
    assert said and not (workspace / result.stdout.full_output).exists()
    runner = CliRunner()
    verify = runner.invoke(app, ["--workspace", str(workspace), "audit", "verify"])
    assert verify.exit_code == 0, verify.output
    shown = runner.invoke(app, ["--workspace", str(workspace), "audit", "show", result.execution_id])
    text = " ".join(shown.stdout.split())
    assert "removed by retention" in text and "sha256" in text and "more than 0 kept" in text
