"""Path and case checks: every caller-given path is resolved and kept inside its scope."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scoperun.config import Settings
from scoperun.errors import ScopeError, UnsupportedScriptError, WorkspaceError
from scoperun.scope import Workspace, check_case_name
from tests.conftest import CASE


def ws(settings: Settings) -> Workspace:
    return Workspace.from_settings(settings)


@pytest.mark.parametrize("name", ["Caryn-McCay-MVA-7-30-2023", "Smith v. Jones", "Müller-Ünfall 2024", "Case.2024"])
def test_real_case_names_are_accepted(name: str) -> None:
    """Case names with spaces, dots and unicode letters pass the name check."""
    assert check_case_name(name) == name


@pytest.mark.parametrize("name", ["", " ", "..", ".", "a/b", "..\\x", ".hidden", "bad\x00name", "line\nbreak"])
def test_path_like_case_names_are_refused(name: str) -> None:
    """Empty, dot, separator, NUL and control-character case names are refused."""
    with pytest.raises(ScopeError):
        check_case_name(name)


def test_unknown_case_is_refused(settings: Settings) -> None:
    """A case folder that does not exist is refused with the rule `unknown-case`."""
    with pytest.raises(ScopeError) as info:
        ws(settings).case_dir("Nobody-2020")
    assert info.value.rule == "unknown-case"


def test_symlinked_case_is_refused(settings: Settings, workspace: Path, tmp_path: Path) -> None:
    """A case that is a symlink (to anywhere) is refused."""
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", workspace / "projects" / "Linked-Case")
    with pytest.raises(ScopeError) as info:
        ws(settings).case_dir("Linked-Case")
    assert info.value.rule == "case-symlink"


@pytest.mark.parametrize(
    ("script", "rule"),
    [
        ("Tools/../outside.py", "path-traversal"),
        ("/etc/passwd.py", "absolute-path"),
        ("", "empty-path"),
        ("Tools/x\x00.py", "nul-byte"),
        ("outside.py", "script-outside-allowed"),
        ("Tools/missing.py", "script-not-found"),
        ("Database/script_executions/x.py", "script-outside-allowed"),
    ],
)
def test_bad_script_paths_are_refused(settings: Settings, workspace: Path, script: str, rule: str) -> None:
    """Traversal, absolute, empty, NUL, missing and out-of-folder scripts are refused by rule."""
    (workspace / "outside.py").write_text("")
    (workspace / "Database" / "script_executions" / "x.py").write_text("")
    with pytest.raises(ScopeError) as info:
        ws(settings).resolve_script(script)
    assert info.value.rule == rule


def test_symlink_leaving_tools_is_refused(settings: Settings, workspace: Path) -> None:
    """A script in Tools that is a symlink to a file outside the allowed folders is refused."""
    (workspace / "projects" / CASE / "evil.py").write_text("")
    os.symlink(workspace / "projects" / CASE / "evil.py", workspace / "Tools" / "innocent.py")
    with pytest.raises(ScopeError) as info:
        ws(settings).resolve_script("Tools/innocent.py")
    assert info.value.rule == "script-outside-allowed"


def test_tools_and_temp_scripts_resolve_with_their_interpreter(settings: Settings, workspace: Path) -> None:
    """A .py tool runs with python, a .sh tool with bash, a temp script from Database/temp_scripts."""
    w = ws(settings)
    assert w.resolve_script("Tools/hello.py").interpreter == "python"
    assert w.resolve_script("./Tools/hello.sh").interpreter == "bash"
    (workspace / "Database" / "temp_scripts" / "t.py").write_text("")
    script = w.resolve_script("Database/temp_scripts/t.py")
    assert str(script.container_path) == "/workspace/Database/temp_scripts/t.py"


def test_unsupported_kind_is_refused(settings: Settings, workspace: Path) -> None:
    """A script that is neither .py nor .sh is refused with a message naming both kinds."""
    with pytest.raises(UnsupportedScriptError, match=r"\.py.*\.sh"):
        ws(settings).resolve_script("Tools/notes.rb")


def test_working_dir_must_stay_in_the_case(settings: Settings, workspace: Path) -> None:
    """A working subfolder resolves inside the case; `..` and symlinks out are refused."""
    w = ws(settings)
    case_dir = w.case_dir(CASE)
    host, container = w.working_dir(case_dir, CASE, "notes")
    assert host == case_dir / "notes" and str(container) == f"/workspace/projects/{CASE}/notes"
    with pytest.raises(ScopeError):
        w.working_dir(case_dir, CASE, "../other")
    os.symlink("/etc", case_dir / "etc-link")
    with pytest.raises(ScopeError) as info:
        w.working_dir(case_dir, CASE, "etc-link")
    assert info.value.rule == "workdir-outside-case"


def test_missing_workspace_says_what_to_do(tmp_path: Path) -> None:
    """A missing workspace raises WorkspaceError naming SCOPERUN_WORKSPACE."""
    with pytest.raises(WorkspaceError, match="SCOPERUN_WORKSPACE"):
        Workspace.from_settings(Settings(workspace=tmp_path / "absent"))


def test_temp_script_never_overwrites_nor_follows_symlinks(settings: Settings, workspace: Path, tmp_path: Path) -> None:
    """Writing an agent's script refuses an existing name and a symlink planted under that name."""
    w = ws(settings)
    assert w.write_temp_script("a.py", "print(1)") == "Database/temp_scripts/a.py"
    with pytest.raises(ScopeError):
        w.write_temp_script("a.py", "print(2)")
    target = tmp_path / "victim.txt"
    target.write_text("untouched")
    os.symlink(target, workspace / "Database" / "temp_scripts" / "b.py")
    with pytest.raises(ScopeError):
        w.write_temp_script("b.py", "print(3)")
    assert target.read_text() == "untouched"
    with pytest.raises(ScopeError):
        w.write_temp_script("../escape.py", "x")


def test_unknown_case_lists_close_names_not_a_host_path(settings: Settings) -> None:
    """A run on a misspelled case is rejected with the closest case names and no host path to `ls`."""
    from scoperun import ExecutionRequest
    from scoperun.executor import Executor
    from scoperun.testing import FakeBackend

    result = Executor(settings, backend=FakeBackend()).run(ExecutionRequest(script="Tools/hello.py", case="doe-john-mva"))
    assert result.status.value == "rejected"
    assert f"did you mean '{CASE}'" in result.message and "scoperun cases" in result.message
    assert str(settings.workspace) not in result.message and "`ls" not in result.message
