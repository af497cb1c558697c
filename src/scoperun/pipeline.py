"""The stages of one run, each a function with a typed input and output.

    RunContext.open -> prepare -> (slot) begin -> start -> wait -> finish
                           \\-> Refused -> refuse

`prepare` checks the scope, scans the script and builds the container's spec; nothing has run and
no record exists yet, so a refusal costs nothing. `begin` writes the 'running' record (a run that
cannot be audited does not start) and notes what the case holds. `start` has the backend start the
container and returns its handle; `wait` collects output until the container ends (live output and
cancellation plug in here, around the handle). `finish` judges the outcome, settles the changes,
scans the case for hazards and writes the final record.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scoperun.audit.log import AuditLog, keep_full_output, record_from_result
from scoperun.changeset import ChangeSet, WriteMode
from scoperun.config import Settings, parse_memory, shares_a_network
from scoperun.engine.base import Backend, BindMount, OverlayMount, RunHandle, RunOutcome, RunSpec
from scoperun.engine.seccomp import profile_json
from scoperun.errors import AuditError, ChangesError, SafetyError, ScopeError, UnsupportedScriptError
from scoperun.models import (
    Durations,
    ExecutionRequest,
    ExecutionResult,
    Finding,
    Hazard,
    OutputCapture,
    ResolvedLimits,
    Status,
)
from scoperun.safety.redaction import Redactor
from scoperun.scope import CONTAINER_ROOT, ResolvedScript, Workspace

if TYPE_CHECKING:
    from scoperun.changes.tracker import CaseTracker

__all__ = [
    "FixedProgram",
    "Prepared",
    "Refused",
    "RunContext",
    "ScriptFacts",
    "begin",
    "cancelled_before_start",
    "finish",
    "finish_error",
    "new_execution_id",
    "prepare",
    "refuse",
    "start",
    "wait",
    "write_record",
]

_EXDEV_TEXT = "Invalid cross-device link"
# What `prepare` may refuse with; anything else is a bug or an engine failure, not a refusal.
REFUSALS = (ScopeError, UnsupportedScriptError, SafetyError, ChangesError)


def new_execution_id() -> str:
    """A sortable, unique id in the plan's format: exec_YYYYMMDD_HHMMSS_<8 hex>."""
    return f"exec_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FixedProgram:
    """A program shipped in an image, run instead of a workspace script (e.g. the browser runner).

    The pipeline is the same (scope, audit, limits, backend); only script resolution and the
    scan are skipped, since nothing the caller sent is code. Limits here replace the settings'
    defaults; the request's own limits still win.
    """

    image: str
    command: tuple[str, ...]
    mounts: tuple[BindMount, ...] = ()  # extra mounts, e.g. the read-only data the program reads
    env: Mapping[str, str] = field(default_factory=dict)
    data_sha256: str | None = None  # recorded as the run's script_sha256
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    tmp_size: str | None = None
    shm_size: str | None = None
    # Turns a non-zero exit into the run's message (read from what the program left behind).
    explain_failure: Callable[[RunOutcome], str | None] | None = None


# -- what every stage knows ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """One run as asked and resolved on entry (ids, limits, secrets, audit log); never changes after."""

    execution_id: str
    request: ExecutionRequest
    settings: Settings
    workspace: Workspace
    audit: AuditLog
    program: FixedProgram | None
    limits: ResolvedLimits
    image: str
    network: str
    write_mode: WriteMode
    secrets: Mapping[str, str]
    redactor: Redactor
    started_at: datetime
    t0: float  # monotonic clock at entry, for durations.total

    @classmethod
    def open(cls, settings: Settings, request: ExecutionRequest, *, execution_id: str | None = None,
             program: FixedProgram | None = None) -> RunContext:
        """Resolve the request against the settings. WorkspaceError or AuditError: nothing can be audited."""
        started_at, t0 = _now(), time.monotonic()
        fixed = program or FixedProgram(image=settings.image, command=())
        asked = request.limits
        found = {n: os.environ[n] for n in settings.secret_env if os.environ.get(n)}
        workspace = Workspace.from_settings(settings)
        return cls(
            execution_id=execution_id or new_execution_id(),
            request=request,
            settings=settings,
            workspace=workspace,
            audit=AuditLog.from_settings(settings, workspace.root),  # + host chain and index
            program=program,
            limits=ResolvedLimits(
                timeout=asked.timeout or settings.timeout,
                memory=asked.memory or fixed.memory or settings.memory,
                cpus=asked.cpus or fixed.cpus or settings.cpus,
                pids_limit=asked.pids_limit or fixed.pids_limit or settings.pids_limit,
            ),
            image=fixed.image,
            network=request.network or settings.network,
            write_mode=request.write_mode or ("read-only" if request.read_only else settings.write_mode),
            secrets=found,
            redactor=Redactor(found),
            started_at=started_at,
            t0=t0,
        )


