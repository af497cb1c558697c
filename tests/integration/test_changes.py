"""Change sets on the real engine with real overlay mounts: staged, direct, apply, conflict, rollback."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Limits, ScopeError, Status
from scoperun.changes import apply_changes, discard_changes, gc_staging, load_change_set, rollback_changes
from scoperun.errors import ChangedSinceError, ChangesError
from scoperun.executor import Executor
from tests.conftest import CASE, CONTAINER_UID
from tests.integration.conftest import read_record

NON_UTF8 = b"caf\xe9-\xff.txt"  # latin-1 name: not valid UTF-8


def tree(root: Path) -> dict[bytes, tuple]:
    """Byte-exact state of a folder: type, permission bits, content hash or symlink target, per path."""
    out: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(Path(full.decode("utf-8", "surrogateescape")).read_bytes()).hexdigest())
    return out


def tool(workspace: Path, name: str, code: str) -> str:
    (workspace / "Tools" / name).write_text(code)
    return f"Tools/{name}"


@pytest.fixture
def case_dir(workspace: Path) -> Path:
    """The test case, seeded with files every kind of change can act on (owned by the container user)."""
    d = workspace / "projects" / CASE
    (d / "keep.txt").write_text("unchanged\n")
    (d / "modify.txt").write_text("line 1\nline 2\n")
    (d / "delete.txt").write_text("to be deleted\n")
    (d / "rename-me.txt").write_text("renamed content\n")
    (d / "mode.sh").write_text("echo hi\n")
    (d / "gone" / "deep").mkdir(parents=True)
    (d / "gone" / "deep" / "old.txt").write_text("old\n")
    (d / "gone" / "sibling.txt").write_text("sibling\n")
    (d / "old-link").symlink_to("keep.txt")
    (d / os.fsdecode(NON_UTF8)).write_bytes(b"latin-1 named\n")
    for p in [d, *d.rglob("*")]:
        os.chown(p, CONTAINER_UID, CONTAINER_UID, follow_symlinks=False)
    return d


@pytest.fixture
def no_volume_left(workspace: Path, docker_client) -> Iterator[None]:
    """After the test, no staging volume of this workspace exists on the engine."""
    yield
    left = docker_client.volumes.list(filters={"label": f"org.scoperun.workspace={workspace.resolve()}"})
    for v in left:
        v.remove(force=True)
    assert not left, [v.name for v in left]


EVERY_CHANGE = r"""
import os, shutil
open('new.txt', 'w').write('created\n')
with open('modify.txt', 'a') as f: f.write('line 3\n')
os.remove('delete.txt')
os.rename('rename-me.txt', 'renamed.txt')
os.chmod('mode.sh', 0o755)
os.makedirs('a/b/c'); open('a/b/c/nested.txt', 'w').write('nested\n')
shutil.rmtree('gone'); os.mkdir('gone'); open('gone/fresh.txt', 'w').write('fresh\n')
open('blob.bin', 'wb').write(bytes(range(256)) * 1000)
os.symlink('new.txt', 'link-rel'); os.symlink('/etc/passwd', 'link-abs')
os.remove('old-link')
os.link('new.txt', 'hard.txt')
open(b'\xff\xfe-new.bin', 'wb').write(b'\x00\x01')
with open(b'caf\xe9-\xff.txt', 'ab') as f: f.write(b'more\n')
"""


def test_staged_success_applies_every_kind_of_change_and_rollback_restores_it(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None) -> None:
    """Create, modify, delete, rename, chmod, nested and opaque folders, binary, links, non-UTF-8: applied, then undone byte for byte."""
    before = tree(case_dir)
    result = executor.run(ExecutionRequest(script=tool(workspace, "every.py", EVERY_CHANGE), case=CASE))
    assert result.status is Status.SUCCEEDED, result.stderr.text
    cs = result.changes
    assert cs is not None and cs.status.value == "applied" and cs.mode == "staged", cs
    by = {(c.path, c.action.value) for c in cs.entries}
    for expected in [("new.txt", "added"), ("modify.txt", "modified"), ("delete.txt", "deleted"),
                     ("renamed.txt", "added"), ("rename-me.txt", "deleted"), ("mode.sh", "mode_changed"),
                     ("a/b/c/nested.txt", "added"), ("a", "added"), ("gone/deep", "deleted"),
                     ("gone/deep/old.txt", "deleted"), ("gone/sibling.txt", "deleted"), ("gone/fresh.txt", "added"),
                     ("blob.bin", "added"), ("link-rel", "added"), ("link-abs", "added"), ("old-link", "deleted"),
                     ("hard.txt", "added"), ("caf\\xe9-\\xff.txt", "modified")]:
        assert expected in by, expected
    renamed = next(c for c in cs.entries if c.path == "renamed.txt")
    assert renamed.renamed_from == "rename-me.txt"
    assert next(c for c in cs.entries if c.path == "link-abs").target == "/etc/passwd"
    assert cs.totals.opaque_dirs == 1 and cs.totals.whiteouts >= 3
    assert cs.summary == ("6 files added, 2 modified, 3 deleted, 1 renamed, 3 folders added, 1 folder removed, "
                          "3 symlinks changed, 1 mode change")
    # The case now holds the run's work, links as links, names as bytes.
    assert (case_dir / "new.txt").read_text() == "created\n"
    assert (case_dir / "modify.txt").read_text() == "line 1\nline 2\nline 3\n"
    assert not (case_dir / "delete.txt").exists() and (case_dir / "renamed.txt").read_text() == "renamed content\n"
    assert stat.S_IMODE((case_dir / "mode.sh").stat().st_mode) == 0o755
    assert sorted(os.listdir(case_dir / "gone")) == ["fresh.txt"]
    assert (case_dir / "blob.bin").read_bytes() == bytes(range(256)) * 1000
    assert os.readlink(case_dir / "link-abs") == "/etc/passwd" and os.readlink(case_dir / "link-rel") == "new.txt"
    assert os.stat(case_dir / "hard.txt").st_ino == os.stat(case_dir / "new.txt").st_ino
    assert os.path.exists(os.fsencode(case_dir) + b"/\xff\xfe-new.bin")
    assert (case_dir / "new.txt").stat().st_uid == CONTAINER_UID  # the next run can change it
    record = read_record(workspace, result.execution_id)
    assert record["changes"]["status"] == "applied" and record["write_mode"] == "staged"
    # The decision to apply is in the audit trail before the case is touched, then the apply itself.
    assert [e["event"] for e in record["events"]] == ["apply_decided", "applied"]
    assert (workspace / cs.journal / "manifest.json").is_file()

    rolled = rollback_changes(executor.settings, result.execution_id)
    assert rolled.status.value == "rolled_back"
    assert tree(case_dir) == before
    record = read_record(workspace, result.execution_id)
    assert [e["event"] for e in record["events"]] == ["apply_decided", "applied", "rolled_back"]
    assert record["changes"]["status"] == "rolled_back"


@pytest.mark.parametrize("ending", ["failed", "timed_out"])
def test_failed_or_timed_out_run_leaves_the_case_byte_identical(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None, ending: str) -> None:
    """A staged run that fails or times out changes nothing in the case; its changes wait for review."""
    before = tree(case_dir)
    tail = "raise SystemExit(3)\n" if ending == "failed" else "import time\nwhile True: time.sleep(1)\n"
    code = "import os\nopen('new.txt','w').write('x')\nos.remove('keep.txt')\nopen('modify.txt','w').write('')\n" + tail
    result = executor.run(ExecutionRequest(script=tool(workspace, "bad.py", code), case=CASE,
                                           limits=Limits(timeout=3)))
    assert result.status.value == ending
    assert tree(case_dir) == before
    assert result.changes is not None and result.changes.status.value == "staged"
    assert result.changes.summary == "1 file added, 1 modified, 1 deleted"
    assert "changes not applied" in result.message
    discarded = discard_changes(executor.settings, result.execution_id)
    assert discarded.status.value == "discarded" and tree(case_dir) == before
    with pytest.raises(ChangesError, match="discarded"):
        apply_changes(executor.settings, result.execution_id)


def test_a_100_mb_file_is_staged_applied_and_rolled_back(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None) -> None:
    """A 100 MB file written by a run reaches the case intact and rollback removes it."""
    code = ("import hashlib\nblock = bytes(range(256)) * 4096\nh = hashlib.sha256()\n"
            "with open('big.bin', 'wb') as f:\n    for _ in range(100):\n        f.write(block); h.update(block)\n"
            "print(h.hexdigest())\n")
    result = executor.run(ExecutionRequest(script=tool(workspace, "big.py", code), case=CASE))
    assert result.status is Status.SUCCEEDED, result.stderr.text
    entry = next(c for c in result.changes.entries if c.path == "big.bin")
    assert entry.size_after == 100 * 1024 * 1024 and entry.sha256_after == result.stdout.text.strip()
    assert hashlib.sha256((case_dir / "big.bin").read_bytes()).hexdigest() == entry.sha256_after
    rollback_changes(executor.settings, result.execution_id)
    assert not (case_dir / "big.bin").exists()


def test_concurrent_change_is_a_conflict_and_nothing_is_lost(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None) -> None:
    """A file changed in the case after the run started keeps the run staged as a conflict; --force keeps both sides."""
    code = "open('modify.txt', 'w').write('the run wrote this\\n')\n"
    result = executor.run(ExecutionRequest(script=tool(workspace, "edit.py", code), case=CASE, apply="never"))
    assert result.changes.status.value == "staged"
    (case_dir / "modify.txt").write_text("a person wrote this meanwhile\n")
    cs = apply_changes(executor.settings, result.execution_id)
    assert cs.status.value == "conflict" and cs.conflicts == ["modify.txt"]
    assert (case_dir / "modify.txt").read_text() == "a person wrote this meanwhile\n"
    assert load_change_set(executor.settings, result.execution_id)[0].status.value == "conflict"
    forced = apply_changes(executor.settings, result.execution_id, force=True)
    assert forced.status.value == "applied"
    assert (case_dir / "modify.txt").read_text() == "the run wrote this\n"
    rollback_changes(executor.settings, result.execution_id)
    assert (case_dir / "modify.txt").read_text() == "a person wrote this meanwhile\n"
    events = [e["event"] for e in read_record(workspace, result.execution_id)["events"]]
    assert events == ["conflict", "applied", "rolled_back"]


def test_two_staged_runs_on_one_case_second_apply_conflicts(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None) -> None:
    """Two runs edit the same file: the first applies, the second becomes a conflict, neither loses its work."""
    first = executor.run(ExecutionRequest(script=tool(workspace, "one.py", "open('keep.txt','w').write('one\\n')\n"),
                                          case=CASE, apply="never"))
    second = executor.run(ExecutionRequest(script=tool(workspace, "two.py", "open('keep.txt','w').write('two\\n')\n"),
                                           case=CASE))
    assert second.changes.status.value == "applied" and (case_dir / "keep.txt").read_text() == "two\n"
    assert apply_changes(executor.settings, first.execution_id).status.value == "conflict"
    staged = Path(executor.settings.staging_dir) / first.execution_id / "upper" / "keep.txt"
    assert staged.read_text() == "one\n" and (case_dir / "keep.txt").read_text() == "two\n"


def test_rollback_refuses_when_files_changed_since_and_force_keeps_them(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None) -> None:
    """Rollback names the files changed since the apply and refuses; --force restores and keeps the newer copy."""
    result = executor.run(ExecutionRequest(script=tool(workspace, "w.py", "open('modify.txt','w').write('run\\n')\n"),
                                           case=CASE))
    (case_dir / "modify.txt").write_text("edited after the apply\n")
    with pytest.raises(ChangedSinceError) as info:
        rollback_changes(executor.settings, result.execution_id)
    assert info.value.paths == ["modify.txt"] and "modify.txt" in str(info.value)
    assert (case_dir / "modify.txt").read_text() == "edited after the apply\n"
    rolled = rollback_changes(executor.settings, result.execution_id, force=True)
    assert (case_dir / "modify.txt").read_text() == "line 1\nline 2\n"
    displaced = list((workspace / rolled.journal / "displaced").iterdir())
    assert [p.read_text() for p in displaced] == ["edited after the apply\n"]


def test_apply_and_rollback_refuse_paths_outside_the_case(
        executor: Executor, workspace: Path, case_dir: Path, tmp_path: Path, no_volume_left: None) -> None:
    """A folder swapped for a symlink, or a tampered `..` path, is refused by apply and rollback; nothing outside changes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    result = executor.run(ExecutionRequest(
        script=tool(workspace, "n.py", "open('notes/intake.txt','w').write('run\\n')\n"), case=CASE, apply="never"))
    (case_dir / "notes").rename(case_dir / "notes-real")
    (case_dir / "notes").symlink_to(outside)
    with pytest.raises(ScopeError, match="outside-case"):
        apply_changes(executor.settings, result.execution_id)
    assert list(outside.iterdir()) == []
    (case_dir / "notes").unlink()
    (case_dir / "notes-real").rename(case_dir / "notes")

    state_file = Path(executor.settings.staging_dir) / result.execution_id / "state.json"
    state = json.loads(state_file.read_text())
    state["change_set"]["entries"][0]["path"] = "../../escape.txt"
    state_file.write_text(json.dumps(state))
    with pytest.raises(ScopeError, match="outside-case"):
        apply_changes(executor.settings, result.execution_id)
    assert not (workspace / "escape.txt").exists() and not (workspace.parent / "escape.txt").exists()

    applied = executor.run(ExecutionRequest(
        script=tool(workspace, "m.py", "open('notes/intake.txt','w').write('run\\n')\n"), case=CASE))
    manifest_file = workspace / applied.changes.journal / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["paths"][0]["path"] = "../../Tools/hello.py"
    manifest_file.write_text(json.dumps(manifest))
    hello = (workspace / "Tools" / "hello.py").read_bytes()
    with pytest.raises(ScopeError, match="outside-case"):
        rollback_changes(executor.settings, applied.execution_id)
    assert (workspace / "Tools" / "hello.py").read_bytes() == hello


