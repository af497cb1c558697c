"""Each run's numbered events, written to disk before any subscriber sees them, and SSE fan-out.

Events: `queued` (position; again each time it changes while the run waits), `started`,
`stdout` / `stderr` (redacted text as printed), `changes`, `cancelling`, `finished` (the result).
Ids start at 1 and never repeat, so a client that reconnects with `Last-Event-ID: N` (or
`?after=N`) gets exactly the events after N: the ones already on disk first, then live ones.
Each subscriber has a bounded queue; one that falls that far behind is dropped (its stream ends,
it reconnects and catches up from disk), so a slow reader never stalls a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.responses import Response

__all__ = ["Event", "EventLog", "SSEResponse", "format_sse", "read_events"]

SUBSCRIBER_QUEUE = 2000  # events a subscriber may lag behind before it is dropped
_END = object()
_DROPPED = object()


@dataclass(frozen=True)
class Event:
    """One numbered event of a run."""

    id: int
    event: str
    data: dict[str, Any]

    def line(self) -> bytes:
        """Its JSON line in the event file."""
        return json.dumps({"id": self.id, "event": self.event, "data": self.data,
                           "at": datetime.now(UTC).isoformat()}, default=str).encode() + b"\n"


def read_events(path: Path, after: int = 0, upto: int | None = None) -> list[Event]:
    """The events in `path` with after < id <= upto (a torn last line is skipped)."""
    found: list[Event] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return found
    with os.fdopen(fd, "rb") as fh:
        for raw in fh:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            n = item.get("id")
            if isinstance(n, int) and n > after and (upto is None or n <= upto):
                found.append(Event(n, str(item.get("event")), item.get("data") or {}))
    return found


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.dropped = False

    def offer(self, item: Any) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # Too far behind: end this stream; the client resumes from disk with Last-Event-ID.
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_DROPPED)


class EventLog:
    """The event file of one run plus its live subscribers; `append` is safe from any thread."""

    def __init__(self, path: Path, *, last_id: int = 0, closed: bool = False) -> None:
        self.path = path
        self.last_id = last_id
        self.closed = closed
        self.dropped_subscribers = 0
        self._lock = threading.Lock()
        self._subs: set[_Subscriber] = set()
        self._fd: int | None = None

    @classmethod
    def open_existing(cls, path: Path) -> EventLog:
        """A finished run's log, read from disk (no live part)."""
        events = read_events(path)
        return cls(path, last_id=events[-1].id if events else 0, closed=True)

    def append(self, event: str, data: dict[str, Any]) -> int:
        """Write the next event to disk, then hand it to every subscriber; return its id."""
        with self._lock:
            if self.closed:
                return self.last_id
            ev = Event(self.last_id + 1, event, data)
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            os.write(self._fd, ev.line())  # in the kernel before anyone is told: a restart keeps it
            self.last_id = ev.id
            for sub in self._subs:
                sub.loop.call_soon_threadsafe(sub.offer, ev)
            return ev.id

    def close(self) -> None:
        """No more events: live streams end after what they have."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = None
            for sub in self._subs:
                sub.loop.call_soon_threadsafe(sub.offer, _END)
            self._subs.clear()

    @property
    def subscribers(self) -> int:
        """Live subscribers now."""
        return len(self._subs)

    async def subscribe(self, after: int = 0) -> AsyncIterator[Event]:
        """The events after `after`: from disk, then live until the run ends (or this reader is dropped)."""
        sub = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            upto = self.last_id
            live = not self.closed
            if live:
                self._subs.add(sub)
        try:
            if after < upto:
                for ev in await asyncio.to_thread(read_events, self.path, after, upto):
                    yield ev
            if not live:
                return
            while True:
                item = await sub.queue.get()
                if item is _END:
                    return
                if item is _DROPPED:
                    self.dropped_subscribers += 1
                    return
                yield item
        finally:
            with self._lock:
                self._subs.discard(sub)


def format_sse(ev: Event) -> bytes:
    """One event in the text/event-stream format (the data is one line of JSON)."""
    return f"id: {ev.id}\nevent: {ev.event}\ndata: {json.dumps(ev.data, default=str)}\n\n".encode()


class SSEResponse(Response):
    """An ASGI text/event-stream response: `retry:` first, pings while idle, a send timeout.

    A client whose socket stops taking data for `send_timeout` seconds is dropped; a client that
    disconnects just ends the stream (the run goes on).
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[Event], *, ping: float = 15.0, retry_ms: int = 2000,
                 send_timeout: float = 30.0, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status_code = 200
        self.background = None
        self.events = events
        self.ping = ping
        self.retry_ms = retry_ms
        self.send_timeout = send_timeout
        self.extra_headers = list(headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def sender() -> None:
            async def put(body: bytes) -> None:
                await asyncio.wait_for(send({"type": "http.response.body", "body": body, "more_body": True}),
                                       self.send_timeout)

            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no"), *((k.encode(), v.encode()) for k, v in self.extra_headers)]})
            await put(f"retry: {self.retry_ms}\n\n".encode())
            iterator = self.events.__aiter__()
            next_event: asyncio.Task[Event] | None = None
            try:
                while True:
                    if next_event is None:
                        next_event = asyncio.ensure_future(iterator.__anext__())
                    done, _ = await asyncio.wait({next_event}, timeout=self.ping)
                    if not done:
                        await put(b": ping\n\n")
                        continue
                    try:
                        ev = next_event.result()
                    except StopAsyncIteration:
                        break
                    next_event = None
                    await put(format_sse(ev))
            finally:
                if next_event is not None and not next_event.done():
                    next_event.cancel()
                    await asyncio.gather(next_event, return_exceptions=True)
                await _aclose(iterator)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        tasks = [asyncio.ensure_future(sender()), asyncio.ensure_future(watch_disconnect())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, (TimeoutError, OSError)):
                raise exc


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):  # the generator is gone either way
            await close()
