"""Adversarial suite, part 4: attacks on what people read afterwards — the audit trail and the
review views (issue 11: forged records, emptied trails, secrets in names, terminal injection).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from scoperun import Status
from scoperun.cli.main import app
from tests.integration._adversarial import Guard


def _verify(workspace: Path, *extra: str):
    return CliRunner().invoke(app, ["--workspace", str(workspace), "audit", "verify", "--json", *extra])


def test_i11_10a_forged_record_without_chain_link_fails_verify(guard: Guard, workspace: Path) -> None:
    """An attacker copies a real record, edits it to blame another script and drops the chain link: verify fails."""
    real = guard.run("print('real work')")
    assert real.status is Status.SUCCEEDED, real.stderr.text
    assert _verify(workspace).exit_code == 0
    folder = workspace / "Database" / "script_executions"
    forged = json.loads((folder / f"{real.execution_id}.json").read_text())
    forged.pop("chain")
    forged.update(execution_id="exec_20260101_000000_0badf00d", script_path="Tools/blamed.py")
    (folder / "exec_20260101_000000_0badf00d.json").write_text(json.dumps(forged))
    bad = _verify(workspace)
    assert bad.exit_code == 1, bad.output
    report = json.loads(bad.output)
    assert not report["ok"] and [f["kind"] for f in report["findings"]] == ["unchained"]


def test_i11_10b_emptied_or_moved_audit_folder_fails_verify(guard: Guard, workspace: Path, tmp_path: Path) -> None:
    """After real runs, moving the audit folder away (or emptying it) makes verify fail, not say `ok: 0 records`."""
    for _ in range(2):
        assert guard.run("print(1)").status is Status.SUCCEEDED
    folder = workspace / "Database" / "script_executions"
    shutil.move(str(folder), str(tmp_path / "elsewhere"))
    folder.mkdir()
    moved = _verify(workspace)
    assert moved.exit_code == 1, moved.output
    report = json.loads(moved.output)
    assert report["records"] == 0 and report["findings"][0]["kind"] == "deleted"
    assert "2 record(s)" in report["findings"][0]["detail"]
