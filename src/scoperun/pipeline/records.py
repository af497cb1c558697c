"""The run's audit record: the result as known at each stage, written through the one audit log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from scoperun.audit.log import record_from_result
from scoperun.changeset import ChangeSet
from scoperun.errors import AuditError
from scoperun.models import Durations, ExecutionResult, Hazard, OutputCapture, Status
from scoperun.pipeline.context import RunContext, ScriptFacts, _now

if TYPE_CHECKING:
    from scoperun.changes.tracker import CaseTracker
    from scoperun.pipeline.preparation import Prepared

__all__ = ["alongside", "write_record"]

T = TypeVar("T")
_io_pool: ThreadPoolExecutor | None = None
_io_lock = threading.Lock()


def alongside(fn: Callable[..., T], *args: object) -> Future[T]:
    """Run `fn(*args)` on a helper thread while the caller goes on (audit writes wait on the disk's
    fsync, which lets the caller's own work run meanwhile); the caller must take its `result()`."""
    global _io_pool
    with _io_lock:
        if _io_pool is None:
            _io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="scoperun-audit-io")
    return _io_pool.submit(fn, *args)


def _result(ctx: RunContext, facts: ScriptFacts, status: Status, *, message: str, finished: bool = False,
            queue_wait: float = 0.0, exit_code: int | None = None, stdout: OutputCapture | None = None,
            stderr: OutputCapture | None = None, durations: Durations | None = None, image_id: str | None = None,
            node: str | None = None, changes: ChangeSet | None = None, hazards: list[Hazard] | None = None) -> ExecutionResult:
    durations = durations or Durations(queue_wait=queue_wait)
    if finished:
        durations.total = time.monotonic() - ctx.t0
    return ExecutionResult(
        execution_id=ctx.execution_id,
        status=status,
        exit_code=exit_code,
        message=ctx.redactor.redact(message),
        script=ctx.request.script,
        case=ctx.request.case,
        args=ctx.redactor.redact_list(ctx.request.args),
        working_dir=facts.working_dir,
        stdout=stdout or OutputCapture(),
        stderr=stderr or OutputCapture(),
        started_at=ctx.started_at,
        finished_at=_now() if finished else ctx.started_at,
        durations=durations,
        image=ctx.image,
        image_id=image_id,
        node=node,
        limits=ctx.limits,
        network=ctx.network,
        read_only=ctx.write_mode == "read-only",
        write_mode=ctx.write_mode,
        changes=changes,
        requested_by=ctx.request.requested_by,
        findings=facts.findings,
        hazards=[ctx.redactor.redact_model(h) for h in hazards or []],  # file names can carry a secret too
        audit_record=str(Path(ctx.settings.audit_dir) / f"{ctx.execution_id}.json"),
    )


def write_record(ctx: RunContext, facts: ScriptFacts, result: ExecutionResult, tracker: CaseTracker | None) -> None:
    """Write `result` as the run's audit record (AuditError when it cannot be written)."""
    env_names = sorted(set(ctx.request.env) | set(ctx.secrets))
    record = record_from_result(result, script_sha256=facts.script_sha256, env_names=env_names)
    if tracker is not None and tracker.events:
        record["events"] = ctx.redactor.redact_data(list(tracker.events))  # details name paths
    ctx.audit.write(record)


def _write_final(ctx: RunContext, prepared: Prepared, result: ExecutionResult) -> ExecutionResult:
    """Write the terminal record; if the audit trail refuses it, return a result that says so."""
    try:
        write_record(ctx, prepared.facts, result, prepared.tracker)
    except AuditError as exc:
        logging.getLogger(__name__).error("final audit record of %s not written: %s", ctx.execution_id, exc)
        applied = result.changes is not None and result.changes.status.value == "applied"
        fate = ("its changes were applied (the decision is in the audit trail)" if applied else
                "nothing was applied to the case")
        return result.model_copy(update={"status": Status.ERROR, "message": ctx.redactor.redact(
            f"the run ended ({result.status.value}: {result.message}) but its final audit record could not be "
            f"written ({exc}); {fate}. Fix the audit folder, then see `scoperun audit verify`.")})
    return result
