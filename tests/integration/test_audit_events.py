"""The audit trail after a run: apply, discard and rollback on the real engine keep `audit verify` green,
and editing, deleting or re-ordering a record, an event or the event log turns it red."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from scoperun import ExecutionRequest, Status
from scoperun.audit.log import AuditLog
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration.conftest import read_record
from tests.integration.test_cli import scoperun


def _event_files(audit: Path) -> list[Path]:
    """The event log's files, in chain order."""
    return sorted((audit / "events").glob("*/*.json"), key=lambda p: json.loads(p.read_text())["chain"]["seq"])


def _edit(path: Path, change: Callable[[dict], None]) -> None:
    entry = json.loads(path.read_text())
    change(entry)
    path.write_text(json.dumps(entry, indent=2))


def test_verify_is_green_after_apply_discard_rollback_and_red_after_tampering(
        executor: Executor, workspace: Path) -> None:
    """Staged runs applied, discarded and rolled back verify ok; each kind of tampering with records or events is found."""
    tool = workspace / "Tools" / "note.py"
    tool.write_text("import sys\nopen(sys.argv[1], 'w').write('written by the run\\n')\n")
    runs = [executor.run(ExecutionRequest(script="Tools/note.py", args=[f"note-{i}.txt"], case=CASE, apply="never"))
            for i in range(2)]
    assert all(r.status is Status.SUCCEEDED and r.changes and r.changes.status.value == "staged" for r in runs)
    applied, dropped = (r.execution_id for r in runs)
    assert scoperun(workspace, "apply", applied).returncode == 0
    assert scoperun(workspace, "discard", dropped).returncode == 0
    assert scoperun(workspace, "rollback", applied).returncode == 0

    green = scoperun(workspace, "audit", "verify", "--json")
    assert green.returncode == 0, green.stdout + green.stderr
    report = json.loads(green.stdout)
    assert report["ok"] and report["records"] == 2 and report["events"] == 3 and not report["findings"]
    assert [e["event"] for e in read_record(workspace, applied)["events"]] == ["applied", "rolled_back"]
    assert read_record(workspace, dropped)["changes"]["status"] == "discarded"

    audit_dir = workspace / "Database" / "script_executions"
    audit = AuditLog.from_settings(executor.settings, workspace.resolve())
    pristine = {p: p.read_bytes() for p in audit_dir.rglob("*.json")}

    def restore() -> None:
        shutil.rmtree(audit_dir / "events", ignore_errors=True)
        for path, data in pristine.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        assert audit.verify().ok

    def kinds() -> set[str]:
        report = audit.verify()
        assert not report.ok
        return {f.kind for f in report.findings}

    _edit(audit_dir / f"{applied}.json", lambda r: r.update(exit_code=1))
    assert kinds() == {"modified"}
    restore()
    _edit(_event_files(audit_dir)[0], lambda e: e.update(by="someone else"))
    assert kinds() == {"modified"}
    restore()
    _event_files(audit_dir)[1].unlink()
    assert kinds() == {"deleted"}
    restore()
    first, second = _event_files(audit_dir)[:2]
    seqs = [json.loads(p.read_text())["chain"]["seq"] for p in (first, second)]
    _edit(first, lambda e: e["chain"].update(seq=seqs[1]))
    _edit(second, lambda e: e["chain"].update(seq=seqs[0]))
    assert kinds() == {"reordered"}
    restore()
    shutil.rmtree(audit_dir / "events")
    assert kinds() == {"deleted"}
    red = scoperun(workspace, "audit", "verify")
    assert red.returncode == 1 and "deleted" in red.stdout
    restore()
