"""The endings of a run: `refuse` and `cancelled_before_start` (nothing ran), `finish` and `finish_error`.

`finish` judges the outcome, settles the changes, scans the case for hazards and writes the final record.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from scoperun.audit.log import keep_full_output
from scoperun.changeset import ChangeSet
from scoperun.engine.base import RunOutcome
from scoperun.errors import AuditError
from scoperun.models import Durations, ExecutionResult, Hazard, OutputCapture, Status
from scoperun.pipeline.context import RunContext, ScriptFacts, _now
from scoperun.pipeline.preparation import Prepared, Refused
from scoperun.pipeline.records import _result, _write_final, alongside, write_record
from scoperun.safety.redaction import Redactor

if TYPE_CHECKING:
    from scoperun.changes.tracker import WalkObserver
    from scoperun.safety.hazards import HazardScanner

__all__ = ["cancelled_before_start", "finish", "finish_error", "refuse"]

_EXDEV_TEXT = "Invalid cross-device link"


def refuse(ctx: RunContext, refused: Refused) -> ExecutionResult:
    """Record and return a `rejected` result: nothing ran."""
    result = _result(ctx, refused.facts, Status.REJECTED, message=str(refused.error), finished=True)
    write_record(ctx, refused.facts, result, None)
    return result


def finish_error(ctx: RunContext, prepared: Prepared, message: str, queue_wait: float) -> ExecutionResult:
    """The engine failed (or scoperun was interrupted): settle the changes, record an `error`."""
    message = _explain_start_failure(ctx, prepared, message)
    try:
        changes, _ = _settle_changes(ctx, prepared, Status.ERROR)
        prepared.tracker.tidy()
    except Exception as exc:
        changes, message = None, f"{message}; the changes could not be settled ({type(exc).__name__}: {exc})"
    result = _result(ctx, prepared.facts, Status.ERROR, message=message, finished=True, queue_wait=queue_wait,
                     changes=changes)
    return _write_final(ctx, prepared, result)


def cancelled_before_start(ctx: RunContext, by: str) -> ExecutionResult:
    """Record and return a `cancelled` result for a run cancelled before it started: nothing ran."""
    result = _result(ctx, ScriptFacts(), Status.CANCELLED, message=f"cancelled by {by} before it started; nothing ran",
                     finished=True)
    write_record(ctx, ScriptFacts(), result, None)
    return result


def finish(ctx: RunContext, prepared: Prepared, outcome: RunOutcome, queue_wait: float, *,
           cancelled_by: str | None = None) -> ExecutionResult:
    """Judge the outcome, settle the changes, scan for hazards, keep the output; write the final record.

    `cancelled_by`: who cancelled the run (its container was killed); the status is then `cancelled`.
    Never raises for a host-side failure after the container ran: whatever goes wrong ends in a
    terminal record (or, when even that cannot be written, in a result that says so).
    """
    try:
        return _finish(ctx, prepared, outcome, queue_wait, cancelled_by=cancelled_by)
    except AuditError:
        raise  # _write_final already turned a record failure into a result; this is from elsewhere
    except Exception as exc:
        import logging

        logging.getLogger(__name__).exception("post-run work of %s failed", ctx.execution_id)
        status, _ = _judge(ctx, outcome)
        message = (f"the script ended ({status.value}), then scoperun failed on the host ({type(exc).__name__}: "
                   f"{exc}); whatever the run staged is kept for review: `scoperun changes {ctx.execution_id}`")
        stdout, stderr = outcome.stdout.capture(ctx.redactor), outcome.stderr.capture(ctx.redactor)
        result = _result(ctx, prepared.facts, Status.ERROR, message=message, finished=True,
                         exit_code=outcome.exit_code, stdout=stdout, stderr=stderr, queue_wait=queue_wait,
                         image_id=outcome.image_id, node=outcome.node)
        return _write_final(ctx, prepared, result)


def _finish(ctx: RunContext, prepared: Prepared, outcome: RunOutcome, queue_wait: float, *,
            cancelled_by: str | None = None) -> ExecutionResult:
    t_finish = time.monotonic()
    status, message = _judge(ctx, outcome)
    if outcome.error:
        message = _explain_start_failure(ctx, prepared, message)
    if cancelled_by is not None and status is not Status.SUCCEEDED:
        status, message = Status.CANCELLED, f"cancelled by {cancelled_by}; the container was killed"
    from scoperun.ops import read_stop_marker

    stop = read_stop_marker(ctx.audit.directory, ctx.execution_id)  # an operator's `scoperun stop`
    if stop is not None and status not in (Status.SUCCEEDED, Status.CANCELLED):
        status, message = Status.CANCELLED, f"stopped by an operator: {stop}"
    raw_out, raw_err = outcome.stdout.capture(None).text, outcome.stderr.capture(None).text
    redactor = ctx.redactor.for_streams(raw_out, raw_err)  # a secret split between the two streams
    stdout, stderr = outcome.stdout.capture(redactor), outcome.stderr.capture(redactor)
    # The full output is kept (written and fsynced) on a helper thread while the changes and hazards
    # are worked out here; the record that names the files is written after both.
    keeping = alongside(_keep_outputs, ctx, outcome, redactor)
    try:
        return _settle_and_record(ctx, prepared, outcome, queue_wait, t_finish, status, message, stop,
                                  stdout, stderr, keeping)
    finally:
        keeping.result()


def _keep_outputs(ctx: RunContext, outcome: RunOutcome, redactor: Redactor) -> tuple[str | None, str | None]:
    """Keep both streams' full output beside the record; the kept files' names (None: none kept)."""
    kept = [keep_full_output(ctx.audit, ctx.execution_id, name, buf, redactor)
            for name, buf in (("stdout", outcome.stdout), ("stderr", outcome.stderr))]
    return kept[0], kept[1]


def _settle_and_record(ctx: RunContext, prepared: Prepared, outcome: RunOutcome, queue_wait: float, t_finish: float,
                       status: Status, message: str, stop: str | None, stdout: OutputCapture, stderr: OutputCapture,
                       keeping: Future[tuple[str | None, str | None]]) -> ExecutionResult:
    # Staged runs apply first (the decision recorded before), so the scan sees what landed. A direct
    # run's listing after it is a walk of the whole case: the hazard scan reads the same walk.
    scanner = _direct_scanner(ctx, prepared)
    changes, full = _settle_changes(ctx, prepared, status, observer=scanner)
    # A staged run's empty staging folder is removed while the hazards are scanned and the record written.
    tidying = alongside(prepared.tracker.tidy) if ctx.write_mode == "staged" else None
    try:
        return _scan_and_record(ctx, prepared, outcome, queue_wait, t_finish, status, message, stop, stdout, stderr,
                                keeping, changes, full, scanner)
    finally:
        if tidying is not None:
            tidying.result()
        else:
            prepared.tracker.tidy()


def _scan_and_record(ctx: RunContext, prepared: Prepared, outcome: RunOutcome, queue_wait: float, t_finish: float,
                     status: Status, message: str, stop: str | None, stdout: OutputCapture, stderr: OutputCapture,
                     keeping: Future[tuple[str | None, str | None]], changes: ChangeSet | None,
                     full: ChangeSet | None, scanner: HazardScanner | None) -> ExecutionResult:
    if status is Status.FAILED and stop is None and ctx.program and ctx.program.explain_failure:
        message = ctx.program.explain_failure(outcome) or message  # reads what the run left
    # Hazards on paths this run changed are its own; the rest were there before (unknown: neither).
    changed: set[bytes] | None = {c.raw_path for c in full.entries} if full is not None else None
    if full is not None and ("incomplete" in full.note or "could not" in full.note):
        changed = None
    if ctx.write_mode == "read-only":
        changed = set()  # a read-only run cannot have left anything
    if scanner is not None and scanner.walked is not None:
        hazards = scanner.report(changed).as_list()
    else:  # no walk of the case served it (or that walk failed): a walk of its own
        hazards = _scan_hazards(ctx, prepared.case_dir, changed, deadline=t_finish + ctx.settings.post_run_budget)
    if full is not None:
        from scoperun.changes.tracker import setid_hazards

        hazards = [*setid_hazards(full), *hazards]
    message += _hazard_words(hazards)
    if changes is not None and changes.status.value in ("staged", "conflict"):
        message += f"; changes not applied ({changes.status.value}): {changes.note}"
    if status is Status.FAILED and ctx.write_mode == "staged" and _EXDEV_TEXT in stderr.text:
        # The staging overlay cannot rename a folder that existed before the run (EXDEV).
        message += ("; in a staged run an existing folder cannot be renamed in place: use shutil.move or "
                    "`mv` (they copy), or run with write_mode 'direct'")
    for cap, kept in zip((stdout, stderr), keeping.result(), strict=True):
        cap.full_output = str(Path(ctx.settings.audit_dir) / kept) if kept else None
    result = _result(
        ctx, prepared.facts, status, message=message, finished=True, exit_code=outcome.exit_code, stdout=stdout,
        stderr=stderr, durations=Durations(queue_wait=queue_wait, container_start=outcome.container_start,
                                           run=outcome.run),
        image_id=outcome.image_id, node=outcome.node, changes=changes, hazards=hazards,
    )
    if outcome.exit_code is not None:
        result.exit_code_source = "launcher" if outcome.exit_source == "launcher" else "engine"
    result.pooled = outcome.pooled
    return _write_final(ctx, prepared, result)


def _hazard_words(hazards: list[Hazard]) -> str:
    """The message's words on hazards: what this run introduced, apart from what was there before."""
    def kinds(items: list[Hazard]) -> str:
        return ", ".join(sorted({h.kind for h in items}))

    real = [h for h in hazards if not h.is_note and h.kind != "unscanned"]
    new = [h for h in real if h.introduced is not False]
    old = [h for h in real if h.introduced is False]
    words = ""
    if new:
        words += f"; the run left hazards in the case ({kinds(new)}): see `hazards`"
    if old:
        words += f"; hazards already in the case before this run ({kinds(old)}) are listed in `hazards`"
    if any(h.kind in ("unscanned", "scan-failed") for h in hazards):
        words += "; part of the case could not be checked for hazards: see `hazards`"
    return words


