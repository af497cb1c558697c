"""Bearer tokens for `scoperun serve`: a JSON file of SHA-256 hashes with a role each.

The token itself is shown once, when it is made, and never stored; a presented token is
hashed and compared with every stored hash in constant time (`hmac.compare_digest`). The
file is re-read when it changes, so `scoperun token revoke` takes effect on a running server.

    read  < run < admin      read: see runs and stats; run: also start and cancel runs;
                             admin: also apply, discard and roll back changes, cancel others' runs
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from scoperun.atomicio import write_bytes_atomic
from scoperun.config import Settings
from scoperun.errors import ConfigError

__all__ = ["ROLES", "Principal", "Role", "TokenEntry", "TokenStore", "role_allows", "tokens_path"]

Role = Literal["read", "run", "admin"]
ROLES: tuple[Role, ...] = ("read", "run", "admin")
_RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "sr_"


def role_allows(have: str, need: str) -> bool:
    """True when role `have` includes everything role `need` may do."""
    return _RANK.get(have, -1) >= _RANK[need]


def tokens_path(settings: Settings) -> Path:
    """The token file of these settings: `tokens_file`, else `<state_dir>/tokens.json`."""
    if settings.tokens_file is not None:
        return Path(settings.tokens_file).expanduser()
    from scoperun.audit.state import state_dir

    return state_dir(settings) / "tokens.json"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role (or the anonymous admin of an open loopback server)."""

    name: str
    role: str
    anonymous: bool = False

    def allows(self, need: str) -> bool:
        """True when this caller's role includes `need`."""
        return role_allows(self.role, need)


class TokenEntry(BaseModel):
    """One token as stored: its name, role and hash, never the token."""

    name: str
    role: Role
    sha256: str = Field(description="Hex SHA-256 of the token.")
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The token file: create, list, revoke, and authenticate a presented token."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._entries: list[TokenEntry] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        """The store at `tokens_path(settings)`."""
        return cls(tokens_path(settings))

    # -- reading --------------------------------------------------------------------------------

    def entries(self) -> list[TokenEntry]:
        """Every token (revoked ones too), re-read when the file changed."""
        with self._lock:
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                self._seen, self._entries = None, []
                return []
            except OSError as exc:
                raise ConfigError(f"cannot read the token file {self.path} ({exc.strerror})") from None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._seen:
                self._entries = self._load()
                self._seen = stamp
            return list(self._entries)

    def _load(self) -> list[TokenEntry]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                data = json.loads(fh.read() or b"{}")
            return [TokenEntry.model_validate(e) for e in data.get("tokens", [])]
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the token file {self.path} is unreadable ({exc}); fix or remove it and create "
                              f"tokens again with `scoperun token create`") from None

    def active(self) -> list[TokenEntry]:
        """Tokens not revoked."""
        return [e for e in self.entries() if e.active]

    def authenticate(self, token: str) -> Principal | None:
        """The principal of `token`, or None when it is unknown or revoked (constant-time comparison)."""
        digest = _hash(token)
        found: TokenEntry | None = None
        for entry in self.entries():
            # Compare with every entry, match or not, so the time taken tells nothing.
            if hmac.compare_digest(digest, entry.sha256) and entry.active:
                found = entry
        return Principal(found.name, found.role) if found is not None else None

    # -- changing -------------------------------------------------------------------------------

    def create(self, name: str, role: str) -> str:
        """Make a token named `name` with `role`; return the token (shown once, stored only hashed)."""
        if not _NAME_RE.match(name):
            raise ConfigError(f"token name {name!r} is not valid: use up to 64 letters, digits, . _ @ -")
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
        entries = self.entries()
        if any(e.name == name and e.active for e in entries):
            raise ConfigError(f"a token named {name!r} exists; revoke it first or pick another name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entries.append(TokenEntry(name=name, role=role, sha256=_hash(token),
                                  created_at=datetime.now(UTC).isoformat(timespec="seconds")))
        self._save(entries)
        return token

    def revoke(self, name: str) -> TokenEntry:
        """Revoke the active token named `name`; raise ConfigError when there is none."""
        entries = self.entries()
        for entry in entries:
            if entry.name == name and entry.active:
                entry.revoked_at = datetime.now(UTC).isoformat(timespec="seconds")
                self._save(entries)
                return entry
        raise ConfigError(f"no active token named {name!r} (see `scoperun token list`)")

    def _save(self, entries: list[TokenEntry]) -> None:
        data: dict[str, Any] = {"version": 1, "tokens": [e.model_dump() for e in entries]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_bytes_atomic(self.path, json.dumps(data, indent=2).encode())
        except OSError as exc:
            raise ConfigError(f"cannot write the token file {self.path} ({exc.strerror}); set "
                              f"SCOPERUN_TOKENS_FILE to a writable place") from None
