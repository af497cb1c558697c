"""The lean path of `scoperun run-code` / `scoperun run` through a server (SCOPERUN_URL): standard
library only (no typer, rich, pydantic, httpx), so the process sends the run ~0.3 s sooner.

`run(argv)` returns None for anything it does not fully understand (an option it does not take,
a terminal (colour), scoperun.toml, a setting it cannot check): the full CLI then runs as always.
What it prints and its exit codes are the full path's (`scoperun.client.Client` and
`cli.main._print_result`): the same request, retries, messages, and the one `summary` module.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from scoperun.cli.summary import EXIT_ENGINE, EXIT_INTERRUPTED, EXIT_REJECTED, as_text, exit_code, plain, summary_lines

__all__ = ["dump_result", "run"]

_RETRY_STATUS = {429, 502, 503, 504}
_RETRIES = 8  # Client's defaults
_MAX_RETRY_WAIT = 60.0
_TIMEOUT = 30.0
_STREAM_READ_TIMEOUT = 60.0
# Settings a remote run does not use, only validates: the lean path takes them when they are surely valid.
_PLAIN_SETTINGS = {"scoperun_url", "scoperun_token", "scoperun_workspace", "scoperun_image", "scoperun_state_dir",
                   "scoperun_staging_dir"}
_WRITE_MODES = ("staged", "direct", "read-only")


class _Fail(Exception):
    """`error: message` on stderr and this exit code (the full path's `fail`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _settings() -> dict[str, str] | None:
    """url, token and workspace as `load_settings` would give them; None if anything else could matter."""
    if os.environ.get("SCOPERUN_CONFIG") or os.path.isfile("scoperun.toml"):
        return None
    env = {k.lower(): v for k, v in os.environ.items() if k[:9].upper() == "SCOPERUN_"}
    for name, value in env.items():
        if name in _PLAIN_SETTINGS:
            continue
        if name == "scoperun_write_mode" and value in _WRITE_MODES:
            continue
        if name == "scoperun_network" and value in ("none", "bridge"):
            continue
        if name == "scoperun_timeout" and value.replace(".", "", 1).isdigit() and 0 < float(value) <= 24 * 3600:
            continue
        return None
    url = env.get("scoperun_url") or ""
    if not url.startswith("http://") or not url.isascii() or not url.isprintable() or " " in url:
        return None  # https (certificates) and odd URLs: the full path
    return {"url": url, "token": env.get("scoperun_token") or "", "workspace": env.get("scoperun_workspace", "./workspace")}


def _parse(argv: list[str]) -> dict[str, Any] | None:
    """run-code/run with the options taken here, as the full path would read them; None otherwise."""
    command, words = argv[0], argv[1:]
    valued = {"--case": "case", "-c": "case", "--requested-by": "requested_by", "--working-dir": "working_dir"}
    if command == "run-code":
        valued["--name"] = "name"
    flags = {"--json": "json", "--read-only": "read_only"}
    opts: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            positional += words[i + 1:]
            break
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            if name in valued and (eq or i + 1 < len(words)):
                key = valued[name]
                if key in opts or (name == "-c" and eq):
                    return None
                if not eq:
                    i += 1
                    value = words[i]
                    if value.startswith("-") and value != "-":
                        return None  # click's reading of an option-like value: not ours to guess
                opts[key] = value
            elif word in flags and flags[word] not in opts:
                opts[flags[word]] = True
            else:
                return None
        else:
            positional.append(word)
        i += 1
    if "case" not in opts or (command == "run" and not positional):
        return None
    if len(opts.get("requested_by") or "") > 200 or (command == "run-code" and positional[:1] not in ([], ["-"])
                                                      and not os.path.isfile(positional[0])):
        return None
    opts["file"] = positional[0] if positional else "-"
    opts["args"] = positional[1:]
    return opts


def _body(command: str, opts: dict[str, Any]) -> dict[str, Any]:
    """What `Client.run`/`run_code` send: the request's fields that differ from their defaults, in its order."""
    body: dict[str, Any] = {}
    if command == "run":
        body["script"] = opts["file"]
    body["case"] = opts["case"]
    if opts["args"]:
        body["args"] = opts["args"]
    if opts.get("working_dir") is not None:
        body["working_dir"] = opts["working_dir"]
    if opts.get("read_only"):
        body["read_only"] = True
    body["requested_by"] = opts.get("requested_by") or "cli"
    return body


class _HTTPError(Exception):
    """A reply that is not HTTP/1.1 as expected (treated as a lost connection)."""


class _Reply:
    """One HTTP/1.1 reply on its own connection (`Connection: close`): status, headers, body read as it comes.

    A socket and a few lines instead of http.client: that would load ssl and the email parser (~30-90 ms).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        status_line = self.file.readline(65537).decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _HTTPError(f"not an HTTP reply: {status_line.strip()[:80]!r}")
        self.status, self.reason = int(code), reason.strip()
        self.headers: dict[str, str] = {}
        while True:
            line = self.file.readline(65537).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def pieces(self) -> Any:
        """The body in pieces as they arrive (chunked, by Content-Length, or to the end)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self.file.readline(65537)
                if not size_line:
                    raise _HTTPError("the reply ended inside a chunk")
                try:
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise _HTTPError(f"a bad chunk size: {size_line[:40]!r}") from None
                if size == 0:
                    return
                data = self.file.read(size + 2)
                if len(data) < size + 2:
                    raise _HTTPError("the reply ended inside a chunk")
                yield data[:size]
        elif "content-length" in self.headers:
            data = self.file.read(int(self.headers["content-length"]))
            if data:
                yield data
        else:
            while data := self.file.read1(65536):
                yield data

    def read(self) -> bytes:
        return b"".join(self.pieces())

    def lines(self) -> Any:
        """The body's lines (without their ends) as each is complete: a stream of server-sent events."""
        buffer = b""
        for piece in self.pieces():
            buffer += piece
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class _Server:
    """The few calls of `Client` the CLI makes, over plain HTTP/1.1, with its retries and messages."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.netloc, _, prefix = self.url[len("http://"):].partition("/")
        self.prefix = "/" + prefix if prefix else ""
        host, port = self.netloc, 80
        if not host.endswith("]") and ":" in host:
            host, _, number = host.rpartition(":")
            port = int(number) if number.isdigit() else 80
        self.address = (host.strip("[]"), port)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def open(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             timeout: float = _TIMEOUT) -> _Reply:
        """Send one request on a new connection and read the reply's head."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() if body is not None else b""
        hdrs = {"Host": self.netloc, "Accept-Encoding": "identity", "Connection": "close", **self.headers,
                **(headers or {})}
        if body is not None or method == "POST":
            hdrs["Content-Length"] = str(len(data))
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        sock = socket.create_connection(self.address, timeout=timeout)
        try:
            sock.sendall(head.encode("latin-1") + b"\r\n" + data)
            return _Reply(sock)
        except BaseException:
            sock.close()
            raise

    def _send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              ) -> tuple[int, dict[str, str], bytes, str]:
        reply = self.open(method, path, body, headers)
        try:
            return reply.status, reply.headers, reply.read(), reply.reason
        finally:
            reply.close()

    def request(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """`Client._request`: transport errors and 429/502-504 retried (Retry-After honoured), same key."""
        headers = {"Idempotency-Key": f'"{key}"'} if key else {}
        for attempt in range(_RETRIES + 1):
            try:
                status, hdrs, data, reason = self._send(method, path, body, headers)
            except (OSError, _HTTPError) as exc:
                if attempt >= _RETRIES:
                    raise _Fail(f"cannot reach scoperun serve at {self.url} ({_why(exc)}); is it running?",
                                EXIT_ENGINE) from None
                time.sleep(min(2 ** attempt * 0.25, 5.0))
                continue
            retryable = status in _RETRY_STATUS or (status == 409 and key and hdrs.get("retry-after"))
            if retryable and attempt < _RETRIES:
                value = hdrs.get("retry-after", "")
                wait = float(value) if value.replace(".", "", 1).isdigit() else min(2 ** attempt * 0.25, 5.0)
                time.sleep(min(wait, _MAX_RETRY_WAIT))
                continue
            if status >= 400:
                raise _Fail(_problem(status, data, reason), EXIT_ENGINE)
            return json.loads(data)
        raise AssertionError("unreachable")

    def cancel(self, execution_id: str) -> None:
        status, _, data, reason = self._send("POST", f"/v1/runs/{execution_id}/cancel")
        if status not in (202, 409):
            raise _Fail(_problem(status, data, reason), EXIT_ENGINE)

    def events(self, execution_id: str) -> Any:
        """`Client.events`: (event, id, data) from the SSE stream, reconnecting from the last id."""
        last, failures = 0, 0
        while True:
            reply = None
            try:
                reply = self.open("GET", f"/v1/runs/{execution_id}/events",
                                  headers={"Last-Event-ID": str(last), "Accept": "text/event-stream",
                                           "Cache-Control": "no-store"})
                if reply.status != 200:
                    raise _Fail(_problem(reply.status, reply.read(), reply.reason), EXIT_ENGINE)
                ctype = reply.headers.get("content-type", "")
                if "text/event-stream" not in ctype.partition(";")[0]:
                    raise _StreamError(f"Expected response header Content-Type to contain 'text/event-stream', "
                                       f"got {ctype!r}")
                reply.sock.settimeout(_STREAM_READ_TIMEOUT)
                for event, ident, data in _sse(reply.lines()):
                    if ident is not None:
                        last = ident
                    failures = 0
                    yield event, data
                    if event == "finished":
                        return
                # The stream ended without `finished`: ask how the run stands before reconnecting.
                ended = self.request("GET", f"/v1/runs/{execution_id}").get("status") not in ("queued", "running")
                if ended and last == int(self.request("GET", f"/v1/runs/{execution_id}").get("last_event_id") or 0):
                    return
            except (OSError, _HTTPError, _StreamError) as exc:
                failures += 1
                if failures > _RETRIES:
                    raise _Fail(f"lost the event stream of {execution_id} ({_why(exc)}); the run goes on: "
                                f"`scoperun logs -f {execution_id}`", EXIT_ENGINE) from None
                time.sleep(min(2 ** failures * 0.25, 5.0))
            finally:
                if reply is not None:
                    reply.close()


class _StreamError(Exception):
    pass


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _problem(status: int, data: bytes, reason: str) -> str:
    """`client._error`'s message: the problem's detail, else the body's start, else the reason."""
    text = data.decode("utf-8", "replace")
    try:
        problem = json.loads(text)
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    detail = problem.get("detail") or text[:300] or reason
    return f"scoperun serve answered {status}: {detail}"


def _sse(lines: Any) -> Any:
    """(event, id, data) of each named event (httpx_sse's reading: pings and `message` skipped)."""
    event, last_id = "", ""
    data: list[str] = []
    for line in lines:
        if not line:
            if event and event != "message":
                text = "\n".join(data)
                payload = json.loads(text) if text else {}
                yield event, (int(last_id) if last_id.isdigit() else None), payload
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value


def _float(value: float) -> str | None:
    """pydantic's JSON of a float where it differs from Python's (1.5e-05 -> 0.000015, 1e-07 -> 1e-7); else None."""
    text = repr(value)
    mantissa, e, exponent = text.partition("e-")
    if not e:
        return None
    if exponent == "05":
        sign, digits = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
        return f"{sign}0.0000{digits.replace('.', '')}"
    return f"{mantissa}e-{exponent.lstrip('0')}"


def dump_result(data: Any) -> str:
    """The result as `ExecutionResult.model_dump_json(indent=2)` writes it (the server sends its JSON form)."""
    swapped: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, float) and (text := _float(node)) is not None:
            marker = f"\0float{len(swapped)}\0"
            swapped[json.dumps(marker)] = text
            return marker
        return node

    dumped = json.dumps(walk(data), indent=2, ensure_ascii=False)
    for marker, text in swapped.items():
        dumped = dumped.replace(marker, text)
    return dumped


