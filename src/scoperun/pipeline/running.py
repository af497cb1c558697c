"""The stages between `prepare` and `finish`: `begin` (the 'running' record), `start` (the container), `wait`."""

from __future__ import annotations

from scoperun.engine.base import Backend, RunHandle, RunOutcome
from scoperun.models import Status
from scoperun.pipeline.context import RunContext
from scoperun.pipeline.preparation import Prepared
from scoperun.pipeline.records import _result, alongside, write_record

__all__ = ["begin", "start", "wait"]


def begin(ctx: RunContext, prepared: Prepared) -> None:
    """Write the 'running' record while noting what the case holds (once the run has its slot).

    Raises AuditError when the record cannot be written (then nothing runs), else whatever the
    case's listing raised.
    """
    running = _result(ctx, prepared.facts, Status.RUNNING, message="running")
    if ctx.write_mode == "read-only":  # no listing to overlap: a helper thread would only add its hand-offs
        write_record(ctx, prepared.facts, running, prepared.tracker)
        prepared.tracker.start()
        return
    # The record's fsync and the listing's walk overlap; both end before anything can start.
    writing = alongside(write_record, ctx, prepared.facts, running, prepared.tracker)
    try:
        prepared.tracker.start()
    finally:
        writing.result()


def start(prepared: Prepared, backend: Backend) -> RunHandle:
    """Have the backend start the container (EngineError: it did not); `begin` came first."""
    return backend.start(prepared.spec)


def wait(handle: RunHandle) -> RunOutcome:
    """Collect the run's output and exit; the container is gone when this returns."""
    return handle.wait()
