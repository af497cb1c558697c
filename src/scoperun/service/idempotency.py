"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a retried request never acts twice.

A key is registered as in flight *before* the request acts, so a retry arriving meanwhile gets
409 instead of a second run; once the request completes its response is stored and replayed to
every retry for `TTL` seconds (24 h). The same key with a different request body gets 422.
Keys are scoped per caller and per endpoint, and kept in a host-local SQLite file, so a
restarted server still replays them (in-flight entries of a dead server are dropped on start).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoperun.service.problems import Problem

__all__ = ["TTL", "IdempotencyStore", "Replay", "fingerprint", "parse_key"]

TTL = 24 * 3600.0
_MAX_KEY = 255
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    scope TEXT, key TEXT, fingerprint TEXT, state TEXT, created REAL,
    status INTEGER, body TEXT, headers TEXT, PRIMARY KEY (scope, key)
);
"""


@dataclass(frozen=True)
class Replay:
    """The stored response of a completed request."""

    status: int
    body: Any
    headers: dict[str, str]


def parse_key(value: str | None) -> str | None:
    """The key of an Idempotency-Key header (a structured-field string; bare tokens accepted too)."""
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or len(value) > _MAX_KEY or not value.isprintable():
        raise Problem(400, "invalid-request", f"Idempotency-Key must be 1-{_MAX_KEY} printable characters")
    return value


def fingerprint(body: bytes) -> str:
    """A digest of the request body; JSON is canonicalised so key order and spacing do not matter."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


class IdempotencyStore:
    """Keys, fingerprints and stored responses, in one SQLite file."""

    def __init__(self, path: Path, *, ttl: float = TTL) -> None:
        self.ttl = ttl
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        with self._lock:
            # Whatever was in flight died with the previous server: let its retries proceed.
            self._conn.execute("DELETE FROM keys WHERE state = 'in-flight' OR created < ?", (time.time() - ttl,))

    def begin(self, scope: str, key: str, digest: str) -> Replay | None:
        """Register `key` as in flight and return None, or return the stored response to replay.

        Raises a 422 problem when the key was used with another body, 409 while the first is in flight.
        """
        with self._lock:
            row = self._conn.execute("SELECT fingerprint, state, created, status, body, headers FROM keys "
                                     "WHERE scope = ? AND key = ?", (scope, key)).fetchone()
            if row is not None and row[2] < time.time() - self.ttl:
                self._conn.execute("DELETE FROM keys WHERE scope = ? AND key = ?", (scope, key))
                row = None
            if row is None:
                self._conn.execute("INSERT INTO keys VALUES (?, ?, ?, 'in-flight', ?, NULL, NULL, NULL)",
                                   (scope, key, digest, time.time()))
                return None
        stored_digest, state, _, status, body, headers = row
        if stored_digest != digest:
            raise Problem(422, "idempotency-key-reused", "this Idempotency-Key was used with a different request "
                          "body; use a new key for a new request")
        if state == "in-flight":
            raise Problem(409, "idempotency-in-flight", "the first request with this Idempotency-Key is still "
                          "being processed; retry later to get its response", headers={"Retry-After": "1"})
        return Replay(int(status), json.loads(body), json.loads(headers))

    def complete(self, scope: str, key: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Store the response of the request that registered `key`."""
        with self._lock:
            self._conn.execute("UPDATE keys SET state = 'done', status = ?, body = ?, headers = ? "
                               "WHERE scope = ? AND key = ?",
                               (status, json.dumps(body, default=str), json.dumps(headers or {}), scope, key))

    def release(self, scope: str, key: str) -> None:
        """Forget an in-flight key whose request failed before acting, so a retry may act."""
        with self._lock:
            self._conn.execute("DELETE FROM keys WHERE scope = ? AND key = ? AND state = 'in-flight'", (scope, key))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()
