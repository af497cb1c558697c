"""`scoperun serve` (the HTTP API on uvicorn) and `scoperun token create|list|revoke`.

Registered on the main app by `register(app)`; FastAPI and uvicorn are imported only when
`serve` runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from scoperun.cli.common import EXIT_REJECTED, JsonOpt, err, fail, out, settings_of
from scoperun.errors import ConfigError

if TYPE_CHECKING:
    from scoperun.config import Settings
    from scoperun.models import ExecutionResult

__all__ = ["execute_remote", "logs", "register", "serve", "token_app"]

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
    from rich.table import Table

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
    err.print(f"scoperun serve: http://{display}:{port} ({auth}); the monitoring page at /, API docs at /docs, "
              f"MCP at /mcp", highlight=False)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)).run()


class _LiveClient:
    """A Client whose run and run_code print output as it arrives and remember the run's id."""

    def __init__(self, client: object, quiet: bool) -> None:
        self.client = client
        self.quiet = quiet

    def _print(self, stream: str, text: str) -> None:
        if self.quiet:
            return
        target = sys.stdout if stream == "stdout" else sys.stderr
        target.write(text)
        target.flush()

    def run(self, request: object) -> object:
        return self.client.run(request, on_output=self._print)  # type: ignore[attr-defined]

    def run_code(self, code: str, **fields: object) -> object:
        return self.client.run_code(code, on_output=self._print, **fields)  # type: ignore[attr-defined]


def execute_remote(settings: Settings, as_json: bool, call: Callable[[Any], ExecutionResult]) -> ExecutionResult:
    """Run `call(client)` against the server at `settings.url`; Ctrl-C cancels the run there."""
    from scoperun.cli.common import EXIT_ENGINE, EXIT_INTERRUPTED
    from scoperun.client import Client
    from scoperun.errors import ScopeRunError

    token = settings.token.get_secret_value() if settings.token else None
    try:
        client = Client(settings.url, token)
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    submitted: list[str] = []
    original_submit = client.submit

    def remember(*args: object, **kwargs: object) -> str:
        execution_id = original_submit(*args, **kwargs)  # type: ignore[arg-type]
        submitted.append(execution_id)
        if not as_json:
            err.print(f"[dim]run {execution_id} on {escape(client.url)}[/]", highlight=False)
        return execution_id

    client.submit = remember  # type: ignore[method-assign]
    try:
        return call(_LiveClient(client, as_json))
    except KeyboardInterrupt:
        if submitted:
            try:
                client.cancel(submitted[-1])
                err.print(f"cancelled run {submitted[-1]} (its container is killed; the record says cancelled)")
            except ScopeRunError as exc:
                err.print(f"could not cancel run {submitted[-1]}: {escape(str(exc))}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_ENGINE) from None
    finally:
        client.close()


def logs(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(help="The run's execution id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the run prints (needs "
                                         "SCOPERUN_URL: a server that runs it).")] = False,
) -> None:
    """Print a run's output (stdout to stdout, stderr to stderr); -f follows it live."""
    settings = settings_of(ctx)
    if settings.url:
        from scoperun.client import Client
        from scoperun.errors import ScopeRunError

        token = settings.token.get_secret_value() if settings.token else None
        try:
            with Client(settings.url, token) as client:
                if follow:
                    for ev in client.events(execution_id):
                        if ev.type in ("stdout", "stderr"):
                            (sys.stdout if ev.type == "stdout" else sys.stderr).write(ev.text)
                            (sys.stdout if ev.type == "stdout" else sys.stderr).flush()
                    return
                for stream in ("stdout", "stderr"):
                    response = client._http.get(f"/v1/runs/{execution_id}/output", params={"stream": stream})
                    if response.status_code == 200:
                        (sys.stdout if stream == "stdout" else sys.stderr).write(response.text)
                        continue
                    if response.status_code != 404:
                        raise fail(f"the server answered {response.status_code}: {response.text[:200]}", EXIT_REJECTED)
                    break
                else:
                    return
        except ScopeRunError as exc:
            raise fail(str(exc), EXIT_REJECTED) from None
    if follow:
        raise fail("--follow needs a server that runs the run: set SCOPERUN_URL", EXIT_REJECTED)
    _local_logs(settings, execution_id)


def _local_logs(settings: object, execution_id: str) -> None:
    """The output kept beside the audit record (full), else what the record's result showed."""
    from pathlib import Path

    from scoperun.audit.log import AuditLog
    from scoperun.errors import AuditError

    root = Path(settings.workspace).expanduser().resolve()  # type: ignore[attr-defined]
    audit = AuditLog(root / settings.audit_dir)  # type: ignore[attr-defined]
    try:
        audit.read(execution_id)
    except AuditError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    for stream in ("stdout", "stderr"):
        data = audit.read_output(execution_id, stream)
        if data:
            (sys.stdout if stream == "stdout" else sys.stderr).write(data.decode("utf-8", "replace"))


def register(app: typer.Typer) -> None:
    """Add `serve`, `logs` and `token` to the main app."""
    app.command("serve")(serve)
    app.command("logs")(logs)
    app.add_typer(token_app, name="token")
