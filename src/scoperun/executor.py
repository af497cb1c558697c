"""The public door to runs: `Executor` runs requests through the stages in `scoperun.pipeline`.

`Executor` is thread-safe; at most `max_concurrent` containers run at once and the other
callers wait their turn (the wait is reported as `durations.queue_wait`). Output can be followed
live (`run(..., on_output=)`, `stream`), and any run can be cancelled from another thread
(`cancel`): its container is killed at once and the record ends `cancelled`, saying by whom.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from scoperun import pipeline
from scoperun.config import Settings, load_settings
from scoperun.engine.base import Backend, RunHandle, RunOutcome
from scoperun.errors import AuditError, EngineError, ScopeError
from scoperun.live import LiveOutput, OutputCallback
from scoperun.models import ExecutionRequest, ExecutionResult, RunEvent
from scoperun.pipeline import FixedProgram, Prepared, Refused, RunContext, new_execution_id
from scoperun.scope import Workspace

__all__ = ["Executor", "FixedProgram", "new_execution_id"]


class Executor:
    """Runs `ExecutionRequest`s on the configured workspace and engine."""

    def __init__(self, settings: Settings | None = None, *, backend: Backend | None = None) -> None:
        self.settings = settings or load_settings()
        self._backend = backend
        self._backend_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.settings.max_concurrent)
        # Async callers get their own threads so waiting for a slot never blocks an event loop.
        self._async_pool: ThreadPoolExecutor | None = None
        # Cancellation: the handles of started runs, and who asked to cancel which run.
        self._live_lock = threading.Lock()
        self._handles: dict[str, RunHandle] = {}
        self._cancels: dict[str, str] = {}

    # -- public API ---------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The engine backend, made on first use (so importing scoperun needs no engine)."""
        with self._backend_lock:
            if self._backend is None:
                if self.settings.backend == "swarm":
                    from scoperun.engine.swarm import SwarmBackend

                    self._backend = SwarmBackend(self.settings.docker_host)
                else:
                    from scoperun.engine.docker import DockerBackend

                    self._backend = DockerBackend(self.settings.docker_host, pool=self._pool_options())
            return self._backend

    @property
    def workspace(self) -> Workspace:
        """The workspace, resolved now (raises WorkspaceError when unusable)."""
        return Workspace.from_settings(self.settings)

    def run(self, request: ExecutionRequest, *, on_output: OutputCallback | None = None,
            execution_id: str | None = None) -> ExecutionResult:
        """Run one request to the end and return its result; refusals are results too.

        `on_output(stream, text)` gets the output as it is printed ("stdout" or "stderr", redacted
        text, whole lines), from a worker thread. Raises WorkspaceError when there is no workspace
        and AuditError when the run cannot be audited: in both cases nothing ran.
        """
        return self._execute(self._context(request, execution_id=execution_id), on_output)

    async def arun(self, request: ExecutionRequest, *, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Async `run` on a worker thread; cancelling the awaiting task cancels the run (container killed)."""
        return await self._arun(functools.partial(self.run, request, on_output=on_output))

    async def stream(self, request: ExecutionRequest) -> AsyncIterator[RunEvent]:
        """Run `request`, yielding its output as it is printed, then a `finished` event with the result.

        Leaving the loop early (break, or the consumer's task cancelled) cancels the run.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()

        def on_output(stream: str, text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, RunEvent(type=stream, text=text))

        task = asyncio.ensure_future(self.arun(request, on_output=on_output))
        # Queued after every output event the worker thread sent: the end comes last.
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
            yield RunEvent(type="finished", result=task.result())
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def cancel(self, execution_id: str, *, by: str) -> bool:
        """Cancel a run of this executor: its container is killed now (or it never starts), and its
        record ends `cancelled`, naming `by`. True when the run was running here."""
        with self._live_lock:
            self._cancels[execution_id] = by
            handle = self._handles.get(execution_id)
        if handle is not None:
            handle.kill()
        return handle is not None

    def run_code(self, code: str, *, case: str, script_name: str | None = None,
                 on_output: OutputCallback | None = None, execution_id: str | None = None,
                 **fields: Any) -> ExecutionResult:
        """Write `code` to the temp scripts folder under a unique name, then run it.

        `script_name` picks the suffix (.py or .sh) and a readable stem; the file is always
        `<execution_id>_<stem><suffix>` so runs never overwrite each other's scripts.
        """
        execution_id = execution_id or new_execution_id()
        name = _temp_script_name(execution_id, script_name or "script.py")
        workspace = self.workspace
        try:
            rel = workspace.write_temp_script(name, code)
        except ScopeError as exc:
            request = ExecutionRequest(script=f"{self.settings.temp_scripts_dir}/{name}", case=case, **fields)
            return pipeline.refuse(self._context(request, execution_id=execution_id), Refused(exc))
        request = ExecutionRequest(script=rel, case=case, **fields)
        return self._execute(self._context(request, execution_id=execution_id), on_output)

    async def arun_code(self, code: str, *, case: str, script_name: str | None = None,
                        on_output: OutputCallback | None = None, **fields: Any) -> ExecutionResult:
        """Async `run_code`; cancelling the awaiting task cancels the run."""
        return await self._arun(functools.partial(self.run_code, code, case=case, script_name=script_name,
                                                  on_output=on_output, **fields))

    def run_program(self, request: ExecutionRequest, program: FixedProgram, *,
                    execution_id: str | None = None) -> ExecutionResult:
        """Run `program` (shipped in its image) on `request.case`, audited like any run.

        `request.script` is only a label for results and audit records.
        """
        return self._execute(self._context(request, execution_id=execution_id, program=program))

    def _pool_options(self) -> Any:
        """Warm-pool options from the settings (None: every run starts a fresh container)."""
        st = self.settings
        if not st.pool or st.pool_size <= 0:
            return None
        import secrets

        from scoperun.audit.state import state_dir
        from scoperun.engine.pool import PoolOptions

        root = state_dir(st) / "pool" / f"{os.getpid()}-{secrets.token_hex(4)}"
        return PoolOptions(size=st.pool_size, idle=st.pool_idle, root=root, slots=st.pool_slots)

    # -- the pipeline ---------------------------------------------------------------------------

    def _context(self, request: ExecutionRequest, *, execution_id: str | None = None,
                 program: FixedProgram | None = None) -> RunContext:
        # WorkspaceError and AuditError propagate: without a workspace nothing can be audited.
        return RunContext.open(self.settings, request, execution_id=execution_id, program=program)

    def _execute(self, ctx: RunContext, on_output: OutputCallback | None = None) -> ExecutionResult:
        """prepare -> (a slot) -> begin -> start -> wait -> finish; see scoperun.pipeline."""
        run_id = ctx.execution_id
        try:
            cancelled_by = self._cancelled(run_id)
            if cancelled_by is not None:  # cancelled while it waited to be started
                return pipeline.cancelled_before_start(ctx, cancelled_by)
            prepared = pipeline.prepare(ctx)
            if isinstance(prepared, Refused):
                return pipeline.refuse(ctx, prepared)
            live = LiveOutput(on_output, ctx.redactor) if on_output is not None else None
            if live is not None:
                prepared = dataclasses.replace(prepared, spec=dataclasses.replace(prepared.spec, on_output=live.feed))
            with self._slot() as slot:
                queue_wait = slot.queue_wait
                outcome = self._start_and_wait(ctx, prepared, queue_wait)
                if not isinstance(outcome, RunOutcome):
                    return outcome  # the engine failed: recorded as an error
                slot.hold_until(outcome.removal)
            if live is not None:
                live.flush()
            try:
                return pipeline.finish(ctx, prepared, outcome, queue_wait, cancelled_by=self._cancelled(run_id))
            finally:
                outcome.result_returned()  # e.g. the pool's replacement, kept off the run's path until now
        finally:
            with self._live_lock:
                self._cancels.pop(run_id, None)
                self._handles.pop(run_id, None)

    def _start_and_wait(self, ctx: RunContext, prepared: Prepared, queue_wait: float) -> RunOutcome | ExecutionResult:
        handle: RunHandle | None = None
        try:
            pipeline.begin(ctx, prepared)  # AuditError: nothing runs
            handle = pipeline.start(prepared, self.backend)
            with self._live_lock:
                self._handles[ctx.execution_id] = handle
                cancelled = ctx.execution_id in self._cancels
            if cancelled:  # cancelled between the slot and the start: end it now
                handle.kill()
            return pipeline.wait(handle)
        except AuditError:
            raise  # the 'running' record could not be written: nothing ran, nothing to finish
        except EngineError as exc:
            return pipeline.finish_error(ctx, prepared, str(exc), queue_wait)
        except BaseException as exc:
            if handle is not None:
                _end_quietly(handle)  # e.g. interrupted before `wait` took charge of the container
            pipeline.finish_error(ctx, prepared, f"scoperun was interrupted ({type(exc).__name__}); the "
                                  f"container was removed", queue_wait)
            try:  # so the CLI can say which run Ctrl-C stopped
                exc.scoperun_execution_id = ctx.execution_id  # type: ignore[attr-defined]
            except AttributeError:
                pass
            raise

    def _cancelled(self, execution_id: str) -> str | None:
        with self._live_lock:
            return self._cancels.get(execution_id)

    async def _arun(self, call: functools.partial[ExecutionResult]) -> ExecutionResult:
        """Run `call` on a worker thread; if the awaiting task is cancelled, cancel the run and wait
        (bounded) for its record before letting the cancellation through."""
        if self._async_pool is None:
            self._async_pool = ThreadPoolExecutor(
                max_workers=max(32, 4 * self.settings.max_concurrent), thread_name_prefix="scoperun-async"
            )
        execution_id = call.keywords.get("execution_id") or new_execution_id()
        call = functools.partial(call, execution_id=execution_id)
        future = asyncio.get_running_loop().run_in_executor(self._async_pool, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.cancel(execution_id, by="the caller (its asyncio task was cancelled)")
            await asyncio.wait([future], timeout=60)
            raise

    @contextmanager
    def _slot(self) -> Iterator[_Slot]:
        """Hold one of the `max_concurrent` run slots (and say how long the caller waited for it)."""
        waiting_since = time.monotonic()
        self._slots.acquire()
        slot = _Slot(time.monotonic() - waiting_since)
        try:
            yield slot
        finally:
            if slot.removal is None or slot.removal.done():
                self._slots.release()
            else:  # the result is back, the container not yet gone: its slot frees when it is
                slot.removal.add_done_callback(lambda _: self._slots.release())

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait for background engine work (removals, warm-pool replacements); False if still busy.

        For benchmarks and tests that must not time one run with another's clean-up.
        """
        settle = getattr(self._backend, "settle", None)
        return True if settle is None else bool(settle(timeout))

    def close(self) -> None:
        """Wait for background clean-up (container removal) and release the engine."""
        if self._backend is not None:
            self._backend.close()
        if self._async_pool is not None:
            self._async_pool.shutdown(wait=True)
            self._async_pool = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _temp_script_name(execution_id: str, script_name: str) -> str:
    base = os.path.basename(script_name.replace("\\", "/")) or "script.py"
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, "py"
    safe_stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "script"
    safe_suffix = "".join(c for c in suffix if c.isalnum())[:8] or "py"
    return f"{execution_id}_{safe_stem}.{safe_suffix}"


@dataclasses.dataclass
class _Slot:
    """One held run slot: how long it took to get, and a container removal that keeps it held."""

    queue_wait: float
    removal: Future[object] | None = None

    def hold_until(self, removal: Future[object] | None) -> None:
        """Keep the slot until `removal` (the run's container going away in the background) ends."""
        self.removal = removal


def _end_quietly(handle: RunHandle) -> None:
    """Kill a started run and let its handle remove the container (once `wait` has, only a kill of nothing)."""
    try:
        handle.kill()
        handle.wait()
    except Exception:  # the engine may be gone too; gc removes what is left (its deadline label)
        pass