@dataclass(frozen=True)
class ScriptFacts:
    """What `prepare` learnt that the record keeps, even when the run is refused."""

    working_dir: str = ""  # case-relative folder the script runs in
    script_sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)


# -- prepare ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A run ready to start: its spec, its case folder and the tracker that mounts the case."""

    spec: RunSpec
    case_dir: Path
    tracker: CaseTracker
    facts: ScriptFacts


@dataclass(frozen=True)
class Refused:
    """A run refused before anything ran: why, and what was known by then."""

    error: Exception
    facts: ScriptFacts = field(default_factory=ScriptFacts)


def prepare(ctx: RunContext) -> Prepared | Refused:
    """Check the scope, read and scan the script, set up the case's mount; build the spec."""
    facts = ScriptFacts()
    try:
        ws, req = ctx.workspace, ctx.request
        case_dir = ws.case_dir(req.case)
        script = None if ctx.program else ws.resolve_script(req.script)
        _, container_workdir = ws.working_dir(case_dir, req.case, req.working_dir)
        facts = ScriptFacts(working_dir=str(container_workdir.relative_to(CONTAINER_ROOT)))
        if shares_a_network(ctx.network):
            raise ScopeError(f"rejected (network): network {ctx.network!r} is not allowed; use bridge, none or "
                             f"a Docker network name", rule="network", value=ctx.network)
        extra_mounts: list[BindMount | OverlayMount] = []
        if ctx.program is not None:
            facts = ScriptFacts(working_dir=facts.working_dir, script_sha256=ctx.program.data_sha256)
            extra_mounts.extend(ctx.program.mounts)
            command: tuple[str, ...] = (*ctx.program.command, *req.args)
        else:
            assert script is not None
            source = _read_script(script)
            findings, refusal = _scan(ctx, source, script)
            facts = ScriptFacts(working_dir=facts.working_dir, script_sha256=hashlib.sha256(source).hexdigest(),
                                findings=findings)
            if refusal is not None:
                raise refusal  # refused before any staging exists
            if not (script.host_path.parent == ws.tools or ws.tools in script.host_path.parents):
                extra_mounts.append(BindMount(script.host_path, str(script.container_path), read_only=True))
            command = (script.interpreter, str(script.container_path), *req.args)

        from scoperun.changes.tracker import begin_tracking

        st = ctx.settings
        tracker = begin_tracking(st, workspace_root=ws.root, execution_id=ctx.execution_id, case=req.case,
                                 case_dir=case_dir, write_mode=ctx.write_mode,
                                 apply_policy=req.apply or st.apply_policy, requested_by=req.requested_by)
        mounts: list[BindMount | OverlayMount] = [tracker.mount(str(ws.container_case_dir(req.case)))]
        if ws.tools.is_dir():
            mounts.append(BindMount(ws.tools, str(CONTAINER_ROOT / ws.tools_name), read_only=True))
        mounts.extend(extra_mounts)
    except REFUSALS as exc:
        return Refused(exc, facts)
    except OSError as exc:  # a path of the request that the host cannot even look at: still a refusal
        shown = exc.filename if isinstance(exc.filename, str) else ""
        return Refused(ScopeError(f"rejected (unreadable-path): {shown or 'a path of the request'} cannot be read on "
                                  f"the host ({exc.strerror or exc}); use plain folders of the case",
                                  rule="unreadable-path", value=shown or None), facts)
    spec = _spec(ctx, command=command, working_dir=str(container_workdir), mounts=tuple(mounts),
                 script_label=script.relative.as_posix() if script else req.script)
    return Prepared(spec=spec, case_dir=case_dir, tracker=tracker, facts=facts)