def test_direct_mode_records_changes_without_undo(
        executor: Executor, workspace: Path, case_dir: Path, no_volume_left: None) -> None:
    """Direct runs write in place; the change set comes from before/after listings and has no journal."""
    code = "import os\nopen('new.txt','w').write('n')\nos.remove('delete.txt')\nos.rename('rename-me.txt','r.txt')\n" \
           "open('modify.txt','a').write('x')\nos.chmod('mode.sh', 0o700)\nos.mkdir('d')\nos.symlink('x','l')\n"
    result = executor.run(ExecutionRequest(script=tool(workspace, "d.py", code), case=CASE, write_mode="direct"))
    cs = result.changes
    assert cs.status.value == "recorded" and cs.mode == "direct" and result.write_mode == "direct"
    actions = {(c.path, c.action.value) for c in cs.entries}
    assert {("new.txt", "added"), ("delete.txt", "deleted"), ("r.txt", "added"), ("rename-me.txt", "deleted"),
            ("modify.txt", "modified"), ("mode.sh", "mode_changed"), ("d", "added"), ("l", "added")} <= actions
    assert next(c for c in cs.entries if c.path == "r.txt").renamed_from == "rename-me.txt"
    assert next(c for c in cs.entries if c.path == "new.txt").sha256_after == hashlib.sha256(b"n").hexdigest()
    assert (case_dir / "new.txt").exists()
    with pytest.raises(ChangesError, match="no journal"):
        rollback_changes(executor.settings, result.execution_id)


