"""`scoperun serve` (the HTTP API on uvicorn) and `scoperun token create|list|revoke`.

Registered on the main app by `register(app)`; FastAPI and uvicorn are imported only when
`serve` runs.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from scoperun.cli.common import EXIT_REJECTED, JsonOpt, err, fail, out, settings_of
from scoperun.errors import ConfigError

__all__ = ["register", "serve", "token_app"]

token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens `scoperun serve` accepts (stored hashed).")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who holds it (an agent, a person, a page), e.g. paralegal-agent.")],
    role: Annotated[str, typer.Option(help="read (see runs), run (also start and cancel), admin (also apply, "
                                      "roll back, cancel others' runs).")] = "run",
    as_json: JsonOpt = False,
) -> None:
    """Make a token; it is printed once and stored only as a SHA-256 hash."""
    from scoperun.service.tokens import TokenStore

    store = TokenStore.from_settings(settings_of(ctx))
    try:
        token = store.create(name, role)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    if as_json:
        sys.stdout.write(json.dumps({"name": name, "role": role, "token": token}) + "\n")
        return
    sys.stdout.write(token + "\n")
    err.print(f"token [bold]{escape(name)}[/] ({role}) stored hashed in {escape(str(store.path))}; "
              "it is shown only this once")


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Tokens by name, role and state (never the tokens themselves)."""
    from scoperun.service.tokens import TokenStore

    try:
        entries = TokenStore.from_settings(settings_of(ctx)).entries()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    if as_json:
        sys.stdout.write(json.dumps([e.model_dump(exclude={"sha256"}) for e in entries], indent=2) + "\n")
        return
    table = Table("name", "role", "created", "state")
    for e in entries:
        table.add_row(escape(e.name), e.role, e.created_at, "active" if e.active else f"revoked {e.revoked_at}")
    out.print(table)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token; a running server refuses it from its next request."""
    from scoperun.service.tokens import TokenStore

    try:
        TokenStore.from_settings(settings_of(ctx)).revoke(name)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    err.print(f"token [bold]{escape(name)}[/] revoked")


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback needs tokens.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8737,
) -> None:
    """Serve the HTTP API (runs, live output, cancel, change sets, stats, /metrics, /mcp) on one port."""
    try:
        import uvicorn

        from scoperun.service.app import create_app
    except ImportError:
        raise fail("`scoperun serve` needs the service extra: pip install 'scoperun[service]'", EXIT_REJECTED) from None
    settings = settings_of(ctx)
    try:
        app = create_app(settings, host=host)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    service = app.state.service
    auth = ("open: no token exists yet (loopback only; `scoperun token create` closes it)"
            if service.auth.open else "bearer tokens required")
    display = f"[{host}]" if ":" in host else host
    err.print(f"scoperun serve: http://{display}:{port} ({auth}); API docs at /docs, MCP at /mcp", highlight=False)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)).run()


def register(app: typer.Typer) -> None:
    """Add `serve` and `token` to the main app."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
