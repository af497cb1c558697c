"""Engine work that can wait for a lull: runs in flight come first on the two cores.

Preparing a warm container and ending a used one cost the engine and the kernel far more than a
pooled run does (create and start, a network namespace made and torn down: measured ~150 ms of
kernel time per teardown here). Done while runs are in flight, that work takes the cores from
them. `Lull` counts runs in flight so such work can wait until none has been for a moment (never
longer than a bound, so it is delayed, not starved); `UsedContainers` holds pooled containers
that served their run (only their idle launcher left, every process of the run killed, the case
unmounted) and ends them together in the next lull.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Lull", "UsedContainers"]

LULL = 0.2  # seconds without a run in flight that count as a lull
MOST = 5.0  # seconds background work waits for a lull at most


class Lull:
    """Runs in flight on this backend; background work waits for a moment without any."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._last_end = 0.0

    def begin(self) -> None:
        """A run is starting."""
        with self._cond:
            self._running += 1

    def end(self) -> None:
        """A run's container is done (call once per `begin`)."""
        with self._cond:
            self._running = max(0, self._running - 1)
            self._last_end = time.monotonic()
            self._cond.notify_all()

    @property
    def running(self) -> int:
        """Runs in flight now."""
        with self._cond:
            return self._running

    def wait(self, quiet: float = LULL, most: float | None = None, stop: Callable[[], bool] | None = None) -> None:
        """Until no run has been in flight for `quiet` seconds, `most` (default MOST) seconds passed, or `stop()`."""
        deadline = time.monotonic() + (MOST if most is None else most)
        with self._cond:
            while True:
                now = time.monotonic()
                if now >= deadline or (stop is not None and stop()):
                    return
                if self._running == 0:
                    quiet_left = self._last_end + quiet - now
                    if quiet_left <= 0:
                        return
                    self._cond.wait(min(quiet_left, deadline - now))
                else:
                    self._cond.wait(min(0.05, deadline - now))


class UsedContainers:
    """Pooled containers that served their run, ended together in the next lull.

    Ending one is closing its attach socket: the container was made with StdinOnce, so its launcher
    reads EOF and exits, and the engine removes the container (AutoRemove). `confirm` then waits
    for the engine to say it is gone and force-removes it if not.
    """

    def __init__(self, lull: Lull, close: Callable[[Any], None], confirm: Callable[[list[str]], None],
                 *, most_held: int = 32) -> None:
        self._lull = lull
        self._close = close
        self._confirm = confirm
        self._most_held = most_held
        self._lock = threading.Condition()
        self._held: list[tuple[str, Any]] = []
        self._ending = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, container_id: str, sock: Any) -> None:
        """Hold a used container until the next lull (too many held: end them now)."""
        with self._lock:
            self._held.append((container_id, sock))
            self._lock.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="scoperun-used", daemon=True)
                self._thread.start()

    def held(self) -> int:
        """Used containers not yet ended (held or being ended)."""
        with self._lock:
            return len(self._held) + self._ending

    def settle(self, timeout: float) -> bool:
        """Wait until every used container has ended (False: still some after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._held or self._ending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        """End every held container now and wait for them to go."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._end(self._take())  # added after the loop ended (e.g. a run that finished during close)
        with self._lock:
            self._stopping = False
            self._thread = None

    def _take(self) -> list[tuple[str, Any]]:
        with self._lock:
            batch, self._held = self._held, []
            self._ending += len(batch)
            return batch

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._held and not self._stopping:
                    self._lock.wait()
                if not self._held and self._stopping:
                    return
            self._lull.wait(stop=self._must_end)
            self._end(self._take())

    def _must_end(self) -> bool:
        with self._lock:
            return self._stopping or len(self._held) >= self._most_held

    def _end(self, batch: list[tuple[str, Any]]) -> None:
        if not batch:
            return
        try:
            # All sockets first, so the kernel tears the namespaces down in one batch.
            for _, sock in batch:
                self._close(sock)
            self._confirm([container_id for container_id, _ in batch])
        except Exception:
            pass  # e.g. the engine went away: what is left carries its labels and deadline, and `gc` removes it
        finally:
            with self._lock:
                self._ending -= len(batch)
                self._lock.notify_all()
