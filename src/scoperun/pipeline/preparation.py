"""The `prepare` stage: check the scope, read and scan the script, set up the case's mount, build the spec.

Nothing has run and no record exists yet, so a refusal here costs nothing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scoperun.config import parse_memory, shares_a_network
from scoperun.engine.base import BindMount, OverlayMount, RunSpec
from scoperun.engine.seccomp import profile_json
from scoperun.errors import ChangesError, SafetyError, ScopeError, UnsupportedScriptError
from scoperun.models import Finding
from scoperun.pipeline.context import RunContext, ScriptFacts
from scoperun.scope import CONTAINER_ROOT, ResolvedScript

if TYPE_CHECKING:
    from scoperun.changes.tracker import CaseTracker

__all__ = ["REFUSALS", "Prepared", "Refused", "prepare"]

# What `prepare` may refuse with; anything else is a bug or an engine failure, not a refusal.
REFUSALS = (ScopeError, UnsupportedScriptError, SafetyError, ChangesError)


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

