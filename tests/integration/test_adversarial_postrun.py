"""Adversarial suite, part 5: what a hostile run leaves for the host to do after it (issue 11).

Secrets smuggled through names and encodings, trees too deep or too large for the host's walks,
sparse files, an audit trail pulled away mid-run, links that break host-side resolution, races
during start, and hazards left by earlier runs. Each attack ends in a terminal audit record.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scoperun import ExecutionRequest, Limits, Status
from scoperun.changes import apply_changes
from scoperun.cli.main import app
from scoperun.errors import ChangesError
from scoperun.executor import Executor
from scoperun.fswalk import remove_tree, walk
from tests.conftest import CASE
from tests.integration._adversarial import Guard, wait_until
from tests.integration.conftest import read_record

SECRET = "sk-proj-Zq81xLmN04vBrT7yHs2K"


@pytest.fixture(autouse=True)
def _remove_deep_trees(workspace: Path, settings) -> Iterator[None]:
    """These attacks leave trees too deep for shutil.rmtree (pytest's clean-up): remove them, and their staging."""
    yield
    from scoperun.changes.store import staging_root

    ids = [p.stem for p in (workspace / "Database" / "script_executions").glob("exec_*.json")]
    for execution_id in ids:
        remove_tree(staging_root(settings) / execution_id, ignore_errors=True)
    remove_tree(workspace / "projects", ignore_errors=True)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """OPENAI_API_KEY set on the host: passed through to runs and redacted everywhere."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


def _leaks(text: str) -> bool:
    raw = SECRET.encode()
    forms = [SECRET, base64.b64encode(raw).decode()[:16], raw.hex()[:16], SECRET[4:14]]
    return any(f in text for f in forms)


def test_i11_01_secret_smuggled_through_names_targets_and_encodings(guard: Guard, workspace: Path,
                                                                    secret_env: str) -> None:
    """A run puts the key in a file name, a link target, base64/hex/URL-encoded output and halves on two streams:
    the result, the record, the kept output, `scoperun changes` and `audit show` never show it."""
    result = guard.run("""
import base64, os, sys
key = os.environ['OPENAI_API_KEY']
open('k_' + key, 'w').write('x')
os.symlink('/tmp/' + key, 'lnk')
print(base64.b64encode(key.encode()).decode())
print(base64.b64encode(b'Bearer ' + key.encode()).decode())
print(key.encode().hex(), key.encode().hex().upper())
import urllib.parse; print(urllib.parse.quote('k=' + key + '&x=1'))
chunks = [key[i:i + 5] for i in range(0, len(key), 5)]
print(' '.join(chunks[0::2])); print(' '.join(chunks[1::2]), file=sys.stderr)
""", apply="never")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.changes is not None and result.changes.totals.files_added == 1
    dumped = result.model_dump_json()
    assert not _leaks(dumped), dumped
    record_text = (workspace / result.audit_record).read_text()
    assert not _leaks(record_text)
    folder = workspace / "Database" / "script_executions"
    for kept in folder.glob(f"{result.execution_id}.*"):
        assert not _leaks(kept.read_text(errors="replace")), kept.name
    runner = CliRunner()
    for argv in (["changes", result.execution_id], ["changes", result.execution_id, "--json"],
                 ["audit", "show", result.execution_id]):
        shown = runner.invoke(app, ["--workspace", str(workspace), *argv])
        assert shown.exit_code == 0, shown.output
        assert not _leaks(shown.output), (argv, shown.output)
        assert "REDACTED" in shown.output or argv[0] == "audit"


def _deep_script(levels: int, name_len: int) -> str:
    return f"""
import os
fd = os.open('.', os.O_RDONLY)
for i in range({levels}):
    name = 'd' * {name_len}
    os.mkdir(name, dir_fd=fd)
    nxt = os.open(name, os.O_RDONLY, dir_fd=fd); os.close(fd); fd = nxt
w = os.open('bottom.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd); os.write(w, b'deep'); os.close(w)
print('made')
"""


def test_i11_02_a_thousand_nested_folders_end_in_a_terminal_record(guard: Guard, workspace: Path) -> None:
    """1,100 nested folders in a staged run: no RecursionError, a terminal record, the change set kept for review."""
    result = guard.run(_deep_script(1100, 1))
    assert result.status is Status.SUCCEEDED, result.message
    assert result.changes is not None and result.changes.status.value == "staged"
    assert "deeper than 1000 levels" in result.changes.note
    assert read_record(workspace, result.execution_id)["status"] == "succeeded"
    assert not (workspace / "projects" / CASE / "d").exists()  # nothing applied
    assert not result.changes.complete
    with pytest.raises(ChangesError, match="incomplete"):
        apply_changes(guard.executor.settings, result.execution_id)  # a person must force it knowingly


def test_i11_05_paths_past_path_max_are_applied_and_later_runs_still_work(guard: Guard, workspace: Path) -> None:
    """40 folders of 200-character names (8 KB paths) written staged, then direct: applied exactly, and the
    next run on the case works (no ENAMETOOLONG traceback)."""
    staged = guard.run(_deep_script(40, 200))
    assert staged.status is Status.SUCCEEDED and staged.changes is not None
    assert staged.changes.status.value == "applied", staged.changes.note
    bottoms = [e for e in walk(workspace / "projects" / CASE) if e.name == b"bottom.txt"]
    assert len(bottoms) == 1 and len(bottoms[0].rel) > 8000
    direct = guard.run(_deep_script(40, 200).replace("'d' *", "'e' *"), write_mode="direct")
    assert direct.status is Status.SUCCEEDED and direct.changes is not None
    assert direct.changes.totals.files_added == 1 and direct.changes.totals.dirs_added == 40
    later = guard.run("print(1)", write_mode="direct")
    assert later.status is Status.SUCCEEDED and later.stdout.text == "1\n", later.message


def test_i11_03_audit_trail_pulled_away_mid_run_means_nothing_applied(executor: Executor, workspace: Path,
                                                                      guard: Guard, tmp_path: Path) -> None:
    """The audit folder is swapped for a symlink while a staged run sleeps: the decision to apply cannot be
    recorded, so nothing reaches the case, and the result says the record could not be written."""
    script = guard.tool("slow-writer.py", "import time\ntime.sleep(4)\nopen('written.txt', 'w').write('x')\n")
    folder = workspace / "Database" / "script_executions"
    outcome: dict = {}

    def run() -> None:
        outcome["result"] = executor.run(ExecutionRequest(script=script, case=CASE))

    worker = threading.Thread(target=run)
    worker.start()
    assert wait_until(lambda: any(folder.glob("exec_*.json")), 30)
    moved = tmp_path / "audit-moved"
    folder.rename(moved)
    folder.symlink_to(moved)  # the audit log refuses to write through a symlinked folder
    try:
        worker.join(120)
    finally:
        folder.unlink()
        moved.rename(folder)
    result = outcome["result"]
    assert result.status is Status.ERROR
    assert "final audit record could not be written" in result.message
    assert "nothing was applied" in result.message
    assert not (workspace / "projects" / CASE / "written.txt").exists()
    assert result.changes is not None and result.changes.status.value == "staged"
    assert "could not record the decision" in result.changes.note


def test_i11_04_unresolvable_link_does_not_blind_the_hazard_scan(guard: Guard, workspace: Path) -> None:
    """A direct run plants links the host cannot resolve (/proc/1/root, a loop) next to a setuid file: the
    scan reports all of them and still clears the setuid bit, on this run and on every later one."""
    result = guard.run("""
import os
os.symlink('/proc/1/root/etc/shadow', 'a-proc-root')
os.symlink('loop', 'loop')
open('z-setuid', 'w').write('#!/bin/sh\\n')
os.chmod('z-setuid', 0o4755)
""", write_mode="direct")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    kinds = {(h.kind, h.path) for h in result.hazards}
    assert {("symlink-outside", "a-proc-root"), ("setuid", "z-setuid")} <= kinds
    assert not os.stat(workspace / "projects" / CASE / "z-setuid").st_mode & stat.S_ISUID
    again = guard.run("import os; open('z2', 'w').write('x'); os.chmod('z2', 0o2755)", write_mode="direct")
    assert ("setgid", "z2") in {(h.kind, h.path) for h in again.hazards}
    assert not os.stat(workspace / "projects" / CASE / "z2").st_mode & stat.S_ISGID


def test_i11_06_working_folder_through_an_unresolvable_link_is_an_audited_refusal(
        guard: Guard, workspace: Path, executor: Executor) -> None:
    """A run leaves `wd -> wd` (a loop); asking for it as a working folder is a `rejected` record, and the
    agent tool answers with the refusal instead of raising."""
    planted = guard.run("import os; os.symlink('wd', 'wd')", write_mode="direct")
    assert planted.status is Status.SUCCEEDED
    refused = guard.run("print('never')", working_dir="wd")
    assert refused.status is Status.REJECTED and "wd" in refused.message
    assert read_record(workspace, refused.execution_id)["status"] == "rejected"
    from scoperun.tools.core import execute_script_on_filesystem

    reply = execute_script_on_filesystem(executor, "Tools/probe.py", CASE, working_dir="wd")
    assert not reply.ok and "rejected" in reply


def test_i11_07_sparse_gigabyte_stays_sparse_and_big_change_sets_wait_for_review(
        guard: Guard, workspace: Path, executor: Executor) -> None:
    """A 1 GiB sparse file applied costs no real disk; a change set over changes_max_bytes is kept for review."""
    code = "f = open('sparse.bin', 'wb'); f.seek(1024**3 - 5); f.write(b'tail!'); f.close()"
    small = executor.settings.model_copy(update={"changes_max_bytes": "2g"})
    result = guard.run(code, executor=Executor(small))
    assert result.status is Status.SUCCEEDED and result.changes is not None
    assert result.changes.status.value == "applied", result.changes.note
    st = os.stat(workspace / "projects" / CASE / "sparse.bin")
    assert st.st_size == 1024**3 and st.st_blocks * 512 < 16 * 1024**2, st.st_blocks
    bounded = executor.settings.model_copy(update={"changes_max_bytes": "100m"})
    held = guard.run(code.replace("sparse.bin", "sparse2.bin"), executor=Executor(bounded))
    assert held.changes is not None and held.changes.status.value == "staged"
    assert "changes_max_bytes" in held.changes.note and "changes_max_bytes" in held.message
    assert not (workspace / "projects" / CASE / "sparse2.bin").exists()


def test_i11_08_many_files_past_the_budget_end_clearly_and_wait_for_review(
        guard: Guard, workspace: Path, executor: Executor) -> None:
    """30,000 empty files against changes_max_files = 5,000, then 3,000 against a spent post_run_budget: each
    run ends clearly and its change set is kept for review, not applied."""
    bounded = Executor(executor.settings.model_copy(update={"changes_max_files": 5000}))
    result = guard.run("import os\nos.mkdir('many')\nfor i in range(30000):\n    open(f'many/{i}', 'w').close()\n",
                       executor=bounded, limits=Limits(timeout=300))
    assert result.status is Status.SUCCEEDED, result.message
    assert result.changes is not None and result.changes.status.value == "staged"
    assert "changes_max_files" in result.changes.note
    assert not (workspace / "projects" / CASE / "many").exists()
    hurried = Executor(executor.settings.model_copy(update={"post_run_budget": 0.001}))
    late = guard.run("import os\nos.mkdir('more')\nfor i in range(3000):\n    open(f'more/{i}', 'w').close()\n",
                     executor=hurried)
    assert late.status is Status.SUCCEEDED and late.changes is not None
    assert late.changes.status.value == "staged" and "post_run_budget" in late.changes.note, late.changes.note
    assert "post_run_budget" in late.message and not (workspace / "projects" / CASE / "more").exists()


def test_i11_11_vanishing_entries_and_a_swapped_working_folder_get_true_statuses(
        guard: Guard, workspace: Path, executor: Executor) -> None:
    """While staged runs start, another process keeps creating and deleting case entries and swapping the
    working folder for a symlink: no run is blamed on staging support or on a lost engine."""
    case = workspace / "projects" / CASE
    (case / "work").mkdir()
    os.chown(case / "work", 1000, 1000)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            for n in range(3):
                p = case / f"churn-{n}"
                try:
                    p.write_text("x")
                    p.unlink()
                except OSError:
                    pass
            try:
                (case / "work").rename(case / "work-away")
                (case / "work").symlink_to("/etc")
                time.sleep(0.01)
                (case / "work").unlink()
                (case / "work-away").rename(case / "work")
            except OSError:
                pass

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        results = [executor.run(ExecutionRequest(script=guard.tool("pwd.py", "import os; print(os.getcwd())"),
                                                 case=CASE, working_dir="work", apply="never")) for _ in range(6)]
    finally:
        stop.set()
        worker.join(10)
    for r in results:
        assert "staging-unsupported" not in r.message and "lost the Docker engine" not in r.message, r.message
        assert r.status in (Status.SUCCEEDED, Status.REJECTED, Status.ERROR), r.message
        if r.status is Status.ERROR:
            assert "working folder 'work' was replaced" in r.message, r.message
        assert read_record(workspace, r.execution_id)["status"] == r.status.value


def test_i11_12_hazards_left_by_an_earlier_run_are_not_blamed_on_later_ones(guard: Guard) -> None:
    """After a direct run leaves `link -> /etc/passwd`, a read-only `print(1)` reports it as already there."""
    first = guard.run("import os; os.symlink('/etc/passwd', 'link')", write_mode="direct")
    assert "the run left hazards" in first.message
    assert [h.introduced for h in first.hazards if h.path == "link"] == [True]
    later = guard.run("print(1)", write_mode="read-only")
    assert later.status is Status.SUCCEEDED
    assert "the run left hazards" not in later.message and "already in the case" in later.message
    assert [h.introduced for h in later.hazards if h.path == "link"] == [False]
    staged = guard.run("open('new.txt', 'w').write('x')")
    assert "the run left hazards" not in staged.message


def test_i11_09_escape_sequences_in_names_output_and_requester_are_shown_escaped(
        guard: Guard, workspace: Path) -> None:
    """A run names a file with ESC sequences and a fake 'deleted contract.pdf' line, prints them and is
    requested by such a name: `changes`, `audit show` and `audit list` show them escaped, never raw."""
    result = guard.run("""
name = 'ok\\x1b[2K\\x1b[1A\\rdeleted contract.pdf\\n     deleted     file    contract.pdf'
open(name, 'w').write('x')
print('clean\\x1b[2J\\x1b]0;pwned\\x07 line')
""", apply="never", requested_by="agent\x1b[31m\nforged")
    assert result.status is Status.SUCCEEDED
    runner = CliRunner()
    for argv in (["changes", result.execution_id], ["audit", "show", result.execution_id], ["audit", "list"]):
        shown = runner.invoke(app, ["--workspace", str(workspace), *argv])
        assert shown.exit_code == 0, shown.output
        assert "\x1b" not in shown.output and "\x07" not in shown.output, (argv, shown.output)
        assert "\n     deleted     file    contract.pdf" not in shown.output
    listing = runner.invoke(app, ["--workspace", str(workspace), "changes", result.execution_id]).output
    assert "\\x1b[2K" in listing and "\\n" in listing


def test_i11_02b_odd_trees_always_end_in_a_terminal_record(guard: Guard, workspace: Path) -> None:
    """Property-style: seeded random odd trees (deep, wide, long names, links, fifos, loops, bad bytes) in
    staged and direct runs; every run ends in exactly one terminal record and the host is untouched."""
    import random

    rng = random.Random(11)
    shapes = []
    for seed in range(6):
        shapes.append({"seed": seed, "depth": rng.choice([1, 50, 300, 1200]), "width": rng.choice([1, 200, 2000]),
                       "name_len": rng.choice([1, 100, 255]), "links": rng.choice([0, 5]),
                       "fifos": rng.choice([0, 2])})
    for i, shape in enumerate(shapes):
        code = f"""
import os, random
rng = random.Random({shape['seed']})
fd = os.open('.', os.O_RDONLY)
os.mkdir('w{i}'); wide = os.open('w{i}', os.O_RDONLY)
for n in range({shape['width']}):
    open(os.open(f'f{{n}}' + 'x' * max(0, {shape['name_len']} - 8), os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=wide), 'w').close()
for n in range({shape['links']}):
    os.symlink(rng.choice(['/etc/passwd', '../..', 'self{i}-' + str(n), '/proc/1/root']), f'self{i}-{{n}}', dir_fd=wide)
for n in range({shape['fifos']}):
    os.mkfifo(f'fifo{{n}}', dir_fd=wide)
open(os.open(b'bad\\xff\\xfe\\x1b[2J', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=wide), 'w').close()
os.mkdir('deep{i}'); d = os.open('deep{i}', os.O_RDONLY)
for n in range({shape['depth']}):
    name = ('n' * {shape['name_len']})[:255]
    os.mkdir(name, dir_fd=d); nd = os.open(name, os.O_RDONLY, dir_fd=d); os.close(d); d = nd
print('ok')
"""
        result = guard.run(code, name=f"odd{i}.py", write_mode="direct" if i % 2 else "staged",
                           limits=Limits(timeout=300))
        assert result.status in (Status.SUCCEEDED, Status.FAILED, Status.ERROR), (shape, result.message)
        record = read_record(workspace, result.execution_id)
        assert record["status"] == result.status.value != "running", shape
        json.dumps(record)
