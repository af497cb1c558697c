"""The host's side of the runner image's launcher (PID 1): send one request, read the run's end.

A container whose image carries the launcher (label `org.scoperun.launcher`) starts idle, reading
its attached stdin. The host sends one JSON line (argv, environment with the secrets, folder,
timeout and a fresh random tag), then reads the attached stdout and stderr until each ends with
the tag and the exit code. The result is known as soon as the script ends, without waiting for
the engine to notice the container's exit; when the tag is missing or malformed the engine's own
`wait` is the judge, and the outcome says which one gave the exit code.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from scoperun.engine.base import RunOutcome, RunSpec

__all__ = ["LAUNCHER_LABEL", "TaggedStream", "close_attach_socket", "launcher_command", "read_frames", "request_line"]

# An image whose launcher speaks this protocol carries this label (its value: the protocol version).
LAUNCHER_LABEL = "org.scoperun.launcher"
LAUNCHER_PATH = "/opt/scoperun/launcher.py"
_HEADER = struct.Struct(">BxxxL")
_TAG_LINE_MAX = 200  # bytes after the tag up to its newline


def launcher_command(idle_seconds: float) -> list[str]:
    """The container command: the launcher, which exits by itself after `idle_seconds` unused."""
    return ["python3", "-I", "-S", LAUNCHER_PATH, str(int(idle_seconds))]


def request_line(spec: RunSpec, tag: str, linger: float = 0) -> bytes:
    """The one request the launcher reads. JSON escapes every control byte (no detach sequence).

    `linger`: seconds the launcher waits for stdin's EOF after the end line before exiting (0: exit
    at once); a pooled container is ended later, together with others, when no run needs the cores.
    """
    return (json.dumps({"argv": list(spec.command), "env": spec.env, "cwd": spec.working_dir,
                        "timeout": spec.timeout, "tag": tag, "linger": linger}) + "\n").encode()


def new_tag() -> str:
    """A per-run secret the script never sees: only the launcher can end a stream with it."""
    return "\x1escoperun-end-" + secrets.token_hex(16) + ":"


class TaggedStream:
    """One output stream: bytes go to the buffer until the tag; the tag line carries the exit."""

    def __init__(self, outcome_buffer: Any, tag: bytes, listener: Any = None) -> None:
        self.buffer = outcome_buffer
        self.tag = tag
        self.listener = listener  # gets each chunk of output as soon as it is known not to be the tag
        self.held = b""  # the stream's last bytes, which might be the start of the tag
        self.end: dict[str, Any] | None = None
        self.malformed = False

    @property
    def ended(self) -> bool:
        """The tag line was read (well-formed or not): nothing after it counts."""
        return self.end is not None or self.malformed

    def feed(self, data: bytes) -> None:
        """Take the next chunk of the stream."""
        if self.ended:
            return
        data = self.held + data
        i = data.find(self.tag)
        if i >= 0:
            self._out(data[:i])
            rest = data[i + len(self.tag):]
            nl = rest.find(b"\n")
            if nl < 0:
                if len(rest) > _TAG_LINE_MAX:
                    self.malformed = True
                self.held = data[i:]
                return
            self.held = b""
            try:
                end = json.loads(rest[:nl])
                if not isinstance(end, dict) or not isinstance(end.get("code"), int):
                    raise ValueError(end)
                self.end = end
            except ValueError:
                self.malformed = True
            return
        # Hold back only a tail that could be the start of the tag, so live output is not delayed.
        keep = 0
        if self.tag[:1] in data[-len(self.tag):]:
            keep = next((k for k in range(min(len(self.tag) - 1, len(data)), 0, -1)
                         if data.endswith(self.tag[:k])), 0)
        self._out(data[: len(data) - keep])
        self.held = data[len(data) - keep:]

    def _out(self, data: bytes) -> None:
        if not data:
            return
        self.buffer.write(data)
        if self.listener is not None:
            try:
                self.listener(data)
            except Exception:
                pass

    def close(self) -> None:
        """The stream ended without a tag: what was held back is output too."""
        if not self.ended and self.held:
            self._out(self.held)
        self.held = b""


def read_frames(sock: socket.socket, streams: dict[int, TaggedStream], deadline: float) -> str:
    """Demultiplex the attach socket into `streams` until both ended, EOF or `deadline`.

    Returns "tagged", "eof" or "deadline".
    """
    buf = bytearray()
    while True:
        if all(s.ended for s in streams.values()):
            return "tagged"
        left = deadline - time.monotonic()
        if left <= 0:
            return "deadline"
        sock.settimeout(left)
        try:
            chunk = sock.recv(262144)
        except TimeoutError:
            return "deadline"
        except OSError:
            chunk = b""
        if not chunk:
            return "eof"
        buf += chunk
        while len(buf) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(buf)
            if len(buf) < _HEADER.size + size:
                break
            payload = bytes(buf[_HEADER.size:_HEADER.size + size])
            del buf[:_HEADER.size + size]
            stream = streams.get(kind)
            if stream is not None:
                stream.feed(payload)


def apply_end(outcome: RunOutcome, end: dict[str, Any]) -> None:
    """Fill the outcome from the launcher's end line."""
    outcome.exit_code = int(end["code"])
    outcome.timed_out = end.get("how") == "timeout"
    outcome.exit_source = "launcher"