def _read_script(script: ResolvedScript) -> bytes:
    # O_NOFOLLOW: the checked real path must not have become a symlink since the check.
    fd = os.open(script.host_path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _scan(ctx: RunContext, source: bytes, script: ResolvedScript) -> tuple[list[Finding], SafetyError | None]:
    """The scanner's findings, and the refusal the policy makes of them (None: the run may go on)."""
    policy = ctx.request.safety_policy or ctx.settings.safety_policy
    if policy == "off":
        return [], None
    from scoperun.safety import SafetyPolicy, apply_policy, scan_script

    findings = scan_script(source.decode("utf-8", "replace"), kind=script.kind)
    try:
        apply_policy(findings, SafetyPolicy(policy))
    except SafetyError as exc:
        return findings, exc
    return findings, None


def _spec(ctx: RunContext, *, command: tuple[str, ...], working_dir: str, mounts: tuple[BindMount | OverlayMount, ...],
          script_label: str) -> RunSpec:
    st, req, program, limits = ctx.settings, ctx.request, ctx.program, ctx.limits
    env = {
        **(program.env if program else {}),
        **req.env,
        **ctx.secrets,
        "EXECUTION_ID": ctx.execution_id,
        "CASE_NAME": req.case,
        "WORKSPACE_ROOT": str(CONTAINER_ROOT),
        "HOME": "/tmp",
    }
    return RunSpec(
        execution_id=ctx.execution_id,
        image=ctx.image,
        command=command,
        working_dir=working_dir,
        mounts=mounts,
        env=env,
        user=st.container_user,
        timeout=limits.timeout,
        memory_bytes=parse_memory(limits.memory),
        cpus=limits.cpus,
        pids_limit=limits.pids_limit,
        nofile=st.nofile,
        tmp_size_bytes=parse_memory((program and program.tmp_size) or st.tmp_size),
        shm_size_bytes=parse_memory(program.shm_size) if program and program.shm_size else None,
        network=ctx.network,
        output_cap=st.output_cap,
        spill_limit=st.full_output_limit,
        runtime=st.runtime,
        seccomp=profile_json(st.seccomp),
        fsize=parse_memory(st.max_file_size),
        labels={"org.scoperun.case": req.case, "org.scoperun.script": script_label,
                "org.scoperun.workspace": str(ctx.workspace.root)},
    )


# -- begin, start, wait -------------------------------------------------------------------------


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


# -- endings ------------------------------------------------------------------------------------


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
    # Staged runs apply first (the decision recorded before), so the scan sees what landed.
    changes, full = _settle_changes(ctx, prepared, status)
    if status is Status.FAILED and stop is None and ctx.program and ctx.program.explain_failure:
        message = ctx.program.explain_failure(outcome) or message  # reads what the run left
    # Hazards on paths this run changed are its own; the rest were there before (unknown: neither).
    changed: set[bytes] | None = {c.raw_path for c in full.entries} if full is not None else None
    if full is not None and ("incomplete" in full.note or "could not" in full.note):
        changed = None
    if ctx.write_mode == "read-only":
        changed = set()  # a read-only run cannot have left anything
    hazards = _scan_hazards(ctx, prepared.case_dir, changed, deadline=t_finish + ctx.settings.post_run_budget)
    if full is not None:
        from scoperun.changes.tracker import setid_hazards

        hazards = [*setid_hazards(full), *hazards]
    message += _hazard_words(hazards)
    if changes is not None and changes.status.value in ("staged", "conflict"):
        message += f"; changes not applied ({changes.status.value}): {changes.note}"
    raw_out, raw_err = outcome.stdout.capture(None).text, outcome.stderr.capture(None).text
    redactor = ctx.redactor.for_streams(raw_out, raw_err)  # a secret split between the two streams
    stdout, stderr = outcome.stdout.capture(redactor), outcome.stderr.capture(redactor)
    if status is Status.FAILED and ctx.write_mode == "staged" and _EXDEV_TEXT in stderr.text:
        # The staging overlay cannot rename a folder that existed before the run (EXDEV).
        message += ("; in a staged run an existing folder cannot be renamed in place: use shutil.move or "
                    "`mv` (they copy), or run with write_mode 'direct'")
    for name, cap, buf in (("stdout", stdout, outcome.stdout), ("stderr", stderr, outcome.stderr)):
        kept = keep_full_output(ctx.audit, ctx.execution_id, name, buf, redactor)
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


def _write_final(ctx: RunContext, prepared: Prepared, result: ExecutionResult) -> ExecutionResult:
    """Write the terminal record; if the audit trail refuses it, return a result that says so."""
    try:
        write_record(ctx, prepared.facts, result, prepared.tracker)
    except AuditError as exc:
        import logging

        logging.getLogger(__name__).error("final audit record of %s not written: %s", ctx.execution_id, exc)
        applied = result.changes is not None and result.changes.status.value == "applied"
        fate = ("its changes were applied (the decision is in the audit trail)" if applied else
                "nothing was applied to the case")
        return result.model_copy(update={"status": Status.ERROR, "message": ctx.redactor.redact(
            f"the run ended ({result.status.value}: {result.message}) but its final audit record could not be "
            f"written ({exc}); {fate}. Fix the audit folder, then see `scoperun audit verify`.")})
    return result


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


def _settle_changes(ctx: RunContext, prepared: Prepared, status: Status) -> tuple[ChangeSet | None, ChangeSet | None]:
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

    cs = tracker.finish(status, decide)
    if cs is None:
        return None, None
    return ctx.redactor.redact_changes(cs.capped(ctx.settings.changes_record_cap)), cs


def _scan_hazards(ctx: RunContext, case_dir: Path, changed: set[bytes] | None, *,
                  deadline: float | None = None) -> list[Hazard]:
    """After the container: report (and defuse) what the run left in the case; see hazards.py."""
    from scoperun.safety.hazards import scan_case

    try:
        return scan_case(case_dir, limit=ctx.settings.hazard_scan_limit, changed=changed, deadline=deadline).as_list()
    except OSError as exc:  # the case vanished or became unreadable: say so, never crash the record
        return [Hazard.note("scan-failed", f"hazard scan failed: {exc}")]


# -- records ------------------------------------------------------------------------------------


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
