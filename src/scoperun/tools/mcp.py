"""scoperun's tools over MCP, with the official SDK (`pip install 'scoperun[mcp]'`; mcp 2.x API).

`build_server(executor)` makes the MCP server; `serve_stdio` and `serve_http` run it (the
`scoperun mcp` command calls them). Over HTTP every request must carry
`Authorization: Bearer <token>`; without it the answer is 401 and nothing runs. A run that
failed, timed out or was rejected comes back as a tool result with `isError: true` and the
same markdown the LangChain tools return.
"""

# No `from __future__ import annotations` here: the SDK reads the tools' argument types
# (and their descriptions) from the live annotations.

import hmac
import json
import sys
from typing import Annotated, Any

from pydantic import Field

from scoperun.config import is_loopback
from scoperun.errors import ConfigError
from scoperun.executor import Executor

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.types import CallToolResult, TextContent, ToolAnnotations
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigError("The MCP SDK is not installed; run `pip install 'scoperun[mcp]'`.") from exc

from scoperun import __version__
from scoperun.tools import core
from scoperun.tools import files as file_tools
from scoperun.tools.schemas import (
    DESCRIPTIONS,
    FILE_ARGS,
    BrowserAutomationArgs,
    CustomScriptArgs,
    ScriptOnFilesystemArgs,
    field_description,
)

__all__ = ["BearerTokenMiddleware", "build_server", "http_app", "is_loopback", "serve_http", "serve_stdio"]

INSTRUCTIONS = (
    "scoperun runs scripts on a law firm's case files, each in a fresh isolated container that sees "
    "only the one case folder named in the call (under projects/). Use list_cases to find a case, "
    "list_files, read_file, read_document (PDF, Word, Excel) and search_files to look inside it, "
    "write_file to add a file (staged, undoable), execute_script_on_filesystem for the firm's scripts "
    "in Tools/, execute_custom_script for Python you write, and monitor_script_executions to see "
    "recent runs. Every run and every file access is recorded in an audit trail."
)


def _d(model: Any, name: str) -> str:
    return field_description(model, name)


def _to_mcp(reply: core.ToolReply) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=str(reply))], is_error=not reply.ok)


def build_server(executor: Executor, *, requested_by: str = "mcp") -> MCPServer:
    """An MCP server offering the plan's tools (the browser tool only when scoperun.browser is installed)."""
    server = MCPServer(name="scoperun", title="scoperun: scoped script runs on case files",
                       instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                             open_world_hint=executor.settings.network != "none")

    async def execute_script_on_filesystem(
        script_name: Annotated[str, Field(description=_d(ScriptOnFilesystemArgs, "script_name"))],
        case_name: Annotated[str, Field(description=_d(ScriptOnFilesystemArgs, "case_name"))],
        script_args: Annotated[list[str] | None, Field(description=_d(ScriptOnFilesystemArgs, "script_args"))] = None,
        working_dir: Annotated[str | None, Field(description=_d(ScriptOnFilesystemArgs, "working_dir"))] = None,
    ) -> CallToolResult:
        return _to_mcp(await core.aexecute_script_on_filesystem(
            executor, script_name, case_name, script_args, working_dir, requested_by=requested_by))

    async def execute_custom_script(
        script_content: Annotated[str, Field(description=_d(CustomScriptArgs, "script_content"))],
        case_name: Annotated[str, Field(description=_d(CustomScriptArgs, "case_name"))],
        script_name: Annotated[str, Field(description=_d(CustomScriptArgs, "script_name"))] = "temp_script.py",
    ) -> CallToolResult:
        return _to_mcp(await core.aexecute_custom_script(executor, script_content, case_name, script_name,
                                                         requested_by=requested_by))

    async def monitor_script_executions() -> CallToolResult:
        return _to_mcp(await core.amonitor_script_executions(executor))

    server.add_tool(execute_script_on_filesystem, name="execute_script_on_filesystem", title="Run a Tools/ script",
                    description=DESCRIPTIONS["execute_script_on_filesystem"], annotations=writes)
    server.add_tool(execute_custom_script, name="execute_custom_script", title="Run your own Python script",
                    description=DESCRIPTIONS["execute_custom_script"], annotations=writes)
    server.add_tool(monitor_script_executions, name="monitor_script_executions", title="Recent runs and statistics",
                    description=DESCRIPTIONS["monitor_script_executions"],
                    annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    _add_file_tools(server, executor, requested_by)
    if core.browser_available():
        _add_browser_tool(server, executor, requested_by)
    return server


def _add_file_tools(server: MCPServer, executor: Executor, requested_by: str) -> None:
    """list_cases, list_files, read_file, read_document, search_files (read-only) and write_file."""
    A = FILE_ARGS
    run = file_tools.ASYNC

    async def list_cases(
        prefix: Annotated[str | None, Field(description=_d(A["list_cases"], "prefix"))] = None,
    ) -> CallToolResult:
        return _to_mcp(await run["list_cases"](executor, prefix, requested_by=requested_by))

    async def list_files(
        case_name: Annotated[str, Field(description=_d(A["list_files"], "case_name"))],
        path: Annotated[str, Field(description=_d(A["list_files"], "path"))] = ".",
        pattern: Annotated[str | None, Field(description=_d(A["list_files"], "pattern"))] = None,
        recursive: Annotated[bool, Field(description=_d(A["list_files"], "recursive"))] = False,
        offset: Annotated[int, Field(ge=0, description=_d(A["list_files"], "offset"))] = 0,
    ) -> CallToolResult:
        return _to_mcp(await run["list_files"](executor, case_name, path, pattern, recursive, offset,
                                               requested_by=requested_by))

    async def read_file(
        case_name: Annotated[str, Field(description=_d(A["read_file"], "case_name"))],
        path: Annotated[str, Field(description=_d(A["read_file"], "path"))],
        offset: Annotated[int, Field(ge=0, description=_d(A["read_file"], "offset"))] = 0,
    ) -> CallToolResult:
        return _to_mcp(await run["read_file"](executor, case_name, path, offset, requested_by=requested_by))

    async def read_document(
        case_name: Annotated[str, Field(description=_d(A["read_document"], "case_name"))],
        path: Annotated[str, Field(description=_d(A["read_document"], "path"))],
    ) -> CallToolResult:
        return _to_mcp(await run["read_document"](executor, case_name, path, requested_by=requested_by))

    async def search_files(
        case_name: Annotated[str, Field(description=_d(A["search_files"], "case_name"))],
        query: Annotated[str, Field(description=_d(A["search_files"], "query"))],
        glob: Annotated[str | None, Field(description=_d(A["search_files"], "glob"))] = None,
    ) -> CallToolResult:
        return _to_mcp(await run["search_files"](executor, case_name, query, glob, requested_by=requested_by))

    async def write_file(
        case_name: Annotated[str, Field(description=_d(A["write_file"], "case_name"))],
        path: Annotated[str, Field(description=_d(A["write_file"], "path"))],
        content: Annotated[str, Field(description=_d(A["write_file"], "content"))],
    ) -> CallToolResult:
        return _to_mcp(await run["write_file"](executor, case_name, path, content, requested_by=requested_by))

    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    for func, title in ((list_cases, "List the cases"), (list_files, "List a case's files"),
                        (read_file, "Read a text file"), (read_document, "Read a PDF, Word or Excel document"),
                        (search_files, "Search a case's files")):
        server.add_tool(func, name=func.__name__, title=title, description=DESCRIPTIONS[func.__name__],
                        annotations=reads)
    server.add_tool(write_file, name="write_file", title="Write a file into a case (staged, undoable)",
                    description=DESCRIPTIONS["write_file"],
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                                open_world_hint=False))


