"""`scoperun.Client`: the Executor's API (run, arun, stream, run_code, cancel) against `scoperun serve`.

    from scoperun import Client, ExecutionRequest
    with Client("http://127.0.0.1:8737", token) as client:      # or Client() with SCOPERUN_URL / _TOKEN
        result = client.run(ExecutionRequest(script="Tools/x.py", case="Doe"), on_output=print_chunk)

Results are the same `ExecutionResult` models. A run is created with an Idempotency-Key that is
reused on every retry (connection lost, 429 with Retry-After honoured, 502-504), so it never runs
twice; event streams have a read timeout (the server pings every 15 s) and resume from the last
event id, so no output is lost or repeated. Problems become `ServiceError` with the server's `code`.
Needs the `client` extra (httpx, httpx-sse).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from scoperun.errors import ConfigError, ServiceError
from scoperun.models import ExecutionRequest, ExecutionResult, RunEvent

__all__ = ["Client"]

OutputCallback = Callable[[str, str], None]  # (stream, text): "stdout" | "stderr", redacted text
_RETRY_STATUS = {429, 502, 503, 504}


def _imports() -> tuple[Any, Any]:
    # httpx loads its own command line (httpx._main: click, rich.syntax, pygments: ~50 ms) whenever
    # those are installed; a client never needs it, so it is left out (httpx binds its stub `main`
    # instead) and can still be imported normally afterwards.
    skip_cli = "httpx" not in sys.modules and "httpx._main" not in sys.modules
    try:
        if skip_cli:
            sys.modules["httpx._main"] = None  # type: ignore[assignment]
        try:
            import httpx
        finally:
            if skip_cli:
                sys.modules.pop("httpx._main", None)
        import httpx_sse
    except ImportError:
        raise ConfigError("scoperun.Client needs the client extra: pip install 'scoperun[client]'") from None
    return httpx, httpx_sse


def _error(response: Any) -> ServiceError:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = problem.get("detail") or response.text[:300] or response.reason_phrase
    return ServiceError(f"scoperun serve answered {response.status_code}: {detail}", status=response.status_code,
                        code=str(problem.get("code") or "http-error"), problem=problem)


def _event(sse: Any) -> RunEvent:
    import json

    data = json.loads(sse.data) if sse.data else {}
    ident = int(sse.id) if sse.id and sse.id.isdigit() else None
    if sse.event == "finished":
        return RunEvent(type="finished", id=ident, result=ExecutionResult.model_validate(data))
    if sse.event in ("stdout", "stderr"):
        return RunEvent(type=sse.event, id=ident, text=data.get("text", ""))
    return RunEvent(type=sse.event, id=ident, data=data)


class Client:
    """A `scoperun serve` as if it were an Executor: same calls, same result models."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 stream_read_timeout: float = 60.0, retries: int = 8, max_retry_wait: float = 60.0) -> None:
        if url is None or token is None:
            from scoperun.config import load_settings

            settings = load_settings()
            url = url or settings.url
            token = token or (settings.token.get_secret_value() if settings.token else None)
        if not url:
            raise ConfigError("no server URL: pass Client(url) or set SCOPERUN_URL (e.g. http://127.0.0.1:8737)")
        httpx, _ = _imports()
        self.url = url.rstrip("/")
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.stream_read_timeout = stream_read_timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = httpx.Timeout(timeout)
        verify: Any = True
        if self.url.startswith("http://"):
            import ssl

            # Plain HTTP makes no TLS connection: a context without CA certificates (it would refuse
            # every TLS peer, never trust one) spares loading the CA bundle, ~30 ms of each CLI run.
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self._timeout, verify=verify)
        self._headers = headers

    # -- the Executor's API ---------------------------------------------------------------------

    def submit(self, request: ExecutionRequest | dict[str, Any], *, idempotency_key: str | None = None) -> str:
        """Queue a run and return its execution id (a retry with the same key never runs it twice)."""
        body = request.model_dump(mode="json", exclude_defaults=True) if hasattr(request, "model_dump") else request
        response = self._request("POST", "/v1/runs", json=body, key=idempotency_key or str(uuid.uuid4()))
        return str(response.json()["execution_id"])

    def run(self, request: ExecutionRequest, *, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Run on the server and return the result; `on_output(stream, text)` sees output live."""
        return self._follow(self.submit(request), on_output)

    def run_code(self, code: str, *, case: str, script_name: str | None = None,
                 on_output: OutputCallback | None = None, **fields: Any) -> ExecutionResult:
        """Have the server write `code` to its temp scripts folder and run it."""
        body = ExecutionRequest(script="-", case=case, **fields).model_dump(mode="json", exclude_defaults=True)
        body.pop("script", None)
        body.update(code=code, script_name=script_name or "script.py")
        return self._follow(self.submit(body), on_output)

    def stream(self, request: ExecutionRequest) -> Iterator[RunEvent]:
        """Start a run and yield its events live, the last one `finished` with the result."""
        yield from self.events(self.submit(request))

    def events(self, execution_id: str, *, after: int = 0) -> Iterator[RunEvent]:
        """A run's events after `after`, reconnecting from the last id whenever the stream breaks."""
        httpx, httpx_sse = _imports()
        last, failures = after, 0
        while True:
            try:
                timeout = httpx.Timeout(self._timeout.connect, read=self.stream_read_timeout)
                with httpx_sse.connect_sse(self._http, "GET", f"/v1/runs/{execution_id}/events",
                                           headers={"Last-Event-ID": str(last)}, timeout=timeout) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise _error(source.response)
                    for sse in source.iter_sse():
                        if not sse.event or sse.event == "message":
                            continue
                        ev = _event(sse)
                        if ev.id is not None:
                            last = ev.id
                        failures = 0
                        yield ev
                        if ev.type == "finished":
                            return
                    # The stream ended without `finished`: a slow reader was dropped, or the
                    # server restarted; ask the run how it stands before reconnecting.
                    if self._ended(execution_id) and last == self._last_event(execution_id):
                        return
            except (httpx.TransportError, httpx_sse.SSEError) as exc:
                failures += 1
                if failures > self.retries:
                    raise ServiceError(f"lost the event stream of {execution_id} ({exc}); the run goes on: "
                                       f"`scoperun logs -f {execution_id}`") from None
                time.sleep(min(2 ** failures * 0.25, 5.0))

    def cancel(self, execution_id: str) -> None:
        """Cancel a run: the server kills its container and records it `cancelled`."""
        response = self._http.post(f"/v1/runs/{execution_id}/cancel")
        if response.status_code not in (202, 409):  # 409: it had already ended
            raise _error(response)

    def get(self, execution_id: str) -> dict[str, Any]:
        """The run's view (status, queue position, result once ended)."""
        view: dict[str, Any] = self._request("GET", f"/v1/runs/{execution_id}").json()
        return view

    async def arun(self, request: ExecutionRequest, *, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Async `run`; cancelling the awaiting task cancels the run on the server."""
        execution_id = await asyncio.to_thread(self.submit, request)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._follow, execution_id, on_output)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.to_thread(self.cancel, execution_id)
            raise

    async def astream(self, request: ExecutionRequest) -> AsyncIterator[RunEvent]:
        """Async `stream`: events as they happen (read on a worker thread)."""
        execution_id = await asyncio.to_thread(self.submit, request)
        iterator = self.events(execution_id)
        sentinel = object()
        while True:
            ev = await asyncio.to_thread(next, iterator, sentinel)
            if ev is sentinel:
                return
            yield ev  # type: ignore[misc]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _follow(self, execution_id: str, on_output: OutputCallback | None) -> ExecutionResult:
        for ev in self.events(execution_id):
            if ev.type in ("stdout", "stderr") and on_output is not None:
                on_output(ev.type, ev.text)
            if ev.type == "finished" and ev.result is not None:
                return ev.result
        view = self.get(execution_id)
        if view.get("result"):
            return ExecutionResult.model_validate(view["result"])
        raise ServiceError(f"run {execution_id} ended without a result on the server ({view.get('status')}); "
                           f"see its audit record", code="no-result")

    def _ended(self, execution_id: str) -> bool:
        return self.get(execution_id).get("status") not in ("queued", "running")

    def _last_event(self, execution_id: str) -> int:
        return int(self.get(execution_id).get("last_event_id") or 0)

    def _request(self, method: str, path: str, *, json: Any = None, key: str | None = None) -> Any:
        """Send, retrying transport errors and 429/502-504 (Retry-After honoured) with the same key."""
        httpx, _ = _imports()
        headers = {"Idempotency-Key": f'"{key}"'} if key else {}
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, json=json, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ServiceError(f"cannot reach scoperun serve at {self.url} ({exc}); is it running?") from None
                time.sleep(min(2 ** attempt * 0.25, 5.0))
                continue
            retryable = response.status_code in _RETRY_STATUS or (response.status_code == 409 and key and
                                                                   response.headers.get("Retry-After"))
            if retryable and attempt < self.retries:
                time.sleep(self._retry_wait(response, attempt))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response
        raise AssertionError("unreachable")

    def _retry_wait(self, response: Any, attempt: int) -> float:
        value = response.headers.get("Retry-After", "")
        wait = float(value) if value.replace(".", "", 1).isdigit() else min(2 ** attempt * 0.25, 5.0)
        return min(wait, self.max_retry_wait)
