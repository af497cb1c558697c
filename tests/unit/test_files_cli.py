"""`scoperun cases` and `scoperun files ...` on real files (no engine): output, exit codes, escaping."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from scoperun.cli.main import app
from tests.conftest import CASE

runner = CliRunner()


def _run(workspace: Path, *args: str, stdin: bytes | None = None):
    return runner.invoke(app, ["-w", str(workspace), *args], input=stdin)


def test_cases_ls_cat_and_refusals(workspace: Path) -> None:
    """cases lists both cases; ls and cat show a case's files; an unknown case exits 2 with suggestions."""
    listed = _run(workspace, "cases")
    assert listed.exit_code == 0 and CASE in listed.output and "2 files" in listed.output
    assert "notes/intake.txt" in _run(workspace, "files", "ls", CASE, "-r").output
    assert f"intake for {CASE}" in _run(workspace, "files", "cat", CASE, "notes/intake.txt").output
    unknown = _run(workspace, "files", "ls", "doe-john")
    assert unknown.exit_code == 2 and f"did you mean '{CASE}'" in unknown.output
    traversal = _run(workspace, "files", "cat", CASE, "../Roe-Jane-SlipFall-2023/secret.txt")
    assert traversal.exit_code == 2 and "path-traversal" in traversal.output


def test_put_get_round_trip_and_no_overwrite(workspace: Path, tmp_path: Path) -> None:
    """put stages and applies exact bytes (with the undo command); get writes them back and never overwrites."""
    blob = bytes(range(256))
    src = tmp_path / "in.bin"
    src.write_bytes(blob)
    put = _run(workspace, "files", "put", CASE, "uploads/in.bin", str(src))
    assert put.exit_code == 0 and "scoperun rollback exec_" in put.output
    dest = tmp_path / "out.bin"
    assert _run(workspace, "files", "get", CASE, "uploads/in.bin", str(dest)).exit_code == 0
    assert dest.read_bytes() == blob
    again = _run(workspace, "files", "get", CASE, "uploads/in.bin", str(dest))
    assert again.exit_code == 2 and "never overwrites" in again.output


def test_control_characters_in_names_are_escaped(workspace: Path) -> None:
    """A file name carrying a terminal escape sequence is printed with the escape shown, not sent."""
    (workspace / "projects" / CASE / "evil\x1b[2Jname.txt").write_text("x")
    listed = _run(workspace, "files", "ls", CASE)
    assert "\x1b" not in listed.output and "evil\\x1b[2Jname.txt" in listed.output