def _add_browser_tool(server: MCPServer, executor: Executor, requested_by: str) -> None:
    try:
        from scoperun.browser import Action
        action_type: Any = Action
    except ImportError:
        action_type = dict[str, Any]

    async def execute_browser_automation(
        url: Annotated[str, Field(description=_d(BrowserAutomationArgs, "url"))],
        actions: Annotated[list[action_type],
                           Field(description=_d(BrowserAutomationArgs, "actions"))],
        case_name: Annotated[str, Field(description=_d(BrowserAutomationArgs, "case_name"))],
        save_screenshots: Annotated[bool, Field(description=_d(BrowserAutomationArgs, "save_screenshots"))] = True,
    ) -> CallToolResult:
        return _to_mcp(await core.aexecute_browser_automation(executor, url, list(actions), case_name,
                                                              save_screenshots, requested_by=requested_by))

    server.add_tool(execute_browser_automation, name="execute_browser_automation", title="Drive a headless browser",
                    description=DESCRIPTIONS["execute_browser_automation"],
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ConfigError("the MCP bearer token is empty; set SCOPERUN_MCP_TOKEN to a long random value")
        self.app = app
        self._token = token.encode("utf-8")

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].strip().partition(b" ")
        # compare_digest: the time taken must not tell an attacker how much of a guess was right.
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._authorized(scope.get("headers", [])):
            body = json.dumps({"error": "unauthorized",
                               "error_description": "send Authorization: Bearer <the scoperun MCP token>"}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="scoperun"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, *, token: str | None, host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP ASGI app at /mcp, behind the bearer token (None only for loopback, no auth)."""
    if token is None and not is_loopback(host):
        raise ConfigError(f"refusing to serve MCP on {host} without a token; set SCOPERUN_MCP_TOKEN")
    # host= turns on the SDK's DNS-rebinding protection (Host/Origin checks) for loopback hosts.
    app = server.streamable_http_app(host=host)
    return BearerTokenMiddleware(app, token) if token is not None else app


def serve_stdio(executor: Executor) -> None:
    """Serve the tools over stdio until the client closes the connection."""
    build_server(executor, requested_by="mcp/stdio").run("stdio")


def serve_http(executor: Executor, *, host: str, port: int, token: str | None) -> None:
    """Serve the tools over streamable HTTP at http://host:port/mcp until interrupted."""
    import uvicorn

    app = http_app(build_server(executor, requested_by="mcp/http"), token=token, host=host)
    auth = "bearer token required" if token is not None else "NO authentication (loopback only)"
    print(f"scoperun MCP server: http://{host}:{port}/mcp ({auth})", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
