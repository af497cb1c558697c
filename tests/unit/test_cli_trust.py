"""The command line through typer's runner: exit codes, messages, views, --version, --quiet (no engine)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from scoperun.audit.log import AuditLog
from scoperun.cli.common import EXIT_CODES, Col, fitted_table, status_line
from scoperun.cli.main import app
from scoperun.testing import fake_records
from tests.conftest import CASE

README = Path(__file__).resolve().parents[2] / "README.md"
ID = "exec_20261129_191300_abcdef12"


def invoke(workspace: Path, *args: str, env: dict[str, str] | None = None):
    runner = CliRunner()
    return runner.invoke(app, ["--workspace", str(workspace), *args], env=env, catch_exceptions=False)


def _records(workspace: Path, count: int = 6) -> list[dict]:
    audit = AuditLog(workspace / "Database" / "script_executions")
    records = fake_records(count, seed=3)
    records[0].update(execution_id=ID, status="failed", message="the script exited with code 3", exit_code=3,
                      case_name="Sample-Client-With-A-Very-Long-Case-Name-MVA-1-15-2025",
                      script_path="Tools/a_script_with_a_rather_long_name_for_tables.py",
                      script_sha256="ab" * 32, image_id="sha256:" + "cd" * 32, args=["--format", "json"])
    for r in records:
        audit.write(r)
    return records


def test_readme_exit_code_table_matches_the_code() -> None:
    """README's "Exit codes" table has exactly the rows of `EXIT_CODES`, in order, word for word."""
    text = README.read_text()
    section = text[text.index("### Exit codes"):]
    section = section[: section.index("\n## ")]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, flags=re.M)
    assert rows == list(EXIT_CODES)


