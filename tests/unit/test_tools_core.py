"""The four tools over the FakeBackend: arguments, the plan's flaws fixed, errors as text, async, adapters."""

from __future__ import annotations

import asyncio
import importlib.machinery
import json
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from scoperun import ExecutionRequest, ExecutionResult, Executor, Settings
from scoperun.testing import FakeBackend, FakeRun
from scoperun.tools import core
from tests.conftest import CASE


def records(workspace: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (workspace / "Database" / "script_executions").glob("*.json")]


@pytest.fixture
def fake() -> FakeBackend:
    """A backend that prints the script it was asked to run."""
    return FakeBackend(script=lambda spec: FakeRun(stdout=f"ran {spec.command[1]}\n".encode()))


@pytest.fixture
def ex(settings: Settings, fake: FakeBackend) -> Executor:
    """An executor on the fake backend and the test workspace."""
    return Executor(settings, backend=fake)


def test_script_name_and_working_dir_forms(ex: Executor, fake: FakeBackend) -> None:
    """`x.py` and `Tools/x.py` both run Tools/x.py; the plan's `projects/<case>/sub` working dir is understood."""
    a = core.execute_script_on_filesystem(ex, "hello.py", CASE, ["--format", "json"])
    b = core.execute_script_on_filesystem(ex, "Tools/hello.py", CASE, working_dir=f"projects/{CASE}/notes")
    assert a.ok and b.ok
    assert [s.command[1] for s in fake.specs] == ["/workspace/Tools/hello.py"] * 2
    assert fake.specs[0].command[2:] == ("--format", "json")
    assert fake.specs[1].working_dir == f"/workspace/projects/{CASE}/notes"
    assert "Arguments: --format json" in a and "Status: ✅ Success" in a


def test_the_plans_custom_script_path_is_refused(ex: Executor, fake: FakeBackend) -> None:
    """The plan's `../Database/temp_scripts/x` is a traversal: rejected with that reason, nothing runs."""
    reply = core.execute_script_on_filesystem(ex, "../Database/temp_scripts/temp_script.py", CASE)
    assert not reply.ok and fake.specs == []
    assert "⛔ Rejected" in reply and "rejected (path-traversal)" in reply and "Nothing ran" in reply
    absolute = core.execute_script_on_filesystem(ex, "/etc/passwd", CASE)
    assert "rejected (absolute-path)" in absolute and fake.specs == []


def test_working_dir_leaving_the_case_is_refused(ex: Executor, fake: FakeBackend) -> None:
    """A working directory outside the case is rejected before anything runs."""
    reply = core.execute_script_on_filesystem(ex, "hello.py", CASE, working_dir="../Roe-Jane-SlipFall-2023")
    assert not reply.ok and fake.specs == [] and "rejected (" in reply


def test_custom_scripts_are_really_written_and_never_overwritten(ex: Executor, workspace: Path,
                                                                 fake: FakeBackend) -> None:
    """Each custom script is written to temp_scripts under its own name and that file is what runs."""
    first = core.execute_custom_script(ex, "print('one')", CASE)
    second = core.execute_custom_script(ex, "print('two')", CASE)
    assert first.ok and second.ok
    paths = [Path(r.result.script) for r in (first, second)]
    assert paths[0] != paths[1] and all(p.parent == Path("Database/temp_scripts") for p in paths)
    assert all(p.name.endswith("_temp_script.py") for p in paths)
    assert [(workspace / p).read_text() for p in paths] == ["print('one')", "print('two')"]
    assert [s.command[1] for s in fake.specs] == [f"/workspace/{p}" for p in paths]


def test_empty_or_huge_custom_scripts_are_refused(ex: Executor, fake: FakeBackend) -> None:
    """Empty code and code over the size limit are refused with a reason; nothing runs."""
    assert "script_content is empty" in core.execute_custom_script(ex, "  \n", CASE)
    assert "limit" in core.execute_custom_script(ex, "x" * (core.MAX_SCRIPT_CHARS + 1), CASE)
    assert fake.specs == []


def test_unusable_workspace_and_bad_arguments_become_text(tmp_path: Path) -> None:
    """A missing workspace and invalid arguments come back as clear text, never as an exception."""
    ex = Executor(Settings(workspace=tmp_path / "missing"), backend=FakeBackend())
    reply = core.execute_script_on_filesystem(ex, "hello.py", CASE)
    assert not reply.ok and "workspace is not usable" in reply and "Nothing ran" in reply
    assert "workspace is not usable" in core.execute_custom_script(ex, "print(1)", CASE)
    assert "workspace is not usable" in asyncio.run(core.aexecute_script_on_filesystem(ex, "hello.py", CASE))
    bad = core.execute_script_on_filesystem(Executor(Settings(workspace=tmp_path), backend=FakeBackend()),
                                            "hello.py", CASE, ["a\x00b"])
    assert bad.startswith("⛔ Invalid arguments, nothing ran: args: ")


