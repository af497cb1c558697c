"""The stages between `prepare` and `finish`: `begin` (the 'running' record), `start` (the container), `wait`."""

from __future__ import annotations

from scoperun.engine.base import Backend, RunHandle, RunOutcome
from scoperun.models import Status
from scoperun.pipeline.context import RunContext
from scoperun.pipeline.preparation import Prepared
from scoperun.pipeline.records import _result, write_record

__all__ = ["begin", "start", "wait"]


def begin(ctx: RunContext, prepared: Prepared) -> None:
    """Write the 'running' record; raises AuditError, and then nothing runs."""
    running = _result(ctx, prepared.facts, Status.RUNNING, message="running")
    write_record(ctx, prepared.facts, running, prepared.tracker)


def start(prepared: Prepared, backend: Backend) -> RunHandle:
    """Note what the case holds, then have the backend start the container (EngineError: it did not)."""
    prepared.tracker.start()  # the case's listing, taken once the run has its slot
    return backend.start(prepared.spec)


def wait(handle: RunHandle) -> RunOutcome:
    """Collect the run's output and exit; the container is gone when this returns."""
    return handle.wait()