def test_read_only_mode_and_alias_have_no_change_set(executor: Executor, workspace: Path, case_dir: Path) -> None:
    """write_mode='read-only' and read_only=True both mount the case read-only and record no change set."""
    script = tool(workspace, "ro.py", "open('x.txt','w').write('x')\n")
    for request in (ExecutionRequest(script=script, case=CASE, write_mode="read-only"),
                    ExecutionRequest(script=script, case=CASE, read_only=True)):
        result = executor.run(request)
        assert result.status is Status.FAILED and "Read-only file system" in result.stderr.text
        assert result.changes is None and result.read_only and result.write_mode == "read-only"


def test_gc_removes_finished_staging_and_keeps_pending_reviews(
        executor: Executor, workspace: Path, case_dir: Path, docker_client, no_volume_left: None) -> None:
    """gc_staging removes applied and discarded staging folders and stale volumes, keeps changes waiting for review."""
    stale_upper = Path(executor.settings.staging_dir) / "exec_gone" / "upper"
    stale = docker_client.volumes.create(name=f"scoperun-stage-test-{workspace.parent.name[-12:]}", labels={
        "org.scoperun.managed": "1", "org.scoperun.test": "1", "org.scoperun.execution-id": "exec_gone",
        "org.scoperun.staging-upper": str(stale_upper), "org.scoperun.workspace": str(workspace.resolve())})
    script = tool(workspace, "g.py", "open('g.txt','a').write('g')\n")
    applied = executor.run(ExecutionRequest(script=script, case=CASE))
    pending = executor.run(ExecutionRequest(script=script, case=CASE, apply="never"))
    dropped = executor.run(ExecutionRequest(script=script, case=CASE, apply="never"))
    discard_changes(executor.settings, dropped.execution_id)
    assert gc_staging(executor.settings, timedelta(days=1)) == []
    removed = gc_staging(executor.settings, timedelta(0))
    assert sorted(removed) == sorted([applied.execution_id, dropped.execution_id])
    staging = Path(executor.settings.staging_dir)
    assert (staging / pending.execution_id / "upper" / "g.txt").is_file()
    assert load_change_set(executor.settings, applied.execution_id)[1] == "journal"
    assert stale.name not in {v.name for v in docker_client.volumes.list()}


def test_renaming_an_existing_folder_in_a_staged_run_explains_the_workaround(
        executor: Executor, workspace: Path, no_volume_left: None) -> None:
    """os.rename of a folder that existed before a staged run fails (EXDEV); the message says what to do instead."""
    script = tool(workspace, "rename_dir.py", "import os\nos.rename('notes', 'notes-2024')\n")
    result = executor.run(ExecutionRequest(script=script, case=CASE))
    assert result.status is Status.FAILED
    assert "shutil.move" in result.message and "direct" in result.message
    moved = executor.run(ExecutionRequest(script=tool(workspace, "move_dir.py",
                                                      "import shutil\nshutil.move('notes', 'notes-2024')\n"), case=CASE))
    assert moved.status is Status.SUCCEEDED, moved.stderr.text
    assert (workspace / "projects" / CASE / "notes-2024" / "intake.txt").is_file()
    assert not (workspace / "projects" / CASE / "notes").exists()
