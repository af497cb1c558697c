"""Page login: a token exchanged for a signed, HttpOnly, SameSite=Strict cookie; CSRF per session.

The cookie holds the SHA-256 of the token (never the token), its role and a CSRF secret, signed
with a key kept in the state folder. Every request looks the hash up again, so revoking a token
ends its page sessions too. No token ever travels in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["COOKIE", "ROLES", "Principal", "Sessions", "StaticTokens", "token_hash"]

COOKIE = "scoperun_session"
ROLES = {"read": 0, "run": 1, "admin": 2}
MAX_AGE = 12 * 3600


def token_hash(token: str) -> str:
    """The SHA-256 hex digest a token is known by."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is logged in: a token's name and role."""

    name: str
    role: str
    token_hash: str

    def can(self, role: str) -> bool:
        """True when this principal's role is at least `role`."""
        return ROLES.get(self.role, -1) >= ROLES[role]


class StaticTokens:
    """A token lookup from a mapping token -> (name, role): for tests and for a server without a token file."""

    def __init__(self, tokens: dict[str, tuple[str, str]]) -> None:
        self._by_hash = {token_hash(t): (name, role) for t, (name, role) in tokens.items()}

    def by_hash(self, digest: str) -> Principal | None:
        """The principal of a token hash, or None."""
        for known, (name, role) in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return Principal(name, role, known)
        return None


Lookup = Callable[[str], "Principal | None"]


def _secret(path: Path) -> bytes:
    """The signing key, made once (0600) in the state folder so sessions survive a restart."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except FileExistsError:  # another process made it first
        return path.read_bytes()


class Sessions:
    """Signs and reads the page's session cookie."""

    def __init__(self, lookup: Lookup, secret_path: Path, *, secure: bool = False) -> None:
        from itsdangerous import URLSafeTimedSerializer

        self.lookup = lookup
        self.secure = secure
        self.key = _secret(secret_path)
        self._signer = URLSafeTimedSerializer(self.key, salt="scoperun-page-session")

    def login(self, token: str) -> tuple[Principal, str, str] | None:
        """(principal, cookie value, csrf) for a valid token, else None."""
        principal = self.lookup(token_hash(token.strip()))
        if principal is None:
            return None
        csrf = secrets.token_urlsafe(24)
        return principal, self._signer.dumps({"h": principal.token_hash, "c": csrf}), csrf

    def read(self, cookie: str | None) -> tuple[Principal, str] | None:
        """(principal, csrf) of a valid, unexpired cookie whose token still exists, else None."""
        from itsdangerous import BadSignature

        if not cookie:
            return None
        try:
            data: dict[str, Any] = self._signer.loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            return None
        principal = self.lookup(str(data.get("h", "")))
        return (principal, str(data.get("c", ""))) if principal is not None else None

    def cookie_args(self, value: str) -> dict[str, Any]:
        """Arguments of `Response.set_cookie` for a session cookie."""
        return {"key": COOKIE, "value": value, "max_age": MAX_AGE, "httponly": True, "samesite": "strict",
                "secure": self.secure, "path": "/"}
