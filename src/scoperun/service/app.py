"""The ASGI app of `scoperun serve`: one Executor, one queue, the HTTP API, /mcp and /metrics.

    app = create_app(settings)                       # uvicorn.run(app) serves it
    app.state.service.auth.require("run")            # the auth dependency, for other routers

Adding a router: write `router = APIRouter()` in a module of this package whose endpoints take
`service: ServiceDep` and `caller: Reader` (from service/deps.py, never from this module), then
list it in `_ROUTERS` below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from scoperun import __version__
from scoperun.config import Settings
from scoperun.errors import ConfigError
from scoperun.executor import Executor
from scoperun.service.auth import Auth, HostOriginGuard, is_loopback
from scoperun.service.deps import Admin, Reader, Runner, Service, ServiceDep, get_service, requires, service_dir
from scoperun.service.idempotency import IdempotencyStore
from scoperun.service.problems import Problem, install_problem_handlers
from scoperun.service.queue import FairQueue
from scoperun.service.tokens import TokenStore

# The dependency types live in deps.py (routers import them from there); re-exported for callers of app.
__all__ = ["Admin", "Reader", "Runner", "Service", "ServiceDep", "create_app", "get_service", "requires",
           "service_dir"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, executor: Executor | None = None, *, host: str = "127.0.0.1",
               mount_mcp: bool = True, ping_interval: float = 15.0) -> FastAPI:
    """The app for `settings`, listening (as far as Host checks go) on `host`.

    Raises ConfigError when `host` is beyond loopback and no token exists: the API would be open.
    """
    store = TokenStore.from_settings(settings)
    loopback = is_loopback(host)
    if not loopback and not store.active():
        raise ConfigError(f"refusing to serve on {host} (beyond loopback) without tokens: make one with "
                          f"`scoperun token create --role admin NAME` first, or listen on 127.0.0.1")
    state = service_dir(settings)
    service = Service(
        settings=settings,
        executor=executor or Executor(settings),
        auth=Auth(store, open_access_allowed=loopback),
        queue=FairQueue(settings.max_concurrent, settings.max_queue),
        idempotency=IdempotencyStore(state / "idempotency.sqlite3"),
        state_dir=state,
        bind_host=host,
        owns_executor=executor is None,
        ping_interval=ping_interval,
    )
    mcp_app = _mcp_app(service) if mount_mcp else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in list(service.extras.get("startup", [])):
            await hook(service)
        if mcp_app is not None:
            async with mcp_app.router.lifespan_context(mcp_app):
                yield
        else:
            yield
        for hook in list(service.extras.get("shutdown", [])):
            await hook(service)
        service.close()

    app = FastAPI(title="scoperun", version=__version__, lifespan=lifespan,
                  description="Run scripts on case files in fresh, hardened, scoped containers, with an audit "
                              "trail. Errors are RFC 9457 problem documents with a stable `code`.")
    app.state.service = service
    install_problem_handlers(app)
    _add_core_routes(app)
    for include in _ROUTERS:
        include(app, service)
    if mcp_app is not None:
        from starlette.routing import Route

        # A route, not a mount: the SDK's app sees the path /mcp it expects, with no redirect to /mcp/.
        app.router.routes.append(Route("/mcp", endpoint=_McpAuth(mcp_app, service), include_in_schema=False))
    _mount_page(app, service)  # /, /login, /runs, /cases, /alerts, /static: the monitoring page
    app.add_middleware(HostOriginGuard, bind_host=host, allowed_hosts=list(settings.allowed_hosts))
    return app


def _include_runs(app: FastAPI, service: Service) -> None:
    from scoperun.service import runs

    runs.install(app, service)


def _include_changes(app: FastAPI, service: Service) -> None:
    from scoperun.service import changes

    changes.install(app, service)


def _include_files(app: FastAPI, service: Service) -> None:
    from scoperun.service import files

    files.install(app, service)


# Each entry adds a router (and its state) to the app; keep them independent of each other.
_ROUTERS: list[Callable[[FastAPI, Service], None]] = [_include_runs, _include_changes, _include_files]


def _mount_page(app: FastAPI, service: Service) -> None:
    try:
        from scoperun.service.page.mount import install

        install(app, service)
    except ImportError as exc:  # jinja2 / itsdangerous missing: the API serves without the page
        log.warning("the monitoring page is not served (%s); pip install 'scoperun[service]'", exc)


def _add_core_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["service"], summary="The process answers")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.get("/readyz", tags=["service"], summary="The engine and the workspace are usable")
    async def readyz(service: ServiceDep) -> JSONResponse:
        checks = await asyncio.to_thread(_readiness, service)
        ok = all(c["ok"] for c in checks)
        return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/v1/whoami", tags=["service"], summary="The caller's token name and role")
    async def whoami(principal: Reader) -> dict[str, Any]:
        return {"name": principal.name, "role": principal.role, "anonymous": principal.anonymous}

    @app.get("/v1/stats", tags=["service"], summary="Run statistics from the audit index")
    async def stats(service: ServiceDep, _: Reader, since: str | None = None, case: str | None = None) -> dict[str, Any]:
        from scoperun.audit.stats import stats_for_settings

        try:
            result = await asyncio.to_thread(stats_for_settings, service.settings, since=since, case=case)
        except ValueError as exc:
            raise Problem(422, "invalid-request", str(exc)) from None
        body = result.model_dump(mode="json")
        body["queue"] = {"running": service.queue.running, "waiting": service.queue.depth,
                         "max_concurrent": service.queue.max_concurrent, "max_queue": service.queue.max_queue}
        return body

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    async def metrics(service: ServiceDep, _: Reader) -> Response:
        registry = service.extras.get("registry")
        if registry is None:
            registry = service.extras["registry"] = _registry(service)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        data = await asyncio.to_thread(generate_latest, registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)


def _readiness(service: Service) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    try:
        _ = service.executor.workspace  # resolving it checks it
        checks.append({"name": "workspace", "ok": True, "detail": str(service.settings.workspace)})
    except Exception as exc:
        checks.append({"name": "workspace", "ok": False, "detail": str(exc)})
    try:
        from scoperun.engine.docker import DockerBackend

        engine = DockerBackend(service.settings.docker_host, remove_in_background=False, timeout=5)
        try:
            present = engine.image_info(service.settings.image) is not None
        finally:
            engine.close()
        if present:
            checks.append({"name": "engine", "ok": True, "detail": f"image {service.settings.image} present"})
        else:
            checks.append({"name": "engine", "ok": False, "detail": f"image {service.settings.image} is missing; "
                           "build it with `scoperun image build`"})
    except Exception as exc:  # the engine cannot be reached (or answers with an error): the check fails, saying why
        checks.append({"name": "engine", "ok": False, "detail": str(exc)})
    return checks


def _registry(service: Service) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    from scoperun.audit.metrics import make_registry

    registry = make_registry(service.settings)

    class _ServiceCollector:
        def describe(self) -> list[Any]:
            return []

        def collect(self) -> Any:
            yield GaugeMetricFamily("scoperun_queue_depth", "Runs waiting for a slot.", value=service.queue.depth)
            yield GaugeMetricFamily("scoperun_queue_running", "Runs holding a slot.", value=service.queue.running)
            clients = service.extras.get("sse_clients", lambda: 0)()
            yield GaugeMetricFamily("scoperun_sse_clients", "Open event streams.", value=clients)

    registry.register(_ServiceCollector())
    return registry


def _mcp_app(service: Service) -> Any:
    """The MCP server's streamable-HTTP app (the SDK brings Starlette), or None without the SDK."""
    try:
        from scoperun.tools import mcp as mcp_adapter
    except Exception:  # the mcp extra is not installed: the API serves without /mcp
        log.warning("the MCP SDK is not installed: /mcp is not served (pip install 'scoperun[mcp]')")
        return None
    server = mcp_adapter.build_server(service.executor, requested_by="mcp/serve")
    return server.streamable_http_app(streamable_http_path="/mcp", host=service.bind_host)


class _McpAuth:
    """/mcp needs a token with the `run` role (its tools start runs), like the rest of the API."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            from scoperun.service.problems import problem_response

            request = Request(scope)
            try:
                self.service.auth.require("run")(request)
            except Problem as problem:
                await problem_response(problem, scope.get("path"))(scope, receive, send)
                return
        await self.app(scope, receive, send)
