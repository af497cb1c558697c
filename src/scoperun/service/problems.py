"""RFC 9457 problem details: every error the API answers is `application/problem+json`.

Each problem has a stable `code` (also in `type` as `urn:scoperun:problem:<code>`) that clients
branch on; `title` is fixed per code, `detail` says what happened and what to do next.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scoperun.errors import (
    AuditError,
    ChangedSinceError,
    ChangesError,
    ConfigError,
    EngineError,
    ScopeRunError,
    WorkspaceError,
)

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)

_TITLES = {
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed for this token's role",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "invalid-request": "The request is not valid",
    "idempotency-key-reused": "Idempotency-Key reused with a different request",
    "idempotency-in-flight": "The original request with this Idempotency-Key is still being processed",
    "queue-full": "The run queue is full",
    "run-finished": "The run has already ended",
    "changes-conflict": "The change set cannot be changed that way",
    "changed-since": "The case changed since the changes were applied",
    "workspace-unavailable": "The workspace is not usable",
    "audit-unavailable": "The run cannot be audited",
    "engine-unavailable": "The container engine failed",
    "unknown-case": "No such case",
    "file-not-found": "No such file in the case",
    "outside-scope": "The path leaves the case or passes through a link",
    "file-refused": "The file cannot be read or written that way",
    "misdirected": "Unknown Host",
    "bad-origin": "Cross-origin request refused",
    "internal": "Internal error",
}


class Problem(Exception):
    """An error answered as a problem document; raise it from any handler or dependency."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document."""
        doc: dict[str, Any] = {"type": f"urn:scoperun:problem:{self.code}",
                               "title": _TITLES.get(self.code, self.code.replace("-", " ").capitalize()),
                               "status": self.status, "detail": self.detail, "code": self.code}
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    """The HTTP response of `problem`."""
    return JSONResponse(problem.body(instance), status_code=problem.status, headers=problem.headers,
                        media_type=PROBLEM_JSON)


def from_error(exc: ScopeRunError) -> Problem:
    """The problem for an error scoperun raised (what to do next is already in its message)."""
    if isinstance(exc, ChangedSinceError):
        return Problem(409, "changed-since", str(exc), paths=exc.paths)
    if isinstance(exc, ChangesError):
        return Problem(409, "changes-conflict", str(exc))
    if isinstance(exc, WorkspaceError):
        return Problem(503, "workspace-unavailable", str(exc))
    if isinstance(exc, AuditError):
        return Problem(503, "audit-unavailable", str(exc))
    if isinstance(exc, EngineError):
        return Problem(503, "engine-unavailable", str(exc))
    if isinstance(exc, ConfigError):
        return Problem(500, "internal", str(exc))
    return Problem(422, "invalid-request", str(exc))


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, FastAPI's own included, as a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed"}.get(
            exc.status_code, "invalid-request" if exc.status_code < 500 else "internal")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return problem_response(Problem(exc.status_code, code, detail, headers=dict(exc.headers or {})),
                                request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return problem_response(Problem(422, "invalid-request", f"the request is not valid: {detail}",
                                        errors=errors), request.url.path)

    async def on_scoperun(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ScopeRunError)
        return problem_response(from_error(exc), request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal", f"scoperun failed unexpectedly ({type(exc).__name__}); "
                                        "the server log has the traceback"), request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ScopeRunError, on_scoperun)
    app.add_exception_handler(Exception, on_unexpected)
