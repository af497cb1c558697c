"""The LangChain and MCP adapters over the FakeBackend: schemas for an LLM, errors flagged, the token check."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scoperun import Executor, Settings
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE

PLAN_TOOLS = ["execute_script_on_filesystem", "execute_custom_script", "monitor_script_executions"]


@pytest.fixture
def ex(settings: Settings) -> Executor:
    """An executor whose fake runs fail when the script is Tools/fail.py."""
    backend = FakeBackend(script=lambda spec: FakeRun(exit_code=2, stderr=b"boom\n") if "fail" in spec.command[1]
                          else FakeRun(stdout=b"ok\n"))
    return Executor(settings, backend=backend)


def test_langchain_tools_are_described_for_a_model(ex: Executor) -> None:
    """make_tools gives the plan's tools, sync and async, each with an example and every argument described."""
    from scoperun.tools.langchain import make_tools

    tools = make_tools(ex)
    assert [t.name for t in tools][:3] == PLAN_TOOLS
    for tool in tools:
        assert tool.func is not None and tool.coroutine is not None
        assert "Example:" in tool.description
        schema = tool.tool_call_schema.model_json_schema()
        assert "config" not in schema.get("properties", {})
        assert all(p.get("description") for p in schema.get("properties", {}).values()), tool.name


def test_langchain_tools_record_the_thread_and_answer_bad_arguments(ex: Executor, workspace: Path) -> None:
    """The thread id reaches the audit record; invalid arguments come back as text for the model."""
    from scoperun.tools.langchain import make_tools

    script_tool = make_tools(ex, requested_by="paralegal")[0]
    reply = asyncio.run(script_tool.ainvoke({"script_name": "hello.py", "case_name": CASE},
                                            config={"configurable": {"thread_id": "t-7"}}))
    assert "Status: ✅ Success" in reply
    record = json.loads(next((workspace / "Database/script_executions").glob("*.json")).read_text())
    assert record["requested_by"] == "paralegal/thread-t-7"
    bad = script_tool.invoke({"type": "tool_call", "id": "c1", "name": script_tool.name,
                              "args": {"script_name": "hello.py"}})
    assert "Invalid arguments" in bad.content and "case_name" in bad.content


def test_mcp_server_lists_described_tools_and_flags_failures(ex: Executor) -> None:
    """Over an in-process MCP client: the plan's tools with described arguments; failures and refusals are errors."""
    from mcp import Client

    from scoperun.tools.mcp import build_server

    async def main() -> None:
        async with Client(build_server(ex)) as client:
            tools = (await client.list_tools()).tools
            assert [t.name for t in tools][:3] == PLAN_TOOLS
            props = tools[0].input_schema["properties"]
            assert set(props) == {"script_name", "case_name", "script_args", "working_dir"}
            assert all(p.get("description") for p in props.values())
            assert tools[0].input_schema["required"] == ["script_name", "case_name"]
            ok = await client.call_tool("execute_script_on_filesystem", {"script_name": "hello.py", "case_name": CASE})
            assert not ok.is_error and "Status: ✅ Success" in ok.content[0].text
            (ex.workspace.tools / "fail.py").write_text("raise SystemExit(2)\n")
            failed = await client.call_tool("execute_script_on_filesystem",
                                            {"script_name": "fail.py", "case_name": CASE})
            assert failed.is_error and "Exit Code: 2" in failed.content[0].text
            rejected = await client.call_tool("execute_custom_script",
                                              {"script_content": "print(1)", "case_name": "../etc"})
            assert rejected.is_error and "rejected (case-name)" in rejected.content[0].text

    asyncio.run(main())


