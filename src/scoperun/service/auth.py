"""Who may call: bearer tokens with roles, and Host/Origin checks against DNS rebinding.

    auth = Auth(TokenStore.from_settings(settings), open_access_allowed=is_loopback(host))
    @router.post("/v1/runs")
    def create(principal: Principal = Depends(auth.require("run"))): ...

No token -> 401 with `WWW-Authenticate: Bearer`; a token whose role is too weak -> 403. A
server on loopback with no token made yet is open (an anonymous admin); once one token exists,
every request needs one. Other credentials (the page's cookie) plug in with `add_extractor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from scoperun.config import is_loopback
from scoperun.service.problems import Problem, problem_response
from scoperun.service.tokens import Principal, TokenStore

__all__ = ["ANONYMOUS", "Auth", "HostOriginGuard", "is_loopback"]

ANONYMOUS = Principal("anonymous", "admin", anonymous=True)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="scoperun"'}
Extractor = Callable[[Request], Principal | None]


class Auth:
    """Authenticates requests against the token store and checks roles."""

    def __init__(self, store: TokenStore, *, open_access_allowed: bool) -> None:
        self.store = store
        self.open_access_allowed = open_access_allowed
        self._extractors: list[Extractor] = []

    def add_extractor(self, extractor: Extractor) -> None:
        """Accept another credential (e.g. a signed cookie); it returns a Principal or None."""
        self._extractors.append(extractor)

    @property
    def open(self) -> bool:
        """True while no token exists and the server listens on loopback only."""
        return self.open_access_allowed and not self.store.active()

    def principal(self, request: Request) -> Principal:
        """The caller of `request`, or a 401 problem."""
        cached = getattr(request.state, "principal", None)
        if isinstance(cached, Principal):
            return cached
        found = self._authenticate(request)
        request.state.principal = found
        return found

    def _authenticate(self, request: Request) -> Principal:
        values = request.headers.getlist("authorization")
        if len(values) > 1:
            raise Problem(401, "unauthorized", "send exactly one Authorization header", headers=_CHALLENGE)
        if values:
            scheme, _, credentials = values[0].strip().partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise Problem(401, "unauthorized", "use Authorization: Bearer <token>", headers=_CHALLENGE)
            found = self.store.authenticate(credentials.strip())
            if found is None:
                raise Problem(401, "unauthorized", "the token is unknown or was revoked; ask an admin for one "
                              "(`scoperun token create`)", headers={"WWW-Authenticate":
                              'Bearer realm="scoperun", error="invalid_token"'})
            return found
        for extractor in self._extractors:
            found = extractor(request)
            if found is not None:
                return found
        if self.open:
            return ANONYMOUS
        raise Problem(401, "unauthorized", "send Authorization: Bearer <token> (make one with "
                      "`scoperun token create --role read|run|admin NAME`)", headers=_CHALLENGE)

    def require(self, role: str) -> Callable[[Request], Principal]:
        """A FastAPI dependency: the caller, who must hold `role` or more (else 401/403)."""

        def dependency(request: Request) -> Principal:
            principal = self.principal(request)
            if not principal.allows(role):
                raise Problem(403, "forbidden", f"token {principal.name!r} has role {principal.role!r}; this "
                              f"needs {role!r} or above", required_role=role)
            return principal

        dependency.__name__ = f"require_{role}"
        return dependency


def _host_only(value: str) -> str:
    """`host` of `host:port` (IPv6 in brackets kept), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostOriginGuard:
    """ASGI middleware: refuse an unknown Host (421) and a foreign Origin (403).

    A web page on another site can make a browser talk to a server on 127.0.0.1 through DNS
    rebinding (its own name resolving to loopback); checking Host and Origin stops it.
    """

    def __init__(self, app: Any, *, bind_host: str, allowed_hosts: list[str]) -> None:
        self.app = app
        loopback = {"localhost", "127.0.0.1", "[::1]", "::1"}
        extra = {_host_only(h) for h in allowed_hosts}
        bind = _host_only(bind_host if ":" not in bind_host or bind_host.startswith("[") else f"[{bind_host}]")
        self.any_host = bind in {"0.0.0.0", "[::]"} and not extra
        self.allowed = loopback | extra | {bind}
        self.extra_origins = extra

    def _check(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, str, str] | None:
        host = origin = None
        for key, value in headers:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
        if not self.any_host and (host is None or _host_only(host) not in self.allowed):
            return 421, "misdirected", (f"Host {host!r} is not one this server answers to; add it to "
                                        f"allowed_hosts (SCOPERUN_ALLOWED_HOSTS) if it is yours")
        if origin is not None:
            netloc = urlsplit(origin).netloc.lower()
            same = host is not None and netloc == host.strip().lower()
            # Another port on the same host is another origin (another local app): refused too.
            if not same and _host_only(netloc) not in self.extra_origins:
                return 403, "bad-origin", f"requests from origin {origin!r} are refused (only same-origin pages)"
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = self._check(scope.get("headers", []))
            if refused is not None:
                status, code, detail = refused
                response = problem_response(Problem(status, code, detail), scope.get("path"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
