"""`scoperun changes | apply | discard | rollback` as a user types them, against the real engine."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CASE
from tests.integration.conftest import read_record
from tests.integration.test_cli import scoperun


def test_review_apply_and_rollback_from_the_shell(workspace: Path, docker_client) -> None:
    """A run kept for review shows a text diff, applies with `apply`, undoes with `rollback`; gc and discard work."""
    intake = workspace / "projects" / CASE / "notes" / "intake.txt"
    original = intake.read_text()
    (workspace / "Tools" / "edit.py").write_text("open('notes/intake.txt', 'a').write('added by the run\\n')\n")
    run = scoperun(workspace, "run", "Tools/edit.py", "--case", CASE, "--apply", "never", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    run_id = result["execution_id"]
    assert result["changes"]["status"] == "staged" and result["changes"]["summary"] == "1 file modified"
    assert intake.read_text() == original

    shown = scoperun(workspace, "changes", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "staged" in shown.stdout and "notes/intake.txt" in shown.stdout
    assert "+added by the run" in shown.stdout  # the text diff

    applied = scoperun(workspace, "apply", run_id)
    assert applied.returncode == 0, applied.stderr
    assert intake.read_text() == original + "added by the run\n"
    again = scoperun(workspace, "apply", run_id)
    assert again.returncode == 2 and "applied" in again.stderr

    intake.write_text("edited by a person\n")
    refused = scoperun(workspace, "rollback", run_id)
    assert refused.returncode == 1 and "notes/intake.txt" in refused.stderr
    forced = scoperun(workspace, "rollback", run_id, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["status"] == "rolled_back" and intake.read_text() == original

    other = json.loads(scoperun(workspace, "run", "Tools/edit.py", "--case", CASE, "--apply", "never",
                                "--json").stdout)["execution_id"]
    assert scoperun(workspace, "discard", other).returncode == 0
    assert intake.read_text() == original
    gc = scoperun(workspace, "changes", "gc", "--older-than", "0", "--json")
    assert gc.returncode == 0 and set(json.loads(gc.stdout)["removed"]) == {run_id, other}
    events = read_record(workspace, run_id)["events"]
    assert [e["event"] for e in events] == ["applied", "rolled_back"]