def _explain_start_failure(ctx: RunContext, prepared: Prepared, message: str) -> str:
    """Say what happened when the container could not start because the case changed under it."""
    sub = ctx.request.working_dir
    if not sub or sub.strip() in ("", "."):
        return message
    try:
        st = os.lstat(prepared.case_dir / sub)
        if stat.S_ISDIR(st.st_mode):
            return message
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "something other than a folder"
    except OSError:
        what = "removed"
    return (f"the working folder {sub!r} was replaced ({what}) while the run was starting; the script never ran "
            f"there. Nothing is wrong with the engine: run it again on a plain folder ({message})")


def _judge(ctx: RunContext, outcome: RunOutcome) -> tuple[Status, str]:
    """The status and message the engine's report gives, before operators, changes and hazards."""
    if outcome.error:
        return Status.ERROR, outcome.error
    if outcome.timed_out:
        return Status.TIMED_OUT, f"timed out after {ctx.limits.timeout:g} s; the container was killed"
    if outcome.oom_killed:
        return Status.OOM_KILLED, (f"killed: out of memory (limit {ctx.limits.memory}); use less memory or raise "
                                   f"the limit")
    if outcome.exit_code == 0:
        return Status.SUCCEEDED, "succeeded"
    return Status.FAILED, f"the script exited with code {outcome.exit_code}"


