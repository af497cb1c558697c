"""Cases and file access on real files (no engine): listing, reading, hostile paths, staged writes, audit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scoperun.audit.access import read_access_events
from scoperun.changes import rollback_changes
from scoperun.config import Settings
from scoperun.errors import FileAccessError, ScopeError
from scoperun.files import CaseFiles
from scoperun.files.core import MAX_DEPTH
from scoperun.sample import DEFAULT_CASE_NAME, create_sample_workspace
from scoperun.scope import suggest_cases

CASE = DEFAULT_CASE_NAME


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    create_sample_workspace(root)
    (root / "projects" / "Doe-John-MVA-2024").mkdir()
    (root / "projects" / "Doe-John-MVA-2024" / "secret.txt").write_text("other client\n")
    return root


@pytest.fixture
def files(ws: Path, tmp_path: Path) -> CaseFiles:
    return CaseFiles(settings=Settings(workspace=ws, state_dir=tmp_path / "state", staging_dir=tmp_path / "staging"))


def _refusals(files: CaseFiles) -> list[dict]:
    return [e for e in read_access_events(files.settings, files.workspace.root) if e["outcome"] == "refused"]


def test_cases_lists_counts_and_filters_by_prefix(files: CaseFiles) -> None:
    """cases() lists every case with its file count and size; a prefix filters case-insensitively."""
    listed = files.cases()
    assert [c.name for c in listed.cases] == ["Doe-John-MVA-2024", CASE]
    sample = listed.cases[1]
    assert sample.files == 16 and sample.bytes and sample.bytes > 10_000 and sample.counted_at is not None
    assert [c.name for c in files.cases("doe").cases] == ["Doe-John-MVA-2024"]


def test_case_counts_come_from_the_cache(files: CaseFiles, ws: Path) -> None:
    """A second listing answers from the cached count (no walk); a write through scoperun refreshes it."""
    first = files.cases(CASE).cases[0]
    (ws / "projects" / CASE / "added_by_hand.txt").write_text("x")
    assert files.cases(CASE).cases[0].files == first.files  # cached
    files.write_file(CASE, "via_scoperun.txt", "y")
    assert files.cases(CASE).cases[0].files == (first.files or 0) + 2


def test_unknown_case_suggests_close_names(files: CaseFiles) -> None:
    """An unknown case is refused with the closest case names (no host path), and the refusal is audited."""
    with pytest.raises(ScopeError) as info:
        files.list_files("sample-client-mva")
    assert "did you mean 'Sample-Client-MVA-1-15-2025'" in str(info.value)
    assert "projects/" in str(info.value) and str(files.workspace.root) not in str(info.value)
    assert _refusals(files)[-1]["reason"] == "unknown-case"
    assert suggest_cases("doe", ["Doe-John-MVA-2024", "Smith-Ann"]) == ["Doe-John-MVA-2024"]
    assert suggest_cases("Smtih-Ann", ["Doe-John-MVA-2024", "Smith-Ann"]) == ["Smith-Ann"]
    many = [f"Client{i:02d}-Zed-MVA-2024" for i in range(20)] + ["Roe-Jane-MVA-2024"]
    assert suggest_cases("Roe-MVA-2024", many) == ["Roe-Jane-MVA-2024"]  # not every case that shares 'MVA'
    assert suggest_cases("nothing-alike", many) == []


def test_list_files_pages_and_patterns(files: CaseFiles) -> None:
    """Listings are sorted, paged with offset/more, recursive on request and filtered by a glob."""
    top = files.list_files(CASE)
    assert "Medical Records" in [e.path for e in top.entries] and all("/" not in e.path for e in top.entries)
    page = files.list_files(CASE, recursive=True, limit=5)
    assert len(page.entries) == 5 and page.more
    rest = files.list_files(CASE, recursive=True, offset=5, limit=1000)
    assert not rest.more and len(page.entries) + len(rest.entries) == 21
    pdfs = files.list_files(CASE, recursive=True, pattern="*.PDF")
    assert {e.path for e in pdfs.entries} >= {"MRI_report.pdf", "Medical Records/CT_scan_head_2025-01-15.pdf"}


def test_read_file_truncates_honestly_and_refuses_binary(files: CaseFiles) -> None:
    """read_file returns a bounded part with next_offset; a PDF is refused as 'PDF document' pointing to read_document."""
    whole = files.read_file(CASE, "client_intake.txt")
    part = files.read_file(CASE, "client_intake.txt", limit=10)
    assert part.truncated and part.next_offset == 10 and part.text == whole.text[:10]
    nxt = files.read_file(CASE, "client_intake.txt", offset=10)
    assert part.text + nxt.text == whole.text and not nxt.truncated
    with pytest.raises(FileAccessError, match=r"PDF document .*read_document"):
        files.read_file(CASE, "MRI_report.pdf")
    assert _refusals(files)[-1]["reason"] == "binary-file"


def test_read_file_never_cuts_a_character(files: CaseFiles, ws: Path) -> None:
    """A part ending inside a multi-byte UTF-8 character stops before it; the next part starts on it."""
    (ws / "projects" / CASE / "u.txt").write_text("aé" * 10, encoding="utf-8")
    part = files.read_file(CASE, "u.txt", limit=2)
    assert part.text == "a" and part.next_offset == 1


@pytest.mark.parametrize(("path", "rule"), [
    ("../Doe-John-MVA-2024/secret.txt", "path-traversal"),
    ("/etc/passwd", "absolute-path"),
    ("client\x00intake.txt", "nul-byte"),
    ("/".join(["a"] * 300), "path-too-deep"),
])
def test_hostile_paths_are_refused_and_audited(files: CaseFiles, path: str, rule: str) -> None:
    """`..`, absolute paths, NUL bytes and absurdly deep paths are refused with their rule in the audit."""
    with pytest.raises(ScopeError) as info:
        files.read_file(CASE, path)
    assert info.value.rule == rule
    assert _refusals(files)[-1]["reason"] == rule


def test_symlinks_out_of_the_case_are_never_followed(files: CaseFiles, ws: Path) -> None:
    """Symlinks to another case, to /etc, or as a folder on the way are refused for read, list, download and write."""
    case = ws / "projects" / CASE
    (case / "to_other.txt").symlink_to(ws / "projects" / "Doe-John-MVA-2024" / "secret.txt")
    (case / "to_etc").symlink_to("/etc")
    for call in (lambda: files.read_file(CASE, "to_other.txt"), lambda: files.read_file(CASE, "to_etc/passwd"),
                 lambda: files.list_files(CASE, "to_etc"), lambda: files.read_bytes(CASE, "to_other.txt"),
                 lambda: files.write_file(CASE, "to_etc/evil", "x"), lambda: files.write_file(CASE, "to_other.txt", "x")):
        with pytest.raises(ScopeError):
            call()
    assert (ws / "projects" / "Doe-John-MVA-2024" / "secret.txt").read_text() == "other client\n"
    listed = {e.path: e for e in files.list_files(CASE, recursive=True).entries}
    assert listed["to_etc"].type == "symlink" and listed["to_etc"].target == "/etc"
    assert not any(p.startswith("to_etc/") for p in listed)  # listed, never entered
    assert {e["reason"] for e in _refusals(files)} >= {"symlink", "outside-case"}


def test_fifo_and_sparse_file_are_refused_quickly(files: CaseFiles, ws: Path) -> None:
    """A FIFO is refused without blocking; a 10 GB sparse file is refused (binary, too large); search skips both."""
    case = ws / "projects" / CASE
    os.mkfifo(case / "pipe")
    with pytest.raises(FileAccessError, match="FIFO"):
        files.read_file(CASE, "pipe")
    with open(case / "huge.bin", "wb") as fh:
        fh.truncate(10 * 1024**3)
    with pytest.raises(FileAccessError, match=r"binary data \(10,737,418,240 bytes\)"):
        files.read_file(CASE, "huge.bin")
    with pytest.raises(FileAccessError, match="too-large"):
        files.read_bytes(CASE, "huge.bin", max_bytes=1024)
    with pytest.raises(FileAccessError, match="too-large"):
        files.read_document(CASE, "huge.bin")  # refused before it is hashed or sent to a container
    with pytest.raises(FileAccessError, match="FIFO"):
        files.read_document(CASE, "pipe")
    assert [e["reason"] for e in _refusals(files)[-5:]] == ["special-file", "binary-file", "too-large", "too-large",
                                                           "special-file"]
    skipped = files.search(CASE, "x", glob="huge.bin")
    assert not skipped.hits and "huge.bin: 10,737,418,240 bytes, too large to search" in skipped.skipped
    assert files.search(CASE, "x", glob="pipe").files_searched == 0


def test_deep_tree_listing_stops_at_the_depth_limit(files: CaseFiles, ws: Path) -> None:
    """A 10,000-deep tree is listed down to MAX_DEPTH levels only; the stop and its reason are audited."""
    fd = os.open(ws / "projects" / CASE, os.O_RDONLY)
    try:
        for _ in range(10_000):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    try:
        listing = files.list_files(CASE, "d", recursive=True, limit=1000)
    finally:
        # pytest's own clean-up recurses once per level and would fail on 10,000 (for every session of the machine).
        subprocess.run(["rm", "-rf", str(ws / "projects" / CASE / "d")], check=True)
    assert listing.stopped and "deeper" in listing.stopped
    assert max(e.path.count("/") for e in listing.entries) == MAX_DEPTH  # "d" plus MAX_DEPTH levels
    events = read_access_events(files.settings, files.workspace.root)
    assert events[-1]["event"] == "files.list" and events[-1]["reason"] == "depth-limit"


def test_write_is_staged_applied_and_rolled_back(files: CaseFiles, ws: Path) -> None:
    """write_file lands through a change set with a journal and audit record; rollback restores the case exactly."""
    target = ws / "projects" / CASE / "client_intake.txt"
    before = target.read_bytes()
    result = files.write_file(CASE, "client_intake.txt", "replaced\n", requested_by="tester")
    assert result.change_set.status.value == "applied" and target.read_text() == "replaced\n"
    new = files.write_file(CASE, "notes/summary.md", "# Summary\n")
    assert new.change_set.summary == "1 file added, 1 folder added"
    record = (ws / "Database" / "script_executions" / f"{result.execution_id}.json").read_text()
    assert '"script_path": "scoperun:files.write"' in record and '"requested_by": "tester"' in record
    rollback_changes(files.settings, new.execution_id)
    rollback_changes(files.settings, result.execution_id)
    assert target.read_bytes() == before and not (ws / "projects" / CASE / "notes").exists()


def test_write_held_for_review_when_policy_is_never(ws: Path, tmp_path: Path) -> None:
    """With apply_policy=never a write changes nothing until applied; the note says how."""
    files = CaseFiles(settings=Settings(workspace=ws, state_dir=tmp_path / "s", staging_dir=tmp_path / "st",
                                        apply_policy="never"))
    result = files.write_file(CASE, "draft.txt", "draft")
    assert result.change_set.status.value == "staged" and "scoperun apply" in result.change_set.note
    assert not (ws / "projects" / CASE / "draft.txt").exists()


def test_download_and_upload_are_exact_bytes(files: CaseFiles, ws: Path, tmp_path: Path) -> None:
    """upload stores exact bytes (through a change set); download gives them back byte for byte, never overwriting."""
    blob = bytes(range(256)) * 1000
    src = tmp_path / "blob.bin"
    src.write_bytes(blob)
    up = files.upload(CASE, "uploads/blob.bin", src)
    assert up.bytes == len(blob) and (ws / "projects" / CASE / "uploads" / "blob.bin").read_bytes() == blob
    dest = tmp_path / "back.bin"
    digest, size = files.download(CASE, "uploads/blob.bin", dest)
    assert dest.read_bytes() == blob and size == len(blob) and digest == up.sha256
    with pytest.raises(FileExistsError):
        files.download(CASE, "uploads/blob.bin", dest)
    assert files.read_bytes(CASE, "uploads/blob.bin") == blob


def test_every_access_is_audited_with_who_and_bytes(files: CaseFiles) -> None:
    """Reads leave an event naming who, case, path and bytes; a thousand reads take well under a minute."""
    for _ in range(1000):
        files.read_file(CASE, "client_intake.txt", requested_by="agent-7")
    events = [e for e in read_access_events(files.settings, files.workspace.root, limit=5000)
              if e["event"] == "files.read"]
    assert len(events) == 1000
    assert events[0]["by"] == "agent-7" and events[0]["case"] == CASE and events[0]["path"] == "client_intake.txt"
    assert events[0]["bytes"] > 0


def test_secret_in_a_file_name_is_redacted(files: CaseFiles, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file name holding a configured secret's value is listed with the value redacted."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-verysecretvalue123")
    (ws / "projects" / CASE / "key_sk-verysecretvalue123.txt").write_text("x")
    redacting = CaseFiles(settings=files.settings)
    names = [e.path for e in redacting.list_files(CASE).entries]
    assert not any("sk-verysecretvalue123" in n for n in names)


def test_cases_show_the_last_run_from_the_audit_index(files: CaseFiles) -> None:
    """cases() shows a case's latest run and its status from the index; scoperun's own file writes are not runs."""
    from scoperun import ExecutionRequest
    from scoperun.executor import Executor
    from scoperun.testing import FakeBackend

    (files.workspace.tools / "ok.py").write_text("print(1)\n")
    run = Executor(files.settings, backend=FakeBackend()).run(ExecutionRequest(script="Tools/ok.py", case=CASE))
    files.write_file(CASE, "later.txt", "written after the run")
    info = files.cases(CASE).cases[0]
    assert (info.last_run_id, info.last_run_status) == (run.execution_id, "succeeded")
    assert files.cases("doe").cases[0].last_run_id is None


def test_stats_count_file_accesses(files: CaseFiles) -> None:
    """`scoperun stats` (and the agents' monitor tool) count file accesses by kind, refusals apart."""
    from scoperun.audit.stats import render_stats_markdown, stats_for_settings

    files.read_file(CASE, "client_intake.txt")
    files.list_files(CASE)
    with pytest.raises(ScopeError):
        files.read_file(CASE, "../x")
    stats = stats_for_settings(files.settings, since="1h")
    assert stats.file_access == {"list": 1, "read": 2, "refused": 1}
    assert "File accesses (audited): list 1, read 2, refused 1" in render_stats_markdown(stats)
    assert stats_for_settings(files.settings, case="Doe-John-MVA-2024").file_access == {}
