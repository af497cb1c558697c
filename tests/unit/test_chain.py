"""Tamper evidence: the host's hash chain over finished records, and `audit verify` finding each kind of tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scoperun import ExecutionRequest, Executor, Settings
from scoperun.audit.chain import HostChain, VerifyReport, verify_records
from scoperun.audit.index import read_json_file
from scoperun.audit.log import AuditLog
from scoperun.audit.state import state_dir
from scoperun.cli.main import app
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE


def audit_dir(workspace: Path) -> Path:
    return workspace / "Database" / "script_executions"


def verify(settings: Settings, workspace: Path) -> VerifyReport:
    directory = audit_dir(workspace)
    loaded = [(p.stem, read_json_file(p)) for p in sorted(directory.glob("*.json"))]
    head = HostChain(state_dir(settings), directory.resolve()).head()
    return verify_records(loaded, heads=[head] if head else [])


def run_many(settings: Settings, n: int, *, threads: int = 1) -> list[str]:
    ex = Executor(settings, backend=FakeBackend(script=lambda spec: FakeRun(stdout=b"ok\n")))
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda _: ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE)), range(n)))
    return [r.execution_id for r in results]


def by_seq(workspace: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in audit_dir(workspace).glob("*.json")]
    return sorted(records, key=lambda r: r["chain"]["seq"])


def rewrite(workspace: Path, record: dict) -> None:
    (audit_dir(workspace) / f"{record['execution_id']}.json").write_text(json.dumps(record, indent=2))


def test_finished_records_form_one_valid_chain(settings: Settings, workspace: Path) -> None:
    """Each finished record links to the previous one's sha256; verify finds nothing wrong."""
    run_many(settings, 5)
    records = by_seq(workspace)
    assert [r["chain"]["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["chain"]["prev_sha256"] == "0" * 64
    assert all(r["chain"]["prev_sha256"] != "0" * 64 for r in records[1:])
    report = verify(settings, workspace)
    assert report.ok and report.chained == 5 and not report.findings


def test_concurrent_threads_keep_the_chain_valid(settings: Settings, workspace: Path) -> None:
    """Forty runs on eight threads of one process produce one gap-free, valid chain."""
    settings = settings.model_copy(update={"max_concurrent": 8})
    run_many(settings, 40, threads=8)
    assert [r["chain"]["seq"] for r in by_seq(workspace)] == list(range(1, 41))
    assert verify(settings, workspace).ok


def test_concurrent_processes_keep_the_chain_valid(settings: Settings, workspace: Path) -> None:
    """Three scoperun processes writing at once on one host keep one gap-free, valid chain."""
    code = (
        "import sys\nfrom scoperun import Settings, ExecutionRequest, Executor\n"
        "from scoperun.testing import FakeBackend\n"
        f"ex = Executor(Settings(workspace={str(workspace)!r}), backend=FakeBackend())\n"
        f"for _ in range(15): ex.run(ExecutionRequest(script='Tools/hello.py', case={CASE!r}))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy()) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    records = by_seq(workspace)
    assert [r["chain"]["seq"] for r in records] == list(range(1, 46))
    assert len({r["pid"] for r in records}) == 3
    assert verify(settings, workspace).ok


def test_modified_record_is_found(settings: Settings, workspace: Path) -> None:
    """Changing a field of a chained record (here its exit code) is reported as modified."""
    run_many(settings, 4)
    victim = by_seq(workspace)[1]
    victim["exit_code"] = 0 if victim["exit_code"] else 1
    rewrite(workspace, victim)
    report = verify(settings, workspace)
    assert not report.ok
    assert [(f.kind, f.execution_id) for f in report.findings] == [("modified", victim["execution_id"])]


def test_modified_newest_record_is_found_through_the_head(settings: Settings, workspace: Path) -> None:
    """The newest record has no successor; the host's chain head still shows it was changed."""
    run_many(settings, 3)
    newest = by_seq(workspace)[-1]
    newest["message"] = "all fine, nothing to see"
    rewrite(workspace, newest)
    report = verify(settings, workspace)
    assert [(f.kind, f.execution_id) for f in report.findings] == [("modified", newest["execution_id"])]


def test_deleted_records_are_found(settings: Settings, workspace: Path) -> None:
    """Deleting a middle record and the newest record are both reported as deleted positions."""
    run_many(settings, 5)
    records = by_seq(workspace)
    for r in (records[2], records[4]):
        (audit_dir(workspace) / f"{r['execution_id']}.json").unlink()
    report = verify(settings, workspace)
    assert not report.ok
    assert sorted((f.kind, f.seq) for f in report.findings) == [("deleted", 3), ("deleted", 5)]


def test_reordered_records_are_found(settings: Settings, workspace: Path) -> None:
    """Swapping two records' chain positions is reported as re-ordering, not as a deletion."""
    run_many(settings, 5)
    records = by_seq(workspace)
    a, b = records[1], records[2]
    a["chain"]["seq"], b["chain"]["seq"] = b["chain"]["seq"], a["chain"]["seq"]
    rewrite(workspace, a)
    rewrite(workspace, b)
    report = verify(settings, workspace)
    assert not report.ok
    assert {f.kind for f in report.findings} == {"reordered"}
    assert {a["execution_id"], b["execution_id"]} <= {f.execution_id for f in report.findings}


def test_swapped_files_are_found(settings: Settings, workspace: Path) -> None:
    """A record moved into another run's file is reported: the file name no longer matches its record."""
    run_many(settings, 3)
    a, b = by_seq(workspace)[:2]
    pa, pb = (audit_dir(workspace) / f"{r['execution_id']}.json" for r in (a, b))
    text_a, text_b = pa.read_text(), pb.read_text()
    pa.write_text(text_b)
    pb.write_text(text_a)
    report = verify(settings, workspace)
    assert {(f.kind, f.execution_id) for f in report.findings} == {
        ("modified", a["execution_id"]), ("modified", b["execution_id"])}


def test_unfinished_and_abandoned_runs_are_reported(settings: Settings, workspace: Path) -> None:
    """A run left 'running' by a dead process fails verify; one gc marked abandoned is reported as such."""
    run_many(settings, 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    template = by_seq(workspace)[0]
    orphan = {k: v for k, v in template.items() if k != "chain"} | {
        "execution_id": "exec_orphan", "status": "running", "finished_at": None, "pid": dead.pid}
    AuditLog(audit_dir(workspace)).write(orphan)
    report = verify(settings, workspace)
    assert not report.ok
    assert [(f.kind, f.execution_id) for f in report.findings] == [("unfinished", "exec_orphan")]
    assert "is gone" in report.findings[0].detail
    orphan |= {"status": "abandoned", "message": "abandoned: its scoperun process died"}
    AuditLog.from_settings(settings, workspace.resolve()).write(orphan)
    report = verify(settings, workspace)
    assert report.ok and [(f.kind, f.execution_id) for f in report.findings] == [("abandoned", "exec_orphan")]


def test_stale_running_record_from_another_host_is_unfinished(settings: Settings, workspace: Path) -> None:
    """A 'running' record of another host, long past its timeout, is reported as never finished."""
    started = time.time() - 3 * 3600
    record = {"execution_id": "exec_remote", "status": "running", "host": "other-vm", "pid": 1,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
              "limits": {"timeout": 300}}
    AuditLog(audit_dir(workspace)).write(record)
    report = verify(settings, workspace)
    assert [(f.kind, f.execution_id) for f in report.findings] == [("unfinished", "exec_remote")]


def test_verify_command_exit_status(settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`scoperun audit verify` exits 0 on an intact trail and 1, naming the record, once one is modified."""
    run_many(settings, 3)
    monkeypatch.setenv("SCOPERUN_WORKSPACE", str(workspace))
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    victim = by_seq(workspace)[0]
    victim["script_path"] = "Tools/innocent.py"
    rewrite(workspace, victim)
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1 and "modified" in bad.output and victim["execution_id"] in bad.output


def test_chain_failure_keeps_the_record_unchained(settings: Settings, workspace: Path, tmp_path: Path) -> None:
    """When the host state folder is unusable the record is still written, without a chain link."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state folder should be")
    settings = settings.model_copy(update={"state_dir": blocker})
    [execution_id] = run_many(settings, 1)
    record = json.loads((audit_dir(workspace) / f"{execution_id}.json").read_text())
    assert record["status"] == "succeeded" and "chain" not in record


def test_forged_record_without_chain_link_fails_verify(settings: Settings, workspace: Path) -> None:
    """A finished record dropped into the folder with no chain link fails verify unless unchained ones are allowed."""
    run_many(settings, 2)
    forged = dict(by_seq(workspace)[0], execution_id="exec_20260101_000000_deadbeef", script_path="Tools/x.py")
    forged.pop("chain")
    rewrite(workspace, forged)
    report = verify(settings, workspace)
    assert not report.ok and report.count("unchained") == 1
    loaded = [(p.stem, read_json_file(p)) for p in sorted(audit_dir(workspace).glob("*.json"))]
    assert verify_records(loaded, allow_unchained=True).ok


@pytest.mark.parametrize("how", ["emptied", "moved"])
def test_empty_or_moved_audit_folder_fails_verify_against_the_host_head(settings: Settings, workspace: Path,
                                                                        tmp_path: Path, how: str) -> None:
    """The host's chain head says N records exist: an emptied or moved-away audit folder is reported deleted."""
    run_many(settings, 3)
    folder = audit_dir(workspace)
    if how == "emptied":
        for p in folder.glob("*.json"):
            p.unlink()
    else:
        folder.rename(tmp_path / "moved-away")
        folder.mkdir()
    report = verify(settings, workspace)
    assert not report.ok and report.records == 0
    assert [f.kind for f in report.findings] == ["deleted"] and "3 record(s)" in report.findings[0].detail
