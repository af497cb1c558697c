"""`scoperun mcp`: serve the agent tools over MCP (stdio, or streamable HTTP with a bearer token).

Registered on the main typer app by `register(app)` (see cli.py). The MCP SDK is imported only
when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["mcp_command", "register"]


def mcp_command(
    ctx: typer.Context,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on with --http.")] = 8765,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="With --http on a loopback address only: accept requests without a token.")] = False,
) -> None:
    """Serve the agent tools over MCP: stdio (default) or HTTP (needs SCOPERUN_MCP_TOKEN)."""
    from scoperun.cli.common import EXIT_REJECTED, err, fail, settings_of
    from scoperun.errors import ScopeRunError, WorkspaceError
    from scoperun.executor import Executor

    settings = settings_of(ctx)
    try:
        from scoperun.tools import mcp as mcp_adapter
    except ScopeRunError as exc:  # the SDK is missing: say how to install it
        raise fail(str(exc), EXIT_REJECTED) from None

    token: str | None = settings.mcp_token.get_secret_value() if settings.mcp_token else None
    if http:
        if no_auth:
            if not mcp_adapter.is_loopback(host):
                raise fail(f"--no-auth is only allowed on a loopback address, not {host}; "
                            "set SCOPERUN_MCP_TOKEN instead", EXIT_REJECTED)
            token = None
        elif not token:
            raise fail("refusing to serve MCP over HTTP without a token: set SCOPERUN_MCP_TOKEN (or mcp_token "
                        "in scoperun.toml) to a long random value, or pass --no-auth on a loopback address",
                        EXIT_REJECTED)
    elif no_auth:
        raise fail("--no-auth only applies to --http", EXIT_REJECTED)

    with Executor(settings) as executor:
        try:
            _ = executor.workspace  # resolves (and checks) the workspace before serving
        except WorkspaceError as exc:
            raise fail(str(exc), EXIT_REJECTED) from None
        if http:
            mcp_adapter.serve_http(executor, host=host, port=port, token=token)
        else:
            err.print(f"scoperun MCP server on stdio (workspace {settings.workspace})")
            mcp_adapter.serve_stdio(executor)


def register(app: typer.Typer) -> None:
    """Add the `mcp` command to the main app."""
    app.command("mcp")(mcp_command)
