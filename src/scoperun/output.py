"""Bounded capture of a stream and redaction of secrets from text.

A script may print hundreds of megabytes; scoperun keeps the first and last part of each
stream (so both the start of the output and a final traceback survive) and only counts the
rest, so its own memory stays within a few times the cap.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from .models import OutputCapture

__all__ = ["BoundedBuffer", "Redactor", "redactor_for"]

_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
_FRAGMENT_LEN = 8  # any run of >= 8 characters of a secret is redacted


class BoundedBuffer:
    """Keeps the head and tail of a byte stream and the total size.

    With `spill_limit`, a stream that outgrows the cap is also copied, up to `spill_limit` bytes,
    to an anonymous temporary file on local disk (never memory), for the audit trail.
    """

    def __init__(self, cap: int, *, spill_limit: int = 0) -> None:
        self.cap = cap
        self._tail_cap = cap // 4
        self._head_cap = cap - self._tail_cap
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self.spill_limit = spill_limit
        self._spill: IO[bytes] | None = None
        self._spilled = 0

    def write(self, data: bytes) -> None:
        """Account for `data`, keeping only what fits the cap."""
        if self.spill_limit:
            self._spill_write(data)
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            # Trim lazily so a stream of small writes stays O(n) overall.
            if len(self._tail) > 2 * max(self._tail_cap, 1):
                del self._tail[: len(self._tail) - self._tail_cap]

    def _spill_write(self, data: bytes) -> None:
        if self._spill is None:
            if self.total + len(data) <= self.cap:
                return  # fits the cap: nothing to keep beside the result
            # First overflow: head and tail still hold every byte so far (the tail is trimmed
            # only past twice its cap), so the spill file starts complete.
            self._spill = tempfile.TemporaryFile(prefix="scoperun-out-")
            self._spill_raw(bytes(self._head) + bytes(self._tail))
        self._spill_raw(data)

    def _spill_raw(self, data: bytes) -> None:
        room = self.spill_limit - self._spilled
        if room > 0 and self._spill is not None:
            chunk = data[:room]
            self._spill.write(chunk)
            self._spilled += len(chunk)

    @property
    def spilled(self) -> bool:
        """True when a full copy (up to `spill_limit`) of an over-cap stream exists."""
        return self._spill is not None

    def full_chunks(self, chunk_size: int = 1024 * 1024) -> tuple[Iterator[bytes], bool]:
        """The whole stream as far as kept (under the cap, or spilled up to `spill_limit`), in chunks
        read from disk so memory stays bounded, and whether that is all of it."""
        if self._spill is not None:
            spill = self._spill
            spill.flush()
            spill.seek(0)
            return iter(lambda: spill.read(chunk_size), b""), self._spilled == self.total
        if not self.truncated:
            return iter([bytes(self._head) + bytes(self._tail)]), True
        return iter(()), False

    def full_bytes(self) -> tuple[bytes, bool]:
        """`full_chunks` joined (for small streams and tests)."""
        chunks, complete = self.full_chunks()
        return b"".join(chunks), complete

    def close(self) -> None:
        """Delete the spill file, if any."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    @property
    def truncated(self) -> bool:
        """True when some of the stream was not kept."""
        return self.total > len(self._head) + min(len(self._tail), self._tail_cap)

    def capture(self, redactor: Redactor | None = None) -> OutputCapture:
        """Decode what was kept (invalid UTF-8 replaced), redact it and describe it."""
        tail = bytes(self._tail[-self._tail_cap :]) if self._tail_cap else b""
        if not self.truncated:
            text = (bytes(self._head) + bytes(self._tail)).decode("utf-8", "replace")
        else:
            omitted = self.total - len(self._head) - len(tail)
            text = (
                bytes(self._head).decode("utf-8", "replace")
                + f"\n[... {omitted} bytes omitted by scoperun ...]\n"
                + tail.decode("utf-8", "replace")
            )
        if redactor is not None:
            text = redactor.redact(text)
        return OutputCapture(text=text, total_bytes=self.total, truncated=self.truncated)


class Redactor:
    """Replaces secret values, and any fragment of 8+ characters of them, by `[REDACTED:NAME]`."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = {n: v for n, v in secrets.items() if v and len(v) >= _MIN_SECRET_LEN}
        self._grams: dict[str, str] = {}
        for name, value in self._secrets.items():
            for i in range(len(value) - _FRAGMENT_LEN + 1):
                self._grams.setdefault(value[i : i + _FRAGMENT_LEN], name)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact(self, text: str) -> str:
        """Return `text` with every secret value and secret fragment replaced.

        Line breaks are ignored when looking for fragments, so a secret printed in pieces over
        several lines (even pieces shorter than 8 characters) is caught; the breaks are kept.
        """
        if not self._secrets or not text:
            return text
        for name, value in self._secrets.items():
            text = text.replace(value, f"[REDACTED:{name}]")
        if not self._grams:
            return text
        # Positions of the characters that are not line breaks: fragments are searched in the
        # text with the breaks removed, then mapped back.
        kept = [i for i, ch in enumerate(text) if ch not in "\r\n"]
        joined = "".join(text[i] for i in kept) if len(kept) != len(text) else text
        owner: list[str | None] = [None] * len(text)
        hit = False
        for i in range(len(joined) - _FRAGMENT_LEN + 1):
            name = self._grams.get(joined[i : i + _FRAGMENT_LEN])
            if name is not None:
                hit = True
                for j in range(i, i + _FRAGMENT_LEN):
                    owner[kept[j]] = name
        if not hit:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            name = owner[i]
            if name is None:
                out.append(text[i])
                i += 1
                continue
            while i < len(text) and owner[i] == name:
                i += 1
            out.append(f"[REDACTED:{name}]")
        return "".join(out)

    def redact_data(self, data: Any) -> Any:
        """Redact every string inside nested dicts, lists and tuples (e.g. a result's JSON)."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {k: self.redact_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return type(data)(self.redact_data(v) for v in data)
        return data

    def redact_list(self, values: list[str]) -> list[str]:
        """Redact each string of a list."""
        return [self.redact(v) for v in values]


def redactor_for(secret_env: Iterable[str], environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor for the passed-through secrets `secret_env` (e.g. `settings.secret_env`).

    Adapters that show anything to an agent (markdown, MCP, LangChain) use this so they redact
    exactly what runs redact.
    """
    env = os.environ if environ is None else environ
    return Redactor({name: env[name] for name in secret_env if env.get(name)})