def _settle_changes(ctx: RunContext, prepared: Prepared, status: Status,
                    observer: WalkObserver | None = None) -> tuple[ChangeSet | None, ChangeSet | None]:
    """Apply or keep the run's changes by policy: (redacted copy capped for the record, full change set).

    The decision to apply is written to the audit trail (a 'running' record with an event)
    before anything reaches the case; if that write fails, nothing is applied.
    """
    tracker = prepared.tracker

    def decide(cs: ChangeSet) -> None:
        event = {"at": _now().isoformat(), "event": "apply_decided", "by": ctx.request.requested_by or "scoperun",
                 "detail": ctx.redactor.redact(f"the run ended {status.value}; applying: {cs.summary}")}
        tracker.events.append(event)
        pending = _result(ctx, prepared.facts, Status.RUNNING, message="the run ended; applying its changes")
        try:
            write_record(ctx, prepared.facts, pending, tracker)
        except BaseException:
            tracker.events.remove(event)
            raise

    cs = tracker.finish(status, decide, observer)
    if cs is None:
        return None, None
    return ctx.redactor.redact_changes(cs.capped(ctx.settings.changes_record_cap)), cs


def _direct_scanner(ctx: RunContext, prepared: Prepared) -> HazardScanner | None:
    """A hazard scan fed by the direct tracker's walk of the case after the run (None: not direct)."""
    if ctx.write_mode != "direct":
        return None
    from scoperun.safety.hazards import HazardScanner

    return HazardScanner(prepared.case_dir, limit=ctx.settings.hazard_scan_limit)


def _scan_hazards(ctx: RunContext, case_dir: Path, changed: set[bytes] | None, *,
                  deadline: float | None = None) -> list[Hazard]:
    """After the container: report (and defuse) what the run left in the case; see hazards.py."""
    from scoperun.safety.hazards import scan_case

    try:
        return scan_case(case_dir, limit=ctx.settings.hazard_scan_limit, changed=changed, deadline=deadline).as_list()
    except OSError as exc:  # the case vanished or became unreadable: say so, never crash the record
        return [Hazard.note("scan-failed", f"hazard scan failed: {exc}")]

