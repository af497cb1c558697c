"""`scoperun mcp` on the real engine, driven by the official MCP client over stdio and streamable HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import CASE
from tests.integration.conftest import IMAGE, assert_no_containers_left, read_record

ROOT = Path(__file__).resolve().parents[2]
SCOPERUN = str(Path(sys.executable).parent / "scoperun")
TOKEN = "test-token-" + "7f3a9c" * 6
PLAN_TOOLS = ["execute_script_on_filesystem", "execute_custom_script", "monitor_script_executions"]


def server_env(workspace: Path, **extra: str) -> dict[str, str]:
    """Environment for a scoperun server process on the test workspace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPERUN_")}
    env.update({"SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none",
                "SCOPERUN_TIMEOUT": "60", **extra})
    return env


def audit_ids(workspace: Path) -> set[str]:
    return {p.stem for p in (workspace / "Database" / "script_executions").glob("*.json")}


def text(result) -> str:
    return result.content[0].text


def execution_id(result) -> str:
    return re.search(r"\*\*Script Execution: (exec_\w+)\*\*", text(result)).group(1)


async def exercise_tools(client: Client, workspace: Path) -> None:
    """List the tools, call each one, and make a run fail and a run be rejected."""
    tools = (await client.list_tools()).tools
    assert [t.name for t in tools][:3] == PLAN_TOOLS
    assert all(p.get("description") for t in tools for p in t.input_schema.get("properties", {}).values())

    ok = await client.call_tool("execute_script_on_filesystem", {"script_name": "hello.py", "case_name": CASE})
    assert not ok.is_error, text(ok)
    assert "Status: ✅ Success" in text(ok) and f"hello from {CASE}" in text(ok)
    assert read_record(workspace, execution_id(ok))["status"] == "succeeded"

    code = "import pathlib\npathlib.Path('from_mcp.txt').write_text('written over MCP')\nprint('wrote it')\n"
    custom = await client.call_tool("execute_custom_script",
                                    {"script_content": code, "case_name": CASE, "script_name": "mcp_write.py"})
    assert not custom.is_error, text(custom)
    assert (workspace / "projects" / CASE / "from_mcp.txt").read_text() == "written over MCP"
    assert (workspace / "Database" / "temp_scripts" / f"{execution_id(custom)}_mcp_write.py").read_text() == code

    (workspace / "Tools" / "boom.py").write_text("import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n")
    failed = await client.call_tool("execute_script_on_filesystem", {"script_name": "boom.py", "case_name": CASE})
    assert failed.is_error and "Status: ❌ Failed" in text(failed) and "Exit Code: 3" in text(failed)
    assert "about to fail" in text(failed)

    before = set(audit_ids(workspace))
    rejected = await client.call_tool("execute_script_on_filesystem",
                                      {"script_name": "../Database/temp_scripts/x.py", "case_name": CASE})
    assert rejected.is_error and "⛔ Rejected" in text(rejected) and "rejected (path-traversal)" in text(rejected)
    assert read_record(workspace, execution_id(rejected))["status"] == "rejected"
    assert audit_ids(workspace) - before == {execution_id(rejected)}

    stats = await client.call_tool("monitor_script_executions", {})
    assert not stats.is_error
    assert "- succeeded: 2" in text(stats) and "- failed: 1" in text(stats) and "- rejected: 1" in text(stats)


def test_stdio_server_from_the_documented_client_config(workspace: Path, docker_client) -> None:
    """The stdio JSON config of docs/agents.md starts a server the official client can use for every tool."""
    doc = (ROOT / "docs" / "agents.md").read_text()
    config = json.loads(re.search(r"```json\n(.*?)```", doc, re.DOTALL).group(1))["mcpServers"]["scoperun"]
    assert config["command"] == "scoperun" and config["args"] == ["mcp"]
    params = StdioServerParameters(command=SCOPERUN, args=config["args"],
                                   env=server_env(workspace, **{**config["env"], "SCOPERUN_WORKSPACE": str(workspace)}))

    async def main() -> None:
        async with Client(params) as client:
            await exercise_tools(client, workspace)

    try:
        anyio.run(main)
    finally:
        assert_no_containers_left(docker_client, workspace)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(workspace: Path, docker_client) -> Iterator[str]:
    """`scoperun mcp --http` on a free loopback port with a token and a 5 s run timeout; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([SCOPERUN, "mcp", "--http", "--host", "127.0.0.1", "--port", str(port)],
                            env=server_env(workspace, SCOPERUN_MCP_TOKEN=TOKEN, SCOPERUN_TIMEOUT="5"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"scoperun mcp --http did not start: {proc.communicate()[0]}")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        assert_no_containers_left(docker_client, workspace)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@contextlib.asynccontextmanager
async def authed(url: str, token: str = TOKEN) -> AsyncIterator[Client]:
    """The official client with the bearer token on every request (the HTTP client given to it is ours to close)."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:
        yield client


def test_http_server_with_token_runs_every_tool(http_server: str, workspace: Path) -> None:
    """Over streamable HTTP with the token: every tool works, failures and refusals are flagged, timeouts said."""
    async def main() -> None:
        async with authed(http_server) as client:
            await exercise_tools(client, workspace)
            slow = await client.call_tool("execute_custom_script",
                                          {"script_content": "import time\nprint('started', flush=True)\n"
                                                             "time.sleep(60)\n", "case_name": CASE})
            assert slow.is_error and "Status: ⏱ Timed out" in text(slow)
            assert "What happened: timed out after 5 s; the container was killed" in text(slow)
            assert read_record(workspace, execution_id(slow))["status"] == "timed_out"

    anyio.run(main)


def test_http_server_refuses_requests_without_the_token(http_server: str, workspace: Path) -> None:
    """Without the exact bearer token the server answers 401 and nothing runs; the official client fails."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "execute_custom_script", "arguments": {"script_content": "print(1)", "case_name": CASE}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for auth in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx2.post(http_server, json=call, headers={**headers, **auth})
        assert response.status_code == 401, auth
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def without_token() -> None:
        async with Client(http_server) as client:
            await client.list_tools()

    async def wrong_token() -> None:
        async with authed(http_server, "not-the-token") as client:
            await client.list_tools()

    for attempt in (without_token, wrong_token):
        with pytest.raises(Exception) as info:  # the SDK wraps its MCPError in task-group ExceptionGroups
            anyio.run(attempt)
        assert any(isinstance(e, MCPError) for e in leaves(info.value)), repr(info.value)
    assert audit_ids(workspace) == set()
    assert not any((workspace / "Database" / "temp_scripts").iterdir())