def _out(stream: Any, text: str) -> None:
    stream.write(text)
    stream.flush()


def _error(message: str) -> None:
    sys.stderr.write(f"error: {plain(message)}\n")


def run(argv: list[str]) -> int | None:
    """Run the command line through the server and return its exit code; None: the full path must run it."""
    if os.environ.get("SCOPERUN_FULL_CLI") or not argv or argv[0] not in ("run-code", "run"):
        return None
    if sys.stderr.isatty() or sys.stdout.isatty() or any(
            os.environ.get(v) for v in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")):
        return None  # a terminal: colour (and rich's reading of it) is the full path's job
    settings = _settings()
    opts = _parse(argv) if settings is not None else None
    if settings is None or opts is None:
        return None
    command, as_json = argv[0], bool(opts.get("json"))
    body = _body(command, opts)
    if command == "run-code":
        name = opts.get("name", "script.py")
        if opts["file"] == "-":
            try:
                code = sys.stdin.read()
            except KeyboardInterrupt:  # typer's answer to Ctrl-C before the run: exit 130, nothing said
                return EXIT_INTERRUPTED
        else:
            try:
                code = Path(opts["file"]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                _error(f"cannot read {opts['file']}: {exc}")
                return EXIT_REJECTED
            if name == "script.py":
                name = Path(opts["file"]).name
        if not code.strip():
            _error("no code given (empty file or stdin)")
            return EXIT_REJECTED
        body.update(code=code, script_name=name or "script.py")
    server = _Server(settings["url"], settings["token"])
    execution_id = None
    try:
        try:
            execution_id = str(server.request("POST", "/v1/runs", body, key=str(uuid.uuid4()))["execution_id"])
            if not as_json:
                sys.stderr.write(f"run {execution_id} on {server.url}\n")
                sys.stderr.flush()
            result = None
            for event, data in server.events(execution_id):
                if event in ("stdout", "stderr") and not as_json:
                    _out(sys.stdout if event == "stdout" else sys.stderr, data.get("text", ""))
                if event == "finished":
                    result = data
                    break
            if result is None:
                view = server.request("GET", f"/v1/runs/{execution_id}")
                if not view.get("result"):
                    raise _Fail(f"run {execution_id} ended without a result on the server ({view.get('status')}); "
                                f"see its audit record", EXIT_ENGINE)
                result = view["result"]
        except KeyboardInterrupt:
            if execution_id is not None:
                try:
                    server.cancel(execution_id)
                    sys.stderr.write(f"cancelled run {execution_id} (its container is killed; the record says "
                                     f"cancelled)\n")
                except _Fail as exc:
                    sys.stderr.write(f"could not cancel run {execution_id}: {exc}\n")
                except (OSError, _HTTPError) as exc:
                    sys.stderr.write(f"could not cancel run {execution_id}: {exc}\n")
            return EXIT_INTERRUPTED
    except _Fail as exc:
        _error(str(exc))
        return exc.code
    if as_json:
        sys.stdout.write(dump_result(result) + "\n")
    else:
        # The output was printed live as it came: only the summary is left (no notes: nothing cut here).
        root = Path(settings["workspace"]).expanduser().resolve()
        for line in summary_lines(result, root, []):
            sys.stderr.write(as_text(line) + "\n")
    return exit_code(result["status"], result.get("exit_code"))
