"""The pipeline of one run: scope -> safety -> audit (started) -> backend -> audit (finished).

`Executor` is thread-safe; at most `max_concurrent` containers run at once and the other
callers wait their turn (the wait is reported as `durations.queue_wait`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scoperun.audit.log import AuditLog, keep_full_output, record_from_result
from scoperun.config import Settings, load_settings, parse_memory
from scoperun.engine.base import Backend, BindMount, RunOutcome, RunSpec
from scoperun.errors import ChangesError, EngineError, SafetyError, ScopeError, UnsupportedScriptError
from scoperun.models import Durations, ExecutionRequest, ExecutionResult, OutputCapture, Status
from scoperun.safety.redaction import Redactor
from scoperun.scope import CONTAINER_ROOT, ResolvedScript, Workspace

__all__ = ["Executor", "FixedProgram", "new_execution_id"]


_EXDEV_TEXT = "Invalid cross-device link"


def new_execution_id() -> str:
    """A sortable, unique id in the plan's format: exec_YYYYMMDD_HHMMSS_<8 hex>."""
    return f"exec_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"


def _now() -> datetime:
    return datetime.now(UTC)


def _read_script(script: ResolvedScript) -> bytes:
    # O_NOFOLLOW: the checked real path must not have become a symlink since the check.
    fd = os.open(script.host_path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


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


class Executor:
    """Runs `ExecutionRequest`s on the configured workspace and engine."""

    def __init__(self, settings: Settings | None = None, *, backend: Backend | None = None) -> None:
        self.settings = settings or load_settings()
        self._backend = backend
        self._backend_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.settings.max_concurrent)
        # Async callers get their own threads so waiting for a slot never blocks an event loop.
        self._async_pool: ThreadPoolExecutor | None = None

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

                    self._backend = DockerBackend(self.settings.docker_host)
            return self._backend

    @property
    def workspace(self) -> Workspace:
        """The workspace, resolved now (raises WorkspaceError when unusable)."""
        return Workspace.from_settings(self.settings)

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one request to the end and return its result; refusals are results too.

        Raises WorkspaceError when there is no workspace and AuditError when the run cannot be
        audited: in both cases nothing ran.
        """
        return _Run(self, request).execute()

    async def arun(self, request: ExecutionRequest) -> ExecutionResult:
        """Async `run`: the run happens on a worker thread; the event loop stays free."""
        if self._async_pool is None:
            self._async_pool = ThreadPoolExecutor(
                max_workers=max(32, 4 * self.settings.max_concurrent), thread_name_prefix="scoperun-async"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._async_pool, self.run, request)

    def run_code(self, code: str, *, case: str, script_name: str | None = None, **fields: Any) -> ExecutionResult:
        """Write `code` to the temp scripts folder under a unique name, then run it.

        `script_name` picks the suffix (.py or .sh) and a readable stem; the file is always
        `<execution_id>_<stem><suffix>` so runs never overwrite each other's scripts.
        """
        execution_id = new_execution_id()
        name = _temp_script_name(execution_id, script_name or "script.py")
        workspace = self.workspace
        try:
            rel = workspace.write_temp_script(name, code)
        except ScopeError as exc:
            request = ExecutionRequest(script=f"{self.settings.temp_scripts_dir}/{name}", case=case, **fields)
            return _Run(self, request, execution_id=execution_id).refuse(exc)
        request = ExecutionRequest(script=rel, case=case, **fields)
        return _Run(self, request, execution_id=execution_id).execute()

    def run_program(self, request: ExecutionRequest, program: FixedProgram, *,
                    execution_id: str | None = None) -> ExecutionResult:
        """Run `program` (shipped in its image) on `request.case`, audited like any run.

        `request.script` is only a label for results and audit records.
        """
        return _Run(self, request, execution_id=execution_id, program=program).execute()

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


class _Run:
    """The state of one run as it moves through the pipeline."""

    def __init__(self, executor: Executor, request: ExecutionRequest, *, execution_id: str | None = None,
                 program: FixedProgram | None = None) -> None:
        self.ex = executor
        self.program = program
        fixed = program or FixedProgram(image=executor.settings.image, command=())
        self.settings = executor.settings
        self.request = request
        self.execution_id = execution_id or new_execution_id()
        self.started_at = _now()
        self.t0 = time.monotonic()
        self.secrets = {n: os.environ[n] for n in self.settings.secret_env if os.environ.get(n)}
        self.redactor = Redactor(self.secrets)
        self.workspace = executor.workspace  # WorkspaceError propagates: nothing can be audited
        self.audit = AuditLog.from_settings(self.settings, self.workspace.root)  # + host chain and index
        self.script_sha256: str | None = None
        self.findings: list[dict[str, Any]] = []
        self.limits = {
            "timeout": request.limits.timeout or self.settings.timeout,
            "memory": request.limits.memory or fixed.memory or self.settings.memory,
            "cpus": request.limits.cpus or fixed.cpus or self.settings.cpus,
            "pids_limit": request.limits.pids_limit or fixed.pids_limit or self.settings.pids_limit,
        }
        self.image = fixed.image
        self.network = request.network or self.settings.network
        self.image_id: str | None = None
        self.node: str | None = None
        self.working_dir_rel = ""
        self.case_dir: Path | None = None
        self.hazards: list[dict[str, Any]] = []
        self.write_mode = request.write_mode or ("read-only" if request.read_only else self.settings.write_mode)
        self.tracker: Any = None  # changes.tracker.CaseTracker once the case is mounted
        self.changes: Any = None

    def _track_changes(self, status: Status) -> None:
        if self.tracker is not None and self.changes is None:
            cs = self.tracker.finish(status)
            self.changes = cs.capped(self.settings.changes_record_cap) if cs is not None else None

    # -- pipeline -------------------------------------------------------------------------------

    def execute(self) -> ExecutionResult:
        try:
            spec, _ = self._prepare()
        except (ScopeError, UnsupportedScriptError, SafetyError, ChangesError) as exc:
            return self.refuse(exc)

        waiting_since = time.monotonic()
        self.ex._slots.acquire()
        try:
            queue_wait = time.monotonic() - waiting_since
            self._write(self._result(Status.RUNNING, message="running"))  # AuditError: nothing runs
            try:
                self.tracker.start()  # the case's listing, taken once the run has its slot
                outcome = self.ex.backend.run(spec)
            except EngineError as exc:
                return self._finish_error(str(exc), queue_wait)
            except BaseException as exc:
                self._finish_error(f"scoperun was interrupted ({type(exc).__name__}); the container was removed",
                                   queue_wait)
                raise
        finally:
            self.ex._slots.release()
        return self._finish(outcome, queue_wait)

    def _prepare(self) -> tuple[RunSpec, ResolvedScript | None]:
        ws, req, st, program = self.workspace, self.request, self.settings, self.program
        case_dir = self.case_dir = ws.case_dir(req.case)
        script = None if program else ws.resolve_script(req.script)
        _, container_workdir = ws.working_dir(case_dir, req.case, req.working_dir)
        self.working_dir_rel = str(container_workdir.relative_to(CONTAINER_ROOT))
        if self.network in {"host"} or self.network.startswith("container:"):
            raise ScopeError(f"rejected (network): network {self.network!r} is not allowed; use bridge, none or "
                             f"a Docker network name", rule="network", value=self.network)
        extra_mounts: list[Any] = []
        if program is not None:
            self.script_sha256 = program.data_sha256
            extra_mounts.extend(program.mounts)
            command: tuple[str, ...] = (*program.command, *req.args)
        else:
            assert script is not None
            source = _read_script(script)
            self.script_sha256 = hashlib.sha256(source).hexdigest()
            self._scan(source, script)  # SafetyError here: refused before any staging exists
            if not (script.host_path.parent == ws.tools or ws.tools in script.host_path.parents):
                extra_mounts.append(BindMount(script.host_path, str(script.container_path), read_only=True))
            command = (script.interpreter, str(script.container_path), *req.args)

        from scoperun.changes.tracker import begin_tracking

        self.tracker = begin_tracking(st, workspace_root=ws.root, execution_id=self.execution_id, case=req.case,
                                      case_dir=case_dir, write_mode=self.write_mode,
                                      apply_policy=req.apply or st.apply_policy, requested_by=req.requested_by)
        mounts: list[Any] = [self.tracker.mount(str(ws.container_case_dir(req.case)))]
        if ws.tools.is_dir():
            mounts.append(BindMount(ws.tools, str(CONTAINER_ROOT / ws.tools_name), read_only=True))
        mounts.extend(extra_mounts)
        env = {
            **(program.env if program else {}),
            **req.env,
            **self.secrets,
            "EXECUTION_ID": self.execution_id,
            "CASE_NAME": req.case,
            "WORKSPACE_ROOT": str(CONTAINER_ROOT),
            "HOME": "/tmp",
        }
        spec = RunSpec(
            execution_id=self.execution_id,
            image=self.image,
            command=command,
            working_dir=str(container_workdir),
            mounts=tuple(mounts),
            env=env,
            user=st.container_user,
            timeout=float(self.limits["timeout"]),
            memory_bytes=parse_memory(self.limits["memory"]),
            cpus=float(self.limits["cpus"]),
            pids_limit=int(self.limits["pids_limit"]),
            nofile=st.nofile,
            tmp_size_bytes=parse_memory((program and program.tmp_size) or st.tmp_size),
            shm_size_bytes=parse_memory(program.shm_size) if program and program.shm_size else None,
            network=self.network,
            output_cap=st.output_cap,
            spill_limit=st.full_output_limit,
            runtime=st.runtime,
            fsize=parse_memory(st.max_file_size),
            labels={"org.scoperun.case": req.case,
                    "org.scoperun.script": script.relative.as_posix() if script else req.script,
                    "org.scoperun.workspace": str(ws.root)},
        )
        return spec, script

    def _scan(self, source: bytes, script: ResolvedScript) -> None:
        policy = self.request.safety_policy or self.settings.safety_policy
        if policy == "off":
            return
        from scoperun.safety import SafetyPolicy, apply_policy, scan_script

        findings = scan_script(source.decode("utf-8", "replace"), kind=script.kind)
        self.findings = [f.model_dump() for f in findings]
        apply_policy(findings, SafetyPolicy(policy))

    def _scan_hazards(self) -> None:
        """After the container: report (and defuse) what the run left in the case; see hazards.py."""
        if self.case_dir is None:
            return
        from scoperun.safety.hazards import scan_case

        try:
            self.hazards = scan_case(self.case_dir, limit=self.settings.hazard_scan_limit).as_list()
        except OSError as exc:  # the case vanished or became unreadable: say so, never crash the record
            self.hazards = [{"kind": "scan-failed", "path": "", "detail": f"hazard scan failed: {exc}"}]

    # -- endings --------------------------------------------------------------------------------

    def refuse(self, exc: Exception) -> ExecutionResult:
        """Record and return a `rejected` result: nothing ran."""
        result = self._result(Status.REJECTED, message=str(exc), finished=True)
        self._write(result)
        return result

    def _finish_error(self, message: str, queue_wait: float) -> ExecutionResult:
        self._track_changes(Status.ERROR)
        result = self._result(Status.ERROR, message=message, finished=True, queue_wait=queue_wait)
        self._write(result)
        return result

    def _finish(self, outcome: RunOutcome, queue_wait: float) -> ExecutionResult:
        self.image_id = outcome.image_id
        self.node = outcome.node
        timeout = self.limits["timeout"]
        if outcome.error:
            status, message = Status.ERROR, outcome.error
        elif outcome.timed_out:
            status, message = Status.TIMED_OUT, f"timed out after {timeout:g} s; the container was killed"
        elif outcome.oom_killed:
            status, message = Status.OOM_KILLED, (
                f"killed: out of memory (limit {self.limits['memory']}); use less memory or raise the limit")
        elif outcome.exit_code == 0:
            status, message = Status.SUCCEEDED, "succeeded"
        else:
            status, message = Status.FAILED, f"the script exited with code {outcome.exit_code}"
        from scoperun.ops import read_stop_marker

        stop = read_stop_marker(self.audit.directory, self.execution_id)  # an operator's `scoperun stop`
        if stop is not None and status is not Status.SUCCEEDED:
            status, message = Status.FAILED, f"stopped by an operator: {stop}"
        self._track_changes(status)  # staged runs apply first, so the hazard scan sees what landed
        if status is Status.FAILED and stop is None and self.program and self.program.explain_failure:
            message = self.program.explain_failure(outcome) or message  # reads what the run left
        self._scan_hazards()
        if self.changes is not None:
            from scoperun.changes.tracker import setid_hazards

            self.hazards = [*setid_hazards(self.changes), *self.hazards]
        if self.hazards:
            kinds = sorted({h["kind"] for h in self.hazards} - {"scan-summary"})
            message += f"; the run left hazards in the case ({', '.join(kinds)}): see `hazards`"
        if self.changes is not None and self.changes.status.value in ("staged", "conflict"):
            message += f"; changes not applied ({self.changes.status.value}): `scoperun changes {self.execution_id}`"
        stdout, stderr = outcome.stdout.capture(self.redactor), outcome.stderr.capture(self.redactor)
        if status is Status.FAILED and self.write_mode == "staged" and _EXDEV_TEXT in stderr.text:
            # The staging overlay cannot rename a folder that existed before the run (EXDEV).
            message += ("; in a staged run an existing folder cannot be renamed in place: use shutil.move or "
                        "`mv` (they copy), or run with write_mode 'direct'")
        for name, cap, buf in (("stdout", stdout, outcome.stdout), ("stderr", stderr, outcome.stderr)):
            kept = keep_full_output(self.audit, self.execution_id, name, buf, self.redactor)
            cap.full_output = str(Path(self.settings.audit_dir) / kept) if kept else None
        result = self._result(
            status,
            message=message,
            finished=True,
            exit_code=outcome.exit_code,
            stdout=stdout,
            stderr=stderr,
            durations=Durations(queue_wait=queue_wait, container_start=outcome.container_start, run=outcome.run),
        )
        self._write(result)
        return result

    # -- records --------------------------------------------------------------------------------

    def _result(self, status: Status, *, message: str, finished: bool = False, queue_wait: float = 0.0,
                exit_code: int | None = None, stdout: OutputCapture | None = None,
                stderr: OutputCapture | None = None, durations: Durations | None = None) -> ExecutionResult:
        durations = durations or Durations(queue_wait=queue_wait)
        if finished:
            durations.total = time.monotonic() - self.t0
        return ExecutionResult(
            execution_id=self.execution_id,
            status=status,
            exit_code=exit_code,
            message=self.redactor.redact(message),
            script=self.request.script,
            case=self.request.case,
            args=self.redactor.redact_list(self.request.args),
            working_dir=self.working_dir_rel,
            stdout=stdout or OutputCapture(),
            stderr=stderr or OutputCapture(),
            started_at=self.started_at,
            finished_at=_now() if finished else self.started_at,
            durations=durations,
            image=self.image,
            image_id=self.image_id,
            node=self.node,
            limits=self.limits,
            network=self.network,
            read_only=self.write_mode == "read-only",
            write_mode=self.write_mode,
            changes=self.changes,
            requested_by=self.request.requested_by,
            findings=self.findings,
            hazards=self.redactor.redact_data(self.hazards),  # file names can carry a secret too
            audit_record=str(Path(self.settings.audit_dir) / f"{self.execution_id}.json"),
        )

    def _write(self, result: ExecutionResult) -> None:
        env_names = sorted(set(self.request.env) | set(self.secrets))
        record = record_from_result(result, script_sha256=self.script_sha256, env_names=env_names)
        if self.tracker is not None and self.tracker.events:
            record["events"] = list(self.tracker.events)
        self.audit.write(record)