_LAUNCHER_GRACE = 5.0  # seconds past the timeout before the host stops waiting for the launcher's end line
_JUDGE_PATIENCE = 30.0  # seconds the engine may take to report the exit when the end line is missing
_LINGER = 600.0  # seconds a used pooled container's launcher waits to be ended (its host forgot it: it exits)


class LaunchedRun:
    """A container whose launcher got its request: `wait` reads the tagged end, `kill` ends it early.

    `after` runs once the run is over and before the container is removed (a pooled slot's unmounts).
    """

    def __init__(self, backend: Any, spec: RunSpec, container_id: str, sock: Any, outcome: RunOutcome, *,
                 volumes: dict[str, str] | None = None, started: float, pooled: bool = False,
                 after: Any = None) -> None:
        self.backend = backend
        self.spec = spec
        self.container_id = container_id
        self.sock = sock
        self.outcome = outcome
        self.volumes = volumes or {}
        self.started = started
        self.pooled = pooled
        self.after = after
        self.tag = new_tag()
        self.done = False
        self.on_done: Callable[[], None] | None = None  # told once when the container's part of the run is over
        outcome.pooled = pooled

    def send(self) -> None:
        """Hand the launcher its request (argv, environment with the secrets, folder, timeout, tag)."""
        _raw(self.sock).sendall(request_line(self.spec, self.tag, _LINGER if self._ended_in_a_lull else 0))

    @property
    def _ended_in_a_lull(self) -> bool:
        """A pooled container waits after its run to be ended with others (the backend's `used`)."""
        return self.pooled and getattr(self.backend, "used", None) is not None

    def kill(self) -> None:
        """SIGKILL the container now; `wait` then returns (exit code 137, from the engine)."""
        self.backend.kill_container(self.container_id)

    def wait(self) -> RunOutcome:
        """Read output until both streams end with the tag (or EOF, or the timeout's grace); clean up."""
        if self.done:
            self._tell_done()
            return self.outcome
        self.done = True
        outcome, spec = self.outcome, self.spec
        tag = self.tag.encode()
        live = spec.on_output
        def listener(stream: str) -> Callable[[bytes], None] | None:
            return None if live is None else (lambda b: live(stream, b))

        streams = {1: TaggedStream(outcome.stdout, tag, listener("stdout")),
                   2: TaggedStream(outcome.stderr, tag, listener("stderr"))}
        removed_inline = False
        try:
            how = read_frames(_raw(self.sock), streams, self.started + spec.timeout + _LAUNCHER_GRACE)
            outcome.run = time.monotonic() - self.started
            for stream in streams.values():
                stream.close()
            ends = [s.end for s in streams.values()]
            if (how == "tagged" and ends[0] is not None and ends[0] == ends[1]
                    and not (ends[0].get("how") == "signaled" and not ends[0].get("oom_known"))):
                apply_end(outcome, ends[0])
                outcome.oom_killed = ends[0].get("how") == "oom"
            else:
                if how == "deadline":
                    outcome.timed_out = True
                    self.backend.kill_container(self.container_id)
                self._judge()
        except BaseException:
            # Ctrl-C or a bug in scoperun: the container must not outlive us.
            self._close_socket()
            if self.after is not None:
                self.after()
            self.backend.remove_container(self.container_id, self.volumes, inline=True)
            removed_inline = True
            raise
        finally:
            if not removed_inline:
                if self.after is not None:
                    self.after()
                if self._ended_in_a_lull and outcome.error is None:
                    # Only its launcher is left (it killed every process of the run, the case is being
                    # unmounted): ended in the next lull, with others, off the cores runs need now.
                    self.backend.used.add(self.container_id, self.sock)
                else:
                    self._close_socket()
                    outcome.removal = self.backend.remove_container(
                        self.container_id, self.volumes, inline=bool(self.volumes) or outcome.error is not None)
            self._tell_done()
        return outcome

    def _tell_done(self) -> None:
        done, self.on_done = self.on_done, None
        if done is not None:
            done()

    def _judge(self) -> None:
        """No (valid) end line: the engine says how the container ended."""
        outcome = self.outcome
        code, oom, error = self.backend.judge(self.container_id, _JUDGE_PATIENCE)
        outcome.exit_source = "engine"
        if error is not None:
            outcome.error = error
            return
        outcome.exit_code = code
        outcome.oom_killed = oom and not outcome.timed_out

    def _close_socket(self) -> None:
        close_attach_socket(self.sock)


def _raw(sock: Any) -> socket.socket:
    """The socket under docker-py's attach wrapper (SocketIO), which is what can send and recv."""
    raw: socket.socket = getattr(sock, "_sock", sock)
    return raw


def close_attach_socket(sock: Any) -> None:
    """Close an attach socket from docker-py and the connection under it (None: nothing to close).

    Closing docker-py's wrapper (SocketIO) alone leaves the socket it wraps open until garbage
    collection; close both, wrapper first, so the descriptor is released now.
    """
    if sock is None:
        return
    for part in (sock, _raw(sock)):
        try:
            part.close()
        except Exception:
            pass