def test_exit_codes_are_used_by_the_code() -> None:
    """Every numeric row of the table is a constant the CLI uses."""
    from scoperun.cli import common

    constants = {v for k, v in vars(common).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert {int(c) for c, _ in EXIT_CODES if c.isdigit()} == constants


def test_version_option(workspace: Path) -> None:
    """`scoperun --version` prints the version and exits 0."""
    from scoperun import __version__

    result = invoke(workspace, "--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"scoperun {__version__}"


def test_unknown_option_hints_that_script_arguments_follow_double_dash(workspace: Path) -> None:
    """`run SCRIPT --format json` (no `--`) is bad usage (2) whose message says script arguments follow `--`."""
    result = invoke(workspace, "run", "Tools/hello.py", "--case", CASE, "--format", "json")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "No such option: --format" in text and "after `--`" in text


def test_unknown_status_is_refused(workspace: Path) -> None:
    """`audit list --status bogus` exits 2 naming the valid statuses (not "no runs match" with 0)."""
    result = invoke(workspace, "audit", "list", "--status", "bogus")
    assert result.exit_code == 2
    assert "succeeded" in result.output and "no runs match" not in result.output


def test_status_words_are_never_doubled() -> None:
    """The summary says a status once, whatever the message starts with."""
    assert status_line("rejected", "rejected (network): no") == "rejected (network): no"
    assert status_line("succeeded", "succeeded") == "succeeded"
    assert status_line("succeeded", "succeeded; the run left hazards") == "succeeded; the run left hazards"
    assert status_line("timed_out", "timed out after 2 s") == "timed out after 2 s"
    assert status_line("failed", "the script exited with code 7") == "failed: the script exited with code 7"


def test_refused_run_says_nothing_ran_and_why(workspace: Path) -> None:
    """A run refused by scope checks: 2, one status word, no "exit None" timings, a folder-specific remedy."""
    result = invoke(workspace, "run", "Tools/hello.py", "--case", CASE, "--working-dir", "../..")
    assert result.exit_code == 2
    err = " ".join(result.stderr.split())
    assert "rejected (path-traversal)" in err and "rejected rejected" not in err
    assert "nothing ran" in err and "exit None" not in err and "start 0.00" not in err
    assert "folder inside the case" in err and "name the file" not in err
    quiet = invoke(workspace, "-q", "run", "Tools/hello.py", "--case", CASE, "--working-dir", "../..")
    assert quiet.exit_code == 2 and quiet.stdout == ""
    assert "rejected (path-traversal)" in quiet.stderr and "audit record" not in quiet.stderr


@pytest.mark.parametrize("width", [60, 80, 120, 160])
def test_tables_never_cut_an_id(width: int) -> None:
    """At any terminal width from 60 columns, each id is printed whole; long names fold or columns go."""
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    cols = [Col("execution id", keep=True), Col("case"), Col("script"), Col("elapsed", drop=1), Col("memory", drop=2)]
    rows = [[f"exec_20261129_19130{i}_abcdef1{i}", "Sample-Client-With-A-Very-Long-Name-MVA-1-15-2025",
             "Tools/create_file_inventory.py", "12 s", "10.5 MiB"] for i in range(3)]
    table, dropped = fitted_table(console, cols, rows)
    assert table is not None
    console.print(table)
    text = console.file.getvalue()
    for row in rows:
        assert row[0] in text
    assert max(len(line) for line in text.splitlines()) <= width
    if width >= 160:
        assert dropped == [] and rows[0][1] in text


def test_audit_views_are_readable(workspace: Path) -> None:
    """`audit list` keeps ids, cases and scripts whole; `audit show` is a summary with full hashes; --json has all."""
    records = _records(workspace)
    listed = invoke(workspace, "audit", "list")
    assert listed.exit_code == 0
    for r in records:
        if r["status"] != "running":
            assert r["execution_id"] in listed.stdout
    assert records[0]["case_name"] in listed.stdout and records[0]["script_path"] in listed.stdout
    shown = invoke(workspace, "audit", "show", ID)
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[0].startswith(f"{ID}  failed: the script exited with code 3")
    assert "ab" * 32 in shown.stdout and "cd" * 32 in shown.stdout
    assert "Tools/a_script_with_a_rather_long_name_for_tables.py --format json" in shown.stdout
    assert not any(line.lstrip().startswith(("{", "[")) for line in shown.stdout.splitlines())
    assert len(shown.stdout.splitlines()) < 40
    as_json = json.loads(invoke(workspace, "audit", "show", ID, "--json").stdout)
    assert as_json["record"]["limits"] == records[0]["limits"]


def test_stats_are_rich_tables_even_when_piped(workspace: Path) -> None:
    """`stats` prints tables (no markdown bold or pipe tables); `--markdown` keeps the agent's text."""
    records = _records(workspace, 30)
    newest = max(records, key=lambda r: r["started_at"])["execution_id"]
    result = invoke(workspace, "stats")
    assert result.exit_code == 0
    assert "**" not in result.stdout and "|---" not in result.stdout
    assert "Success metrics" in result.stdout and "Recent runs" in result.stdout and newest in result.stdout
    assert "**Execution statistics**" in invoke(workspace, "stats", "--markdown").stdout


def test_quiet_prints_only_ids(workspace: Path) -> None:
    """`scoperun -q audit list` prints one id per line and nothing else."""
    records = _records(workspace)
    result = invoke(workspace, "-q", "audit", "list")
    lines = result.stdout.split()
    assert lines and all(re.fullmatch(r"exec_\w+", line) for line in lines)
    assert ID in lines and len(lines) == len([r for r in records])


def _scoperun(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scoperun", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_engine_unreachable_is_125_everywhere_and_names_the_address(workspace: Path) -> None:
    """With DOCKER_HOST pointing nowhere, ps, stop, gc, run, image build and files read all exit 125 and name
    the address tried."""
    env = {"DOCKER_HOST": "tcp://127.0.0.1:9", "SCOPERUN_WORKSPACE": str(workspace)}
    (workspace / "projects" / CASE / "notes" / "report.pdf").write_bytes(b"%PDF-1.4\n")
    for args in (["ps"], ["stop", "--all"], ["gc"], ["run", "Tools/hello.py", "--case", CASE],
                 ["image", "build"], ["files", "read", CASE, "notes/report.pdf"]):
        proc = _scoperun(*args, env=env)
        assert proc.returncode == 125, (args, proc.stdout, proc.stderr)
        assert "tcp://127.0.0.1:9" in proc.stderr and "DOCKER_HOST" in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_no_color_is_honoured(workspace: Path) -> None:
    """FORCE_COLOR gives colours; NO_COLOR takes them away again."""
    env = {"SCOPERUN_WORKSPACE": str(workspace), "FORCE_COLOR": "1"}
    colour = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*38;")
    refused = ["audit", "list", "--status", "bogus"]
    assert colour.search(_scoperun(*refused, env=env).stderr)
    assert not colour.search(_scoperun(*refused, env={**env, "NO_COLOR": "1"}).stderr)


def test_completion_installs_and_completes(tmp_path: Path) -> None:
    """`completion install bash` writes a script sourced by ~/.bashrc; the command completes subcommands."""
    env = {"HOME": str(tmp_path), "SHELL": "/bin/bash"}
    proc = _scoperun("completion", "install", "bash", env=env)
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / ".bash_completions" / "scoperun.sh"
    assert script.is_file() and f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    done = _scoperun(env={**env, "_SCOPERUN_COMPLETE": "complete_bash", "COMP_WORDS": "scoperun au",
                          "COMP_CWORD": "1"})
    assert done.stdout.split() == ["audit"]