def test_async_tools_run_off_the_event_loop_thread(settings: Settings) -> None:
    """The async tools run the container work on worker threads, never on the event loop's thread."""
    threads: list[int] = []
    backend = FakeBackend(script=lambda spec: (threads.append(threading.get_ident()), FakeRun())[1])
    ex = Executor(settings, backend=backend)

    async def main() -> tuple[int, list[core.ToolReply]]:
        replies = await asyncio.gather(core.aexecute_script_on_filesystem(ex, "hello.py", CASE),
                                       core.aexecute_custom_script(ex, "print(1)", CASE),
                                       core.amonitor_script_executions(ex))
        return threading.get_ident(), list(replies)

    loop_thread, replies = asyncio.run(main())
    assert all(r.ok for r in replies) and len(threads) == 2
    assert loop_thread not in threads


def test_monitor_reports_the_runs(ex: Executor) -> None:
    """monitor_script_executions counts the runs the other tools made."""
    core.execute_script_on_filesystem(ex, "hello.py", CASE)
    core.execute_script_on_filesystem(ex, "../x.py", CASE)
    text = core.monitor_script_executions(ex)
    assert "2 runs" in text and "- succeeded: 1" in text and "- rejected: 1" in text


# -- the browser tool, against the contract of scoperun.browser -----------------------------------


class Goto(BaseModel):
    kind: Literal["goto"]
    url: str


class ExtractText(BaseModel):
    kind: Literal["extract_text"]
    selector: str
    name: str


Action = Annotated[Goto | ExtractText, Field(discriminator="kind")]


class BrowserRequest(BaseModel):
    url: str
    actions: list[Action]
    case: str
    save_screenshots: bool = True
    network: str | None = None
    timeout: float | None = None
    requested_by: str | None = None


@dataclass
class BrowserResult:
    execution: ExecutionResult
    final_url: str | None
    title: str | None
    extracted: dict[str, str | list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    failed_action: int | None = None
    error: str | None = None


@pytest.fixture
def fake_browser(monkeypatch: pytest.MonkeyPatch) -> list[BrowserRequest]:
    """Install a stand-in `scoperun.browser` honouring the agreed contract; returns the requests it got."""
    calls: list[BrowserRequest] = []

    def run_browser(executor: Executor, request: BrowserRequest) -> BrowserResult:
        calls.append(request)
        execution = executor.run(ExecutionRequest(script="Tools/hello.py", case=request.case,
                                                  requested_by=request.requested_by))
        return BrowserResult(execution=execution, final_url=request.url + "done", title="Records",
                             extracted={"total": "$1,234"}, files=["browser/final.png"])

    module = types.ModuleType("scoperun.browser")
    module.__spec__ = importlib.machinery.ModuleSpec("scoperun.browser", loader=None)
    module.Action, module.BrowserRequest, module.BrowserResult, module.run_browser = (
        Action, BrowserRequest, BrowserResult, run_browser)
    monkeypatch.setitem(sys.modules, "scoperun.browser", module)
    return calls


def test_browser_tool_follows_the_contract(ex: Executor, fake_browser: list[BrowserRequest]) -> None:
    """The browser tool builds a BrowserRequest from its arguments and renders the BrowserResult."""
    actions = [{"kind": "goto", "url": "http://127.0.0.1:9/next"},
               {"kind": "extract_text", "selector": "h1", "name": "title"}]
    reply = core.execute_browser_automation(ex, "http://127.0.0.1:9/", actions, CASE, save_screenshots=False,
                                            requested_by="tester")
    assert reply.ok, reply
    request = fake_browser[0]
    assert (request.url, request.case, request.save_screenshots, request.requested_by) == (
        "http://127.0.0.1:9/", CASE, False, "tester")
    assert [a.kind for a in request.actions] == ["goto", "extract_text"]
    assert "**Browser Automation: exec_" in reply and '"total": "$1,234"' in reply
    assert "- browser/final.png" in reply and "Final URL: http://127.0.0.1:9/done" in reply
    invalid = core.execute_browser_automation(ex, "http://127.0.0.1:9/", [{"kind": "eval", "code": "x"}], CASE)
    assert not invalid.ok and invalid.startswith("⛔ Invalid arguments, nothing ran")
    assert len(fake_browser) == 1


def test_adapters_register_the_browser_tool_with_its_action_schema(ex: Executor,
                                                                   fake_browser: list[BrowserRequest]) -> None:
    """With scoperun.browser present, LangChain and MCP both offer the browser tool with the real action schema."""
    from scoperun.tools.langchain import make_tools
    from scoperun.tools.mcp import build_server

    tools = {t.name: t for t in make_tools(ex)}
    assert "execute_browser_automation" in tools
    schema = json.dumps(tools["execute_browser_automation"].tool_call_schema.model_json_schema())
    assert "extract_text" in schema
    reply = tools["execute_browser_automation"].invoke(
        {"url": "http://127.0.0.1:9/", "actions": [{"kind": "goto", "url": "http://127.0.0.1:9/a"}],
         "case_name": CASE})
    assert "**Browser Automation:" in reply and fake_browser[0].actions[0].kind == "goto"
    mcp_tools = asyncio.run(build_server(ex).list_tools())
    browser = next(t for t in mcp_tools if t.name == "execute_browser_automation")
    assert "extract_text" in json.dumps(browser.input_schema)

