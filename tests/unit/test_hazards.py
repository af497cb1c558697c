"""The post-run hazard scan: what it reports, what it defuses, and that it never follows a link."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from scoperun import ExecutionRequest, Executor, Settings
from scoperun.models import Hazard
from scoperun.safety.hazards import MAX_REPORTED, display_path, scan_case, walk_no_follow
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE, OTHER_CASE


def kinds(case: Path) -> dict[str, dict]:
    return {h.path: h.model_dump() for h in scan_case(case).hazards}


def test_symlinks_leaving_the_case_are_reported_inside_ones_not(workspace: Path) -> None:
    """Absolute and `..` symlinks leaving the case are hazards; a link to a file of the case is not."""
    case = workspace / "projects" / CASE
    os.symlink("/etc/passwd", case / "passwd")
    os.symlink(f"../{OTHER_CASE}", case / "other")
    os.symlink("notes/intake.txt", case / "fine")
    os.symlink("missing/../../..", case / "dangling-up")
    found = kinds(case)
    assert found["passwd"]["kind"] == "symlink-outside" and found["passwd"]["target"] == "/etc/passwd"
    assert found["other"]["kind"] == "symlink-outside"
    assert found["dangling-up"]["kind"] == "symlink-outside"
    assert "fine" not in found


def test_walk_never_descends_through_a_symlinked_folder(workspace: Path) -> None:
    """A symlink to another case's folder is listed as a link, and nothing behind it is walked."""
    case = workspace / "projects" / CASE
    os.symlink(workspace / "projects" / OTHER_CASE, case / "other")
    names = {rel for rel, _ in walk_no_follow(case)}
    assert b"other" in names
    assert not any(n.startswith(b"other/") for n in names)


def test_setuid_and_setgid_bits_are_reported_and_removed(workspace: Path) -> None:
    """A setuid/setgid file is reported and its bits are cleared; the rest of its mode stays."""
    target = workspace / "projects" / CASE / "tool"
    target.write_bytes(b"#!/bin/sh\n")
    os.chmod(target, 0o6755)
    report = scan_case(workspace / "projects" / CASE)
    assert {h.kind for h in report.hazards} == {"setuid", "setgid"}
    assert all(h.neutralised for h in report.hazards)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_fifo_and_socket_are_reported(workspace: Path) -> None:
    """Named pipes and sockets in the case are hazards (a host reader could block on a FIFO)."""
    import socket

    case = workspace / "projects" / CASE
    os.mkfifo(case / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(case / "sock"))
    sock.close()
    found = kinds(case)
    assert found["pipe"]["kind"] == "fifo" and found["sock"]["kind"] == "socket"


def test_hardlinks_count_links_outside_the_case(workspace: Path) -> None:
    """A hard link to a file outside the case reports its outside links; links within the case report 0."""
    case = workspace / "projects" / CASE
    os.link(workspace / "projects" / OTHER_CASE / "secret.txt", case / "stolen.txt")
    os.link(case / "notes" / "intake.txt", case / "intake-copy.txt")
    found = kinds(case)
    assert found["stolen.txt"]["kind"] == "hardlink" and found["stolen.txt"]["outside_links"] == 1
    assert found["intake-copy.txt"]["outside_links"] == 0


def test_odd_names_are_reported_in_printable_json_safe_form(workspace: Path) -> None:
    """Names with newlines or non-UTF-8 bytes come back escaped, and survive json.dumps."""
    case = os.fsencode(workspace / "projects" / CASE)
    os.symlink(b"/etc/passwd", os.path.join(case, b"bad\nname\xff"))
    report = scan_case(workspace / "projects" / CASE)
    assert report.hazards[0].path == "bad\\nname\\xff"
    json.dumps([h.model_dump(mode="json") for h in report.as_list()], ensure_ascii=False).encode("utf-8")
    assert display_path(b"ok name.txt") == "ok name.txt"


def test_display_path_takes_printable_ascii_as_is_and_escapes_everything_else() -> None:
    """The fast path (printable ASCII) and the escaping path agree with str.isprintable on every byte."""
    for byte in range(256):
        raw = b"a-" + bytes([byte]) + b"/z.txt"
        ch = raw.decode("utf-8", "backslashreplace")[2:-6]
        want = ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        assert display_path(raw) == "a-" + want + "/z.txt", byte
    assert display_path("café/ü.txt".encode()) == "café/ü.txt"
    assert display_path(b"tab\there\x7f") == "tab\\there\\x7f"


def test_reported_hazards_are_capped_and_the_total_kept(workspace: Path) -> None:
    """More hazards than the cap: the list is capped and a summary entry gives the total."""
    case = workspace / "projects" / CASE
    for i in range(MAX_REPORTED + 5):
        os.symlink("/etc/passwd", case / f"l{i}")
    items = scan_case(case).as_list()
    assert len(items) == MAX_REPORTED + 1
    assert items[-1].kind == "scan-summary" and f"{MAX_REPORTED + 5} hazard(s)" in items[-1].detail
    assert items[-1].is_note and items[-1].model_dump() == {"kind": "scan-summary", "path": "", "detail": items[-1].detail}


def test_hazards_reach_the_result_message_and_audit_record(settings: Settings, workspace: Path) -> None:
    """After a run the executor scans the case: hazards are in the result, its message and its record."""
    case = workspace / "projects" / CASE

    def plant(spec):
        os.symlink("/etc/shadow", case / "shadow")
        return FakeRun()

    ex = Executor(settings, backend=FakeBackend(script=plant))
    result = ex.run(ExecutionRequest(script="Tools/hello.py", case=CASE, write_mode="direct"))
    assert result.hazards == [Hazard(kind="symlink-outside", path="shadow", target="/etc/shadow",
                                     neutralised=False, introduced=True,
                                     detail="symlink leading out of the case; host code must not follow it")]
    assert "the run left hazards in the case (symlink-outside)" in result.message
    record = json.loads((workspace / result.audit_record).read_text())
    assert record["hazards"] == [h.model_dump(mode="json") for h in result.hazards]


def test_fsize_setting_reaches_the_run_spec(workspace: Path) -> None:
    """max_file_size becomes the spec's fsize ulimit in bytes."""
    backend = FakeBackend()
    Executor(Settings(workspace=workspace, max_file_size="8m"), backend=backend).run(
        ExecutionRequest(script="Tools/hello.py", case=CASE))
    assert backend.specs[0].fsize == 8 * 1024**2
