"""Bounded capture of a stream: the head and tail of what a script printed, and its total size.

A script may print hundreds of megabytes; scoperun keeps the first and last part of each
stream (so both the start of the output and a final traceback survive) and only counts the
rest, so its own memory stays within a few times the cap.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from scoperun.models import OutputCapture

if TYPE_CHECKING:
    from scoperun.safety.redaction import Redactor

__all__ = ["BoundedBuffer"]


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
            # Kept open beyond this call (closed by close()): no context manager here.
            self._spill = tempfile.TemporaryFile(prefix="scoperun-out-")  # noqa: SIM115
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
