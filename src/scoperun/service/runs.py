"""/v1/runs: start runs through the one queue, follow them live, cancel them, list them.

    POST   /v1/runs                 a run (ExecutionRequest) or run-code ({"code": ...}) -> 202, or the
                                    result with ?wait=true; Idempotency-Key makes retries safe
    GET    /v1/runs/{id}            where the run is (queued, running) or its result
    GET    /v1/runs                 runs newest first, paged with a cursor: this server's queued and
                                    starting runs and the audit index's (see runlist.py)
    GET    /v1/runs/{id}/events     server-sent events; resume with Last-Event-ID or ?after=
    GET    /v1/runs/{id}/output     the output so far as plain text (?stream=stdout|stderr&offset=)
    POST   /v1/runs/{id}/cancel     (and DELETE /v1/runs/{id}) kill it; recorded `cancelled`, by whom
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from scoperun.errors import AuditError, ConfigError
from scoperun.executor import new_execution_id
from scoperun.models import ExecutionRequest, ExecutionResult, Status, is_execution_id
from scoperun.service.deps import Reader, Runner, Service, ServiceDep
from scoperun.service.events import EventLog, SSEResponse, read_events
from scoperun.service.idempotency import fingerprint, parse_key
from scoperun.service.problems import Problem
from scoperun.service.queue import Ticket
from scoperun.service.runlist import Pending, RunList
from scoperun.service.runlist import list_runs as list_runs_page
from scoperun.service.tokens import Principal

__all__ = ["ActiveRun", "RunCodeRequest", "RunList", "RunManager", "RunView", "install", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["runs"])


class RunCodeRequest(ExecutionRequest):
    """Code to write to the temp scripts folder and run (`script` is set by the server)."""

    script: str = Field("", description="Leave empty: the server writes `code` under temp_scripts_dir.")
    code: str = Field(min_length=1, description="The script's source.")
    script_name: str = Field("script.py", description="Name hint; .py or .sh decides the interpreter.")


class RunView(BaseModel):
    """A run as the API shows it: where it is, and its result once it ended."""

    execution_id: str
    status: str = Field(description="queued, running, or a final status (succeeded, failed, cancelled, ...).")
    case: str = ""
    script: str = ""
    requested_by: str | None = None
    queue_position: int | None = Field(None, description="Runs ahead of it while queued (0: next).")
    cancel_requested_by: str | None = None
    last_event_id: int = 0
    result: ExecutionResult | None = None
    record: dict[str, Any] | None = Field(None, description="The audit record when the result is not known here.")
    links: dict[str, str] = Field(default_factory=dict)


@dataclass(eq=False)
class ActiveRun:
    """A run this server accepted and has not finished."""

    execution_id: str
    owner: str
    body: ExecutionRequest
    log: EventLog
    ticket: Ticket
    done: asyncio.Future[ExecutionResult]
    status: str = "queued"
    position: int | None = None  # its place in line as last announced by a `queued` event
    cancel_by: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    accepted_at: float = field(default_factory=time.time)  # wall clock: its place in run listings
    granted_at: float | None = None  # wall clock when it got its slot
    task: asyncio.Task[None] | None = None

    def view(self, queue_position: int | None) -> RunView:
        return RunView(execution_id=self.execution_id, status=self.status, case=self.body.case,
                       script=self.body.script or "(code)", requested_by=self.body.requested_by,
                       queue_position=queue_position, cancel_requested_by=self.cancel_by,
                       last_event_id=self.log.last_id, links=_links(self.execution_id))


def _links(execution_id: str) -> dict[str, str]:
    base = f"/v1/runs/{execution_id}"
    return {"self": base, "events": f"{base}/events", "output": f"{base}/output", "cancel": f"{base}/cancel"}


def _check_id(execution_id: str) -> str:
    if not is_execution_id(execution_id):
        raise Problem(404, "not-found", f"no run {execution_id!r}")
    return execution_id


class RunManager:
    """The server's runs: submit through the queue, drive each on a worker thread, cancel."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.active: dict[str, ActiveRun] = {}
        self.events_dir = service.state_dir / "events"
        # Slots are bounded by the queue; extra threads serve runs cancelled while queued.
        self.pool = ThreadPoolExecutor(max_workers=service.settings.max_concurrent + 16,
                                       thread_name_prefix="scoperun-serve")
        # Kills get threads of their own, not the default pool that listings and file reads share:
        # a busy server still kills at once.
        self.killer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="scoperun-cancel")

    def events_path(self, execution_id: str) -> Path:
        return self.events_dir / f"{_check_id(execution_id)}.jsonl"

    def submit(self, body: ExecutionRequest, caller: Principal) -> ActiveRun:
        """Queue a run (a 429 problem when the queue is full) and start driving it."""
        execution_id = new_execution_id()
        ticket = self.service.queue.enter(caller.name, execution_id)
        loop = asyncio.get_running_loop()
        run = ActiveRun(execution_id, caller.name, body, EventLog(self.events_path(execution_id)), ticket,
                        loop.create_future())
        self.active[execution_id] = run
        if ticket.granted.done():  # a slot at once: position 0, then `started`
            run.position = 0
            run.log.append("queued", {"position": 0, "execution_id": execution_id})
        self._announce()  # its first `queued` event, and the new places of any run it went ahead of
        run.task = asyncio.ensure_future(self._drive(run))
        return run

    def _announce(self) -> None:
        """A numbered `queued` event for every waiting run whose place in line changed.

        Called after every change to the queue (a run enters, starts, or is cancelled), so each
        waiting run's stream shows its position as the queue will actually serve it.
        """
        for position, ticket in enumerate(self.service.queue.order()):
            run = self.active.get(ticket.execution_id)
            if run is not None and run.cancel_by is None and run.position != position:
                run.position = position
                run.log.append("queued", {"position": position, "execution_id": run.execution_id})

    async def _drive(self, run: ActiveRun) -> None:
        loop = asyncio.get_running_loop()
        queue, executor = self.service.queue, self.service.executor
        began = time.monotonic()
        result: ExecutionResult | None = None
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(run.ticket.granted)  # cancelled while queued: run below records it
            run.granted_at = time.time()  # before its record's start: a listing's key only grows
            if run.cancel_by is None:
                run.status = "running"
                run.log.append("started", {"queue_wait": round(time.monotonic() - run.submitted, 3)})
            began = time.monotonic()

            def on_output(stream: str, text: str) -> None:
                run.log.append(stream, {"text": text})

            call = _call(executor, run, on_output)
            result = await loop.run_in_executor(self.pool, call)
        except Exception as exc:  # the run could not be audited or the workspace is gone: nothing ran
            log.warning("run %s failed before it started: %s", run.execution_id, exc)
            result = _failed_result(run, exc)
        finally:
            queue.leave(run.ticket, duration=time.monotonic() - began)
            self._announce()
            if result is not None:
                run.status = result.status.value
                if result.changes is not None:
                    run.log.append("changes", result.changes.model_dump(mode="json"))
                run.log.append("finished", result.model_dump(mode="json"))
                if not run.done.done():
                    run.done.set_result(result)
            elif not run.done.done():
                run.done.cancel()
            run.log.close()
            self.active.pop(run.execution_id, None)

    def cancel(self, run: ActiveRun, by: str) -> asyncio.Future[Any] | None:
        """Kill the run (or take it out of the queue); the executor records it `cancelled` by `by`.

        A running run's kill goes to the engine from a worker thread (a blocking API call, kept off
        the event loop): the future returned ends once it was sent. None: nothing left to wait for.
        """
        if run.cancel_by is not None:
            return None
        run.cancel_by = by
        run.log.append("cancelling", {"by": by})
        executor = self.service.executor
        if not run.ticket.granted.done():
            # Marked before it leaves the queue, so its drive task records it and never starts it.
            executor.cancel(run.execution_id, by=by)
            self.service.queue.leave(run.ticket)
            self._announce()
            return None
        kill = functools.partial(executor.cancel, run.execution_id, by=by)
        return asyncio.get_running_loop().run_in_executor(self.killer, kill)

    async def close(self) -> None:
        """Shutting down: cancel what runs (recorded `cancelled` by the server), wait for the records."""
        for run in list(self.active.values()):
            self.cancel(run, "scoperun serve (shutting down)")
        tasks = [r.task for r in self.active.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        self.pool.shutdown(wait=False)
        self.killer.shutdown(wait=False)


def _call(executor: Any, run: ActiveRun, on_output: Any) -> Any:
    body = run.body
    if isinstance(body, RunCodeRequest):
        fields = body.model_dump(exclude={"script", "code", "script_name"})
        return functools.partial(executor.run_code, body.code, script_name=body.script_name,
                                 execution_id=run.execution_id, on_output=on_output, **fields)
    return functools.partial(executor.run, body, execution_id=run.execution_id, on_output=on_output)


def _failed_result(run: ActiveRun, exc: Exception) -> ExecutionResult:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return ExecutionResult(execution_id=run.execution_id, status=Status.ERROR, script=run.body.script,
                           case=run.body.case, started_at=now, finished_at=now, requested_by=run.body.requested_by,
                           message=f"the run could not start: {exc}")


def _prune_events(folder: Path, days: float) -> None:
    """Event files of runs older than `days` go (the audit record and its output files stay)."""
    cutoff = time.time() - days * 86400
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return
    for path in entries:
        with contextlib.suppress(OSError):
            if path.suffix == ".jsonl" and path.lstat().st_mtime < cutoff:
                path.unlink()


def _manager(service: Service) -> RunManager:
    manager: RunManager = service.extras["runs"]
    return manager


def _requested_by(caller: Principal, given: str | None) -> str:
    """The audit's requested_by: the token's name, then what the caller said (agent, thread...)."""
    who = caller.name if not given else f"{caller.name}: {given}"
    return who[:200]


# -- endpoints ----------------------------------------------------------------------------------


@router.post("/v1/runs", status_code=202, response_model=RunView,
             summary="Start a run (a script, or code with run-code); 202, or the result with ?wait=true",
             responses={200: {"model": ExecutionResult}, 429: {"description": "queue full (Retry-After)"}})
async def create_run(
    request: Request, body: ExecutionRequest | RunCodeRequest, service: ServiceDep, caller: Runner,
    wait: Annotated[bool, Query(description="Answer with the result when the run ends.")] = False,
    idempotency_key: Annotated[str | None, Header(description="Retries with the same key never run twice.")] = None,
) -> Any:
    key = parse_key(idempotency_key)
    scope = f"{caller.name}\x00POST /v1/runs"
    if key is not None:
        digest = fingerprint(await request.body()) + ("+wait" if wait else "")
        replay = service.idempotency.begin(scope, key, digest)
        if replay is not None:
            return JSONResponse(replay.body, status_code=replay.status, headers=replay.headers)
    body = body.model_copy(update={"requested_by": _requested_by(caller, body.requested_by)})
    try:
        run = _manager(service).submit(body, caller)
    except BaseException:
        if key is not None:
            service.idempotency.release(scope, key)
        raise
    location = {"Location": f"/v1/runs/{run.execution_id}"}
    accepted = run.view(run.position).model_dump(mode="json")
    if not wait:
        if key is not None:
            service.idempotency.complete(scope, key, 202, accepted, location)
        return JSONResponse(accepted, status_code=202, headers=location)
    try:
        result = await asyncio.shield(run.done)
    except asyncio.CancelledError:
        if key is not None:  # the caller went away: a retry learns the run's id instead of running it again
            service.idempotency.complete(scope, key, 202, accepted, location)
        raise
    finished = result.model_dump(mode="json")
    if key is not None:
        service.idempotency.complete(scope, key, 200, finished, location)
    return JSONResponse(finished, status_code=200, headers=location)


def _finished_from_log(path: Path) -> tuple[ExecutionResult | None, int]:
    events = read_events(path)
    for ev in reversed(events):
        if ev.event == "finished":
            return ExecutionResult.model_validate(ev.data), events[-1].id
    return None, events[-1].id if events else 0


def _record(service: Service, execution_id: str) -> dict[str, Any] | None:
    from scoperun.audit.log import AuditLog

    audit = AuditLog(Path(service.settings.workspace).expanduser().resolve() / service.settings.audit_dir)
    try:
        return audit.view(execution_id)  # with the events logged after the run
    except AuditError:
        return None


@router.get("/v1/runs/{execution_id}", response_model=RunView, summary="A run: queued, running, or its result")
async def get_run(execution_id: str, service: ServiceDep, _: Reader) -> RunView:
    manager = _manager(service)
    run = manager.active.get(_check_id(execution_id))
    if run is not None:
        return run.view(run.position if run.status == "queued" else None)
    result, last = await asyncio.to_thread(_finished_from_log, manager.events_path(execution_id))
    if result is not None:
        return RunView(execution_id=execution_id, status=result.status.value, case=result.case, script=result.script,
                       requested_by=result.requested_by, last_event_id=last, result=result,
                       links=_links(execution_id))
    record = await asyncio.to_thread(_record, service, execution_id)
    if record is None:
        raise Problem(404, "not-found", f"no run {execution_id} (neither on this server nor in the audit trail)")
    return RunView(execution_id=execution_id, status=str(record.get("status")), case=str(record.get("case_name")),
                   script=str(record.get("script_path")), requested_by=record.get("requested_by"),
                   last_event_id=last, record=record, links=_links(execution_id))


@router.get("/v1/runs", response_model=RunList,
            summary="Runs newest first, queued and starting ones too (cursor paging)")
async def list_runs(
    service: ServiceDep, _: Reader, case: str | None = None, status: str | None = None,
    requested_by: str | None = None,
    since: Annotated[str | None, Query(description="Start time: ISO 8601, epoch seconds, or 1h / 7d ago.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50, cursor: str | None = None,
) -> RunList:
    from scoperun.audit.stats import parse_since

    try:  # epoch seconds as the parameter's description says, else a span or an ISO time
        since_epoch = float(since) if since and since.replace(".", "", 1).isdigit() else parse_since(since)
    except (ValueError, ConfigError) as exc:
        raise Problem(422, "invalid-request", str(exc)) from None
    pending = [Pending(r.execution_id, r.status, r.body.case, r.body.script or "(code)", r.body.requested_by,
                       r.granted_at if r.status == "running" and r.granted_at is not None else r.accepted_at,
                       r.position if r.status == "queued" else None)
               for r in _manager(service).active.values() if r.status in ("queued", "running")]
    return await asyncio.to_thread(list_runs_page, service, pending, case=case, status=status,
                                   requested_by=requested_by, since=since_epoch, limit=limit, cursor=cursor)


def _log_of(service: Service, execution_id: str) -> EventLog:
    manager = _manager(service)
    run = manager.active.get(_check_id(execution_id))
    if run is not None:
        return run.log
    path = manager.events_path(execution_id)
    if path.exists():
        return EventLog.open_existing(path)
    raise Problem(404, "not-found", f"run {execution_id} has no events on this server (it was not started through "
                  f"it); see GET /v1/runs/{execution_id}")


@router.get("/v1/runs/{execution_id}/events", summary="Server-sent events of a run (resume with Last-Event-ID)",
            response_class=SSEResponse, response_model=None, status_code=200,
            responses={200: {"content": {"text/event-stream": {}}}})
async def run_events(
    execution_id: str, service: ServiceDep, _: Reader,
    after: Annotated[int | None, Query(ge=0, description="Send only events after this id.")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> SSEResponse:
    start = after if after is not None else 0
    if last_event_id is not None and after is None:
        try:
            start = max(0, int(last_event_id))
        except ValueError:
            raise Problem(422, "invalid-request", "Last-Event-ID must be an event id (an integer)") from None
    event_log = _log_of(service, execution_id)
    counter = service.extras.setdefault("sse_open", [0])

    async def counted() -> Any:
        counter[0] += 1
        try:
            async for ev in event_log.subscribe(after=start):
                yield ev
        finally:
            counter[0] -= 1

    return SSEResponse(counted(), ping=service.ping_interval)


@router.get("/v1/runs/{execution_id}/output", response_class=PlainTextResponse,
            summary="A run's output so far as plain text (a fallback for clients without SSE)")
async def run_output(
    execution_id: str, service: ServiceDep, _: Reader, stream: Literal["stdout", "stderr"] = "stdout",
    offset: Annotated[int, Query(ge=0, description="Skip this many bytes (UTF-8) of the stream.")] = 0,
) -> PlainTextResponse:
    event_log = _log_of(service, execution_id)
    events = await asyncio.to_thread(read_events, event_log.path)
    data = "".join(ev.data.get("text", "") for ev in events if ev.event == stream).encode("utf-8")
    done = any(ev.event == "finished" for ev in events)
    return PlainTextResponse(data[offset:].decode("utf-8", "replace"), headers={
        "X-Next-Offset": str(len(data)), "X-Run-Finished": "true" if done else "false"})


async def _cancel(execution_id: str, service: Service, caller: Principal) -> JSONResponse:
    run = _manager(service).active.get(_check_id(execution_id))
    if run is None:
        view = await get_run(execution_id, service, caller)  # 404 when unknown
        raise Problem(409, "run-finished", f"run {execution_id} already ended ({view.status}); nothing to cancel",
                      run_status=view.status)
    if run.owner != caller.name and not caller.allows("admin"):
        raise Problem(403, "forbidden", f"run {execution_id} was started by {run.owner!r}; cancelling another "
                      f"caller's run needs the admin role", required_role="admin")
    kill = _manager(service).cancel(run, caller.name)
    if kill is not None:
        await kill  # answer once the engine was told to kill the container
    return JSONResponse(run.view(None).model_dump(mode="json") | {"status": "cancelling"}, status_code=202)


@router.post("/v1/runs/{execution_id}/cancel", status_code=202, summary="Cancel a run: its container is killed")
async def cancel_run(execution_id: str, service: ServiceDep, caller: Runner) -> JSONResponse:
    return await _cancel(execution_id, service, caller)


@router.delete("/v1/runs/{execution_id}", status_code=202, summary="The same as POST /v1/runs/{id}/cancel")
async def delete_run(execution_id: str, service: ServiceDep, caller: Runner) -> JSONResponse:
    return await _cancel(execution_id, service, caller)


def install(app: FastAPI, service: Service) -> None:
    """Add the runs router and its manager to the app."""
    manager = RunManager(service)
    service.extras["runs"] = manager
    service.extras["sse_clients"] = lambda: service.extras.get("sse_open", [0])[0]

    async def shutdown(_: Service) -> None:
        await manager.close()

    async def reconcile(_: Service) -> None:
        # Runs in flight when a previous server died: their records end `abandoned`, their
        # containers are removed; none is left `running`.
        from scoperun.ops import collect_garbage

        try:
            report = await asyncio.to_thread(collect_garbage, service.settings)
        except Exception as exc:  # the engine may be down: serve anyway; /readyz says so
            log.warning("reconciling runs left by a previous server failed: %s", exc)
            return
        await asyncio.to_thread(_prune_events, manager.events_dir, service.settings.staging_retention_days)
        if report.abandoned or report.containers_removed:
            log.warning("reconciled runs a previous server left: %d abandoned, %d containers removed",
                        len(report.abandoned), len(report.containers_removed))
        service.extras["reconciled"] = report

    service.extras.setdefault("startup", []).append(reconcile)
    service.extras.setdefault("shutdown", []).append(shutdown)
    app.include_router(router)
