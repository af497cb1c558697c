"""The monitoring page: Overview, Runs, Run detail, Cases, Alerts, served under `/` of `scoperun serve`.

Server-side Jinja2 templates, server-drawn SVG charts and one small script (static/page.js) that
refreshes the live parts by polling; all shipped in the package (no CDN). Every response carries
a `default-src 'self'` Content-Security-Policy. Changing anything (apply, discard, rollback,
stop) takes an `admin` session, a CSRF token and a confirmation, and calls the same functions
as the CLI, which audit it.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from scoperun.config import Settings

__all__ = ["PageContext", "create_page_app", "page_routes"]

# action -> (button text, what it does): the button's visible text is its accessible name.
ACTIONS = {"apply": ("Apply changes", "Apply the staged changes to the case"),
           "discard": ("Discard changes", "Discard the staged changes; the case stays as it is"),
           "rollback": ("Roll back changes", "Restore the case as it was before the run's changes were applied"),
           "stop": ("Stop run", "Kill the run's container; the run ends cancelled")}
OUTPUT_SHOWN = 256 * 1024
CATCH_UP_EVERY = 10.0  # seconds between catch-ups of the index with other hosts' records
log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chromium send `Origin: null` on our own forms
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class PageContext:
    """What the page needs from the server that mounts it (all optional but `settings`)."""

    settings: Settings
    lookup: Callable[[str], Any]  # token hash -> Principal | None (the service's token store)
    status: Callable[[], dict[str, Any]] | None = None  # {"queue": n, "pool": {...}} from the service
    live_output: Callable[[str], tuple[str, str] | None] | None = None  # id -> (stdout, stderr) while running
    stop: Callable[[str, str], bool] | None = None  # (id, by) -> True when the server stopped its own run
    open_access: Callable[[], bool] | None = None  # True: no token exists, loopback server: anonymous admin
    secure_cookies: bool = False
    overview_cache: bool = True  # False: compute every overview afresh (benchmarks)
    extra: dict[str, Any] = field(default_factory=dict)


def _clean(text: str) -> str:
    """Output as text: terminal control sequences shown as U+FFFD, never interpreted."""
    return _CONTROL.sub("\ufffd", text)


def _safe_next(target: str | None) -> str:
    # Only a path of this site: never another host (open redirect) or a scheme.
    # Browsers drop tabs and newlines inside URLs ("/\t/evil.example" becomes "//evil.example").
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(ord(c) < 0x21 or ord(c) == 0x7f for c in target)):
        return "/"
    return target


def create_page_app(ctx: PageContext) -> Any:
    """A Starlette app serving only the page (tests, benchmarks); `scoperun serve` adds `page_routes` to its app."""
    from starlette.applications import Starlette

    return _SecurityHeaders(Starlette(routes=page_routes(ctx)))


def page_routes(ctx: PageContext) -> list[Any]:
    """The page's routes, to add to an app after its API routes (unknown paths stay the app's 404s)."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from scoperun.audit.log import AuditLog
    from scoperun.audit.state import state_dir
    from scoperun.service.page import charts, data
    from scoperun.service.page.session import COOKIE, Principal, Sessions

    settings = ctx.settings
    root = Path(settings.workspace).expanduser().resolve()
    audit = AuditLog.from_settings(settings, root)
    assert audit.index is not None
    index = audit.index
    sessions = Sessions(ctx.lookup, state_dir(settings) / "page" / "session.key", secure=ctx.secure_cookies)
    env = Environment(loader=PackageLoader("scoperun.service.page", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals.update(when=data.when, quote=quote, ACTIONS=ACTIONS)
    env.filters["clean"] = _clean
    catching_up = threading.Lock()

    def catch_up() -> None:
        # This host's runs are indexed as they are written; other hosts' records are caught up in the
        # background (listing 100,000 files takes seconds: never on a request's path).
        if not catching_up.acquire(blocking=False):
            return

        def work() -> None:
            try:
                index.reindex_if_stale(CATCH_UP_EVERY)
            except Exception:
                log.warning("page: audit index catch-up failed", exc_info=True)
            finally:
                index.close()
                catching_up.release()

        threading.Thread(target=work, name="scoperun-page-reindex", daemon=True).start()

    def secured(response: Response) -> Response:
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def render(request: Request, name: str, status: int = 200, **values: Any) -> Response:
        html = env.get_template(name).render(request=request, path=request.url.path, **values)
        return secured(HTMLResponse(html, status_code=status))

    open_csrf = hmac.new(sessions.key, b"open-access-csrf", "sha256").hexdigest()

    def session(request: Request) -> tuple[Any, str] | None:
        found = sessions.read(request.cookies.get(COOKIE))
        if found is None and ctx.open_access is not None and ctx.open_access():
            # A loopback server with no token made yet is open to its own host (the API is too).
            return Principal("anonymous", "admin", ""), open_csrf
        return found

    def to_login(request: Request) -> Response:
        if request.query_params.get("fragment"):
            return secured(Response("session expired", status_code=401))
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return secured(RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303))

    def same_origin(request: Request) -> bool:
        # SameSite=Strict already keeps the cookie off cross-site POSTs; a foreign Origin is refused too.
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def login_form(request: Request) -> Response:
        return render(request, "login.html", next=_safe_next(request.query_params.get("next")), error="")

    async def login(request: Request) -> Response:
        form = await request.form()
        target = _safe_next(str(form.get("next", "/")))
        if not same_origin(request):
            return render(request, "login.html", 403, next=target, error="cross-site login refused")
        made = await run_in_threadpool(sessions.login, str(form.get("token", "")))
        if made is None:
            return render(request, "login.html", 401, next=target, error="That token is not valid (or was revoked).")
        _, cookie, _ = made
        response = RedirectResponse(target, status_code=303)
        args = sessions.cookie_args(cookie)
        args["secure"] = args["secure"] or request.url.scheme == "https"
        response.set_cookie(**args)
        return secured(response)

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return secured(response)

    def page(handler: Callable[..., Any], template: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            found = session(request)
            if found is None:
                return to_login(request)
            principal, csrf = found
            values = await run_in_threadpool(handler, request)
            if isinstance(values, Response):
                return secured(values)
            fragment = request.query_params.get("fragment")
            name = template.replace(".html", "_body.html") if fragment else template
            return render(request, name, values.pop("_status", 200), user=principal, csrf=csrf, **values)
        return endpoint

    overviews: dict[str, tuple[float, float, Any]] = {}

    def cached_overview(window: str) -> Any:
        # Every open overview polls; a window's figures are computed at most once per max(5 s, 5x their
        # cost), so many viewers of a month of runs do not keep the host busy.
        now = time.monotonic()
        hit = overviews.get(window)
        if ctx.overview_cache and hit is not None and now - hit[0] < max(5.0, 5 * hit[1]):
            return hit[2]
        ov = data.overview(index, settings, window=window)
        overviews[window] = (now, time.monotonic() - now, ov)
        if len(overviews) > 16:
            overviews.pop(next(iter(overviews)))
        return ov

    def overview_values(request: Request) -> dict[str, Any]:
        from scoperun.alerts import load_alert_state

        catch_up()
        ov = cached_overview(request.query_params.get("window", "24h"))
        state = load_alert_state(settings)
        status = ctx.status() if ctx.status else {}
        return {"ov": ov, "alerts": list(state.active.values()), "health": state.measurements,
                "evaluated_at": state.evaluated_at, "service": status,
                "hourly": charts.hourly("Runs per hour (bars) and success rate (line)", ov.hours,
                                        target=settings.alert_success_rate),
                "duration_chart": charts.bars("Run duration histogram", ov.durations),
                "start_chart": charts.bars("Container start histogram", ov.starts, colour="#7a5195"),
                "status_chart": charts.bars("Runs by status", sorted(ov.stats.by_status.items(),
                                                                     key=lambda kv: -kv[1]), colour="#2f7f6f"),
                "access_chart": charts.bars("Case-file accesses by kind", list(ov.stats.file_access.items()),
                                            colour="#a05195") if ov.stats.file_access else ""}

    def runs_values(request: Request) -> dict[str, Any]:
        catch_up()
        filters = data.RunFilters.from_query(request.query_params)
        result = data.runs_page(index, filters)
        return {"f": filters, "result": result, "statuses": data.STATUSES, "_status": 400 if result.error else 200}

    def run_values(request: Request) -> Any:
        from scoperun.changes import load_change_set, text_diffs
        from scoperun.errors import AuditError, ScopeRunError

        execution_id = request.path_params["execution_id"]
        try:
            record = audit.view(execution_id)  # with the events logged after the run
        except AuditError as exc:
            if ctx.live_output is None or ctx.live_output(execution_id) is None:
                return {"_status": 404, "missing": str(exc), "record": None, "execution_id": execution_id}
            # The server accepted it; its record is written when it leaves the queue.
            record = {"execution_id": execution_id, "status": "queued", "message": "waiting for a container"}
        outputs: dict[str, str] = {}
        cut: dict[str, bool] = {}
        for stream in ("stdout", "stderr"):
            raw = audit.read_output(execution_id, stream, limit=OUTPUT_SHOWN + 1)
            if raw is not None:
                cut[stream] = len(raw) > OUTPUT_SHOWN
                outputs[stream] = raw[:OUTPUT_SHOWN].decode("utf-8", "replace")
        running = record.get("status") in ("running", "queued")
        if running and ctx.live_output is not None:
            live = ctx.live_output(execution_id)
            if live is not None:
                outputs = {"stdout": live[0], "stderr": live[1]}
        change_set, diffs, change_error = None, [], ""
        if not running:
            try:
                change_set, _ = load_change_set(settings, execution_id)
                diffs = text_diffs(settings, change_set)
            except ScopeRunError as exc:
                change_error = str(exc)
        actions = []
        if running:
            actions = ["stop"]
        elif change_set is not None and change_set.status.value in ("staged", "conflict"):
            actions = ["apply", "discard"]
        elif change_set is not None and change_set.status.value == "applied":
            actions = ["rollback"]
        return {"record": record, "execution_id": execution_id, "outputs": outputs, "cut": cut, "running": running,
                "cs": change_set, "diffs": diffs, "change_error": change_error, "actions": actions,
                "done": request.query_params.get("done", "")}

    def cases_values(request: Request) -> dict[str, Any]:
        catch_up()
        return {"cases": data.cases(index)}

    def alerts_values(request: Request) -> dict[str, Any]:
        from scoperun.alerts import RULES, load_alert_state

        state = load_alert_state(settings)
        return {"state": state, "rules": RULES, "webhook": bool(settings.alert_webhook_url)}

    async def output(request: Request) -> Response:
        if session(request) is None:
            return to_login(request)
        execution_id, stream = request.path_params["execution_id"], request.path_params["stream"]
        if stream not in ("stdout", "stderr"):
            return secured(Response("unknown stream", status_code=404))
        from scoperun.errors import AuditError

        try:
            raw = await run_in_threadpool(audit.read_output, execution_id, stream)
        except AuditError as exc:
            return secured(Response(str(exc), status_code=404))
        if raw is None:
            return secured(Response(f"no {stream} kept for {execution_id}", status_code=404))
        # An attachment, as text: the browser never renders it as a page.
        return secured(Response(raw, media_type="text/plain; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{execution_id}.{stream}.txt"'}))

    async def act(request: Request) -> Response:
        found = session(request)
        if found is None:
            return to_login(request)
        principal, csrf = found
        execution_id, action = request.path_params["execution_id"], request.path_params["action"]
        form = await request.form()
        if action not in ACTIONS:
            return secured(Response("unknown action", status_code=404))
        if not principal.can("admin"):
            return render(request, "error.html", 403, user=principal, csrf=csrf,
                          message=f"Your token's role is {principal.role}; {action} needs an admin token.")
        if not same_origin(request) or not hmac.compare_digest(str(form.get("csrf", "")), csrf):
            return render(request, "error.html", 403, user=principal, csrf=csrf,
                          message="The form's CSRF token does not match your session; reload the page and try again.")
        if form.get("confirm") != "yes":
            return render(request, "confirm.html", user=principal, csrf=csrf, execution_id=execution_id, action=action)
        by = f"page:{principal.name}"
        try:
            # The server's own run is cancelled on its loop (queue and event log stay consistent).
            if not (action == "stop" and ctx.stop is not None and ctx.stop(execution_id, by)):
                await run_in_threadpool(_perform, settings, execution_id, action, by)
        except Exception as exc:  # the CLI's messages say what to do next; show them
            from scoperun.errors import ScopeRunError

            if not isinstance(exc, ScopeRunError):
                raise
            return render(request, "error.html", 409, user=principal, csrf=csrf, message=str(exc),
                          back=f"/runs/{quote(execution_id)}")
        return secured(RedirectResponse(f"/runs/{quote(execution_id)}?done={action}", status_code=303))

    static = Path(__file__).with_name("static")
    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page(overview_values, "overview.html")),
        Route("/runs", page(runs_values, "runs.html")),
        Route("/runs/{execution_id}", page(run_values, "run.html")),
        Route("/runs/{execution_id}/output/{stream}", output),
        Route("/runs/{execution_id}/{action}", act, methods=["POST"]),
        Route("/cases", page(cases_values, "cases.html")),
        Route("/alerts", page(alerts_values, "alerts.html")),
        Mount("/static", app=_SecurityHeaders(StaticFiles(directory=static)), name="static"),
    ]
    return routes


class _SecurityHeaders:
    """ASGI wrapper: every response of the page (static files and errors too) gets the CSP and friends."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()
                         if k.lower().encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _perform(settings: Settings, execution_id: str, action: str, by: str) -> None:
    """The CLI's code path for each action (each audits itself)."""
    if action == "stop":
        from scoperun.ops import stop_runs

        stop_runs(settings, [execution_id], reason="stopped from the page", by=by)
        return
    from scoperun.changes import apply_changes, discard_changes, rollback_changes

    if action == "apply":
        apply_changes(settings, execution_id, force=False, by=by)
    elif action == "discard":
        discard_changes(settings, execution_id, by=by)
    else:
        rollback_changes(settings, execution_id, force=False, by=by)
