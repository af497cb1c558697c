"""A container without the launcher: its output read from an attach stream opened before it started.

`DockerBackend.start` makes one (`AttachedRun`) for images that do not carry the launcher; `drain`
reads the demultiplexed stream into the run's bounded buffers, the one place live output is handed on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from scoperun.engine.base import RunOutcome, RunSpec
from scoperun.engine.dockerops import lost_engine

__all__ = ["AttachedEngine", "AttachedRun", "drain"]

_READER_GRACE = 10.0  # seconds to drain the output stream after the container ended


class AttachedEngine(Protocol):
    """What an attached run asks of the backend that started it (DockerBackend); it never imports it."""

    @property
    def client(self) -> Any: ...

    def remove_container(self, container_id: str, volumes: dict[str, str], *, inline: bool) -> Future[object] | None: ...

    def kill_container(self, container_id: str) -> None: ...


class AttachedRun:
    """A started container: `wait` reads its end and removes it; `kill` ends it early."""

    def __init__(self, backend: AttachedEngine, spec: RunSpec, container_id: str, volumes: dict[str, str],
                 outcome: RunOutcome) -> None:
        self.backend = backend
        self.spec = spec
        self.container_id = container_id
        self.volumes = volumes
        self.outcome = outcome
        self.reader: threading.Thread | None = None
        self.started: float | None = None  # monotonic time the engine started it; None if it did not
        self.done = False
        self.on_done: Callable[[], None] | None = None  # told once when the container's part of the run is over

    def wait(self) -> RunOutcome:
        """Wait for the end (bounded by the timeout), inspect and remove the container."""
        from docker.errors import APIError, DockerException
        from requests.exceptions import ConnectionError as RequestsConnectionError

        if self.done:
            self._tell_done()
            return self.outcome
        self.done = True
        removed_inline = False
        try:
            if self.outcome.error is None:
                self._wait_for_exit()
        except (APIError, RequestsConnectionError, DockerException) as exc:
            self.outcome.error = lost_engine(exc)
        except BaseException:
            # Ctrl-C or a bug in scoperun: the container must not outlive us (removed inline, below).
            removed_inline = True
            raise
        finally:
            self._clean_up(removed_inline)
            self._tell_done()
        return self.outcome

    def _tell_done(self) -> None:
        done, self.on_done = self.on_done, None
        if done is not None:
            done()

    def kill(self) -> None:
        """SIGKILL the container now; `wait` then returns (exit code 137)."""
        self.backend.kill_container(self.container_id)  # already gone: exactly what we wanted

    def _wait_for_exit(self) -> None:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import ReadTimeout

        api, spec, outcome = self.backend.client.api, self.spec, self.outcome
        started = self.started if self.started is not None else time.monotonic()
        deadline = started + spec.timeout
        try:
            outcome.exit_code = api.wait(self.container_id, timeout=max(0.05, deadline - time.monotonic()))["StatusCode"]
        except (ReadTimeout, RequestsConnectionError):
            # Over the unix socket a read timeout surfaces as a ConnectionError; tell it from a
            # lost engine by the clock.
            if time.monotonic() < deadline - 0.5:
                raise
            outcome.timed_out = True
            _kill(api, self.container_id)
        outcome.run = time.monotonic() - started
        if self.reader is not None:
            self.reader.join(_READER_GRACE)
        state = api.inspect_container(self.container_id)["State"]
        if outcome.exit_code is None:
            outcome.exit_code = state.get("ExitCode")
        outcome.oom_killed = bool(state.get("OOMKilled")) and not outcome.timed_out

    def _clean_up(self, removed_inline: bool) -> None:
        # A staged run's overlay must be unmounted before its changes are read, and a run that went
        # wrong is removed at once: both inline (then the staging volumes). Otherwise in the background.
        inline = removed_inline or self.outcome.error is not None
        removal = self.backend.remove_container(self.container_id, self.volumes, inline=inline)
        if removal is not None:
            self.outcome.removal = removal


def drain(stream: Any, outcome: RunOutcome, on_output: Callable[[str, bytes], None] | None = None) -> None:
    """Read the demultiplexed attach stream into the bounded buffers until it closes.

    Every chunk passes here first: the one place to hand live output to a listener (`on_output`).
    """
    try:
        for out, err in stream:
            if out:
                outcome.stdout.write(out)
                _tell(on_output, "stdout", out)
            if err:
                outcome.stderr.write(err)
                _tell(on_output, "stderr", err)
    except Exception:
        pass
    finally:
        try:
            stream.close()
            # The stream's close shuts the socket down, but the HTTP response still holds its file
            # object (so the socket's descriptor stays open until garbage collection): close it too.
            response = getattr(stream, "_response", None)
            if response is not None:
                response.close()
        except Exception:
            pass


def _tell(on_output: Callable[[str, bytes], None] | None, stream: str, data: bytes) -> None:
    if on_output is not None:
        try:
            on_output(stream, data)
        except Exception:  # a listener's bug must not stop the output being kept
            pass


def _kill(api: Any, container_id: str) -> None:
    from docker.errors import DockerException

    try:
        api.kill(container_id)
    except DockerException:
        pass  # already gone: exactly what we wanted
    try:
        api.wait(container_id, timeout=30)
    except Exception:
        pass