def test_bearer_token_middleware() -> None:
    """Requests without the exact bearer token get 401 with WWW-Authenticate; the right token passes."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from scoperun.tools.mcp import BearerTokenMiddleware

    inner = Starlette(routes=[Route("/mcp", lambda request: PlainTextResponse("inside"), methods=["POST"])])
    client = TestClient(BearerTokenMiddleware(inner, "s3cret-token"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                    {"Authorization": "Bearer s3cret-token-and-more"}):
        response = client.post("/mcp", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/mcp", headers={"Authorization": "Bearer s3cret-token"}).text == "inside"


def test_is_loopback() -> None:
    """Only localhost and loopback addresses count as loopback."""
    from scoperun.tools.mcp import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "example.com", "::"]))


@pytest.mark.parametrize(("args", "message"), [
    (["mcp", "--http"], "without a token"),
    (["mcp", "--http", "--no-auth", "--host", "0.0.0.0"], "only allowed on a loopback"),
    (["mcp", "--no-auth"], "only applies to --http"),
])
def test_mcp_command_refuses_unsafe_http(args: list[str], message: str, workspace: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`scoperun mcp` refuses HTTP without a token, --no-auth off loopback, and --no-auth without --http."""
    from scoperun.cli.main import app

    monkeypatch.delenv("SCOPERUN_MCP_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["-w", str(workspace), *args])
    assert result.exit_code == 2
    assert message in " ".join((result.stderr or result.output).split())


def test_core_and_cli_import_without_langchain_or_mcp() -> None:
    """scoperun, its tools and CLI import without LangChain and the MCP SDK; the adapters say what to install."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('langchain_core', 'langchain', 'langgraph', 'mcp'):\n"
        "    sys.modules[name] = None\n"
        "import scoperun, scoperun.tools, scoperun.cli.main\n"
        "from scoperun.errors import ConfigError\n"
        "for adapter in ('scoperun.tools.langchain', 'scoperun.tools.mcp'):\n"
        "    try:\n"
        "        __import__(adapter)\n"
        "    except ConfigError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'scoperun[langchain]'" in out and "pip install 'scoperun[mcp]'" in out


FILE_TOOLS = ["list_cases", "list_files", "read_file", "read_document", "search_files", "write_file"]


def test_file_tools_are_offered_by_both_adapters(ex: Executor) -> None:
    """make_tools and MCP offer the case/file tools, every argument described; MCP marks reads read-only."""
    from mcp import Client

    from scoperun.tools.langchain import make_tools
    from scoperun.tools.mcp import build_server

    names = [t.name for t in make_tools(ex)]
    assert names[3:9] == FILE_TOOLS

    async def main() -> None:
        async with Client(build_server(ex)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(FILE_TOOLS) <= set(tools)
            for name in FILE_TOOLS:
                props = tools[name].input_schema.get("properties", {})
                assert all(p.get("description") for p in props.values()), name
                assert "Example:" in (tools[name].description or "")
            assert tools["read_document"].annotations.read_only_hint
            assert not tools["write_file"].annotations.read_only_hint
            listed = await client.call_tool("list_cases", {})
            assert not listed.is_error and CASE in listed.content[0].text
            unknown = await client.call_tool("read_file", {"case_name": "doe-john", "path": "notes/intake.txt"})
            assert unknown.is_error and f"did you mean '{CASE}'" in unknown.content[0].text
            read = await client.call_tool("read_file", {"case_name": CASE, "path": "notes/intake.txt"})
            assert not read.is_error and f"intake for {CASE}" in read.content[0].text

    asyncio.run(main())


def test_file_tools_record_the_langchain_thread(ex: Executor, workspace: Path) -> None:
    """A LangChain file-tool call is audited under requested_by plus the graph's thread id."""
    from scoperun.files import read_access_events
    from scoperun.tools.langchain import make_tools

    tools = {t.name: t for t in make_tools(ex, requested_by="paralegal")}
    reply = tools["list_files"].invoke({"case_name": CASE, "path": "notes"},
                                       config={"configurable": {"thread_id": "9"}})
    assert "notes/intake.txt" in reply
    event = read_access_events(ex.settings, ex.workspace.root)[-1]
    assert event["event"] == "files.list" and event["by"] == "paralegal/thread-9"
