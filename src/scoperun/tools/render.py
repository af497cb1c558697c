"""The markdown an agent reads after a tool call (the plan's format, made correct and unambiguous).

Every renderer re-applies the secret redactor (a guard: results are already redacted), puts
output in fences no output can close, and says in one plain line what happened, so a model
does not have to guess from an exit code whether anything ran.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from scoperun.changeset import ChangeSet, ChangeSetStatus
from scoperun.models import ExecutionResult, Status
from scoperun.safety.redaction import Redactor
from scoperun.safety.redaction import redactor_for as redactor_of_env

if TYPE_CHECKING:
    from scoperun.config import Settings

__all__ = [
    "STDERR_LIMIT",
    "STDOUT_LIMIT",
    "change_status_line",
    "fence",
    "redactor_for",
    "render_browser_result",
    "render_error",
    "render_result",
]

STDOUT_LIMIT = 2000  # characters of stdout shown to the model (the plan's limit)
STDERR_LIMIT = 1000  # characters of stderr shown to the model (the plan's limit)
_INLINE_LIMIT = 300

STATUS_LABELS: dict[Status, str] = {
    Status.SUCCEEDED: "✅ Success",
    Status.FAILED: "❌ Failed",
    Status.TIMED_OUT: "⏱ Timed out",
    Status.OOM_KILLED: "❌ Killed: out of memory",
    Status.REJECTED: "⛔ Rejected (nothing ran)",
    Status.ERROR: "⚠️ Error in scoperun or the container engine (not in the script)",
    Status.RUNNING: "⏳ Running",
}


def redactor_for(settings: Settings) -> Redactor:
    """The redactor of the secrets `settings.secret_env` names, as they are set in this process."""
    return redactor_of_env(settings.secret_env)


def fence(text: str, info: str = "") -> str:
    """`text` in a backtick fence longer than any backtick run inside it, so output cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{marks}{info}\n{body}{marks}"


def _inline(value: object, redactor: Redactor, *, limit: int = _INLINE_LIMIT) -> str:
    """One line of caller- or script-controlled text: no newlines or control characters, bounded."""
    text = redactor.redact(str(value))
    text = "".join(" " if unicodedata.category(ch) in {"Cc", "Zl", "Zp"} else ch for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _head(text: str, limit: int) -> tuple[str, str | None]:
    if len(text) <= limit:
        return text, None
    return text[:limit], f"showing the first {limit:,} of {len(text):,} characters"


def _tail(text: str, limit: int) -> tuple[str, str | None]:
    # The end of stderr is where a traceback says what went wrong: keep that part.
    if len(text) <= limit:
        return text, None
    return text[-limit:], f"showing the last {limit:,} of {len(text):,} characters"


def _audit_path(result: ExecutionResult, workspace: Path | None) -> str:
    record = result.audit_record or f"Database/script_executions/{result.execution_id}.json"
    path = Path(record)
    if path.is_absolute() and workspace is not None:
        try:
            return PurePosixPath(path.relative_to(workspace)).as_posix()
        except ValueError:
            pass
    return record


def what_happened(result: ExecutionResult) -> str:
    """One sentence, for a model, on what the run did and what to do next."""
    message = result.message
    took = f" in {result.durations.total:.1f} s" if result.durations.total else ""
    match result.status:
        case Status.SUCCEEDED:
            return f"The script ran in its container and exited with code 0{took}."
        case Status.FAILED:
            return (f"The script ran and exited with code {result.exit_code}{took}: it failed. "
                    "Read **Errors** below for why, fix the cause, then run it again.")
        case Status.TIMED_OUT:
            return (f"{message}. Output up to that moment is shown. Make the script do less per run "
                    "(or process fewer files), then run it again.")
        case Status.OOM_KILLED:
            return f"{message}."
        case Status.REJECTED:
            return f"{message}. Nothing ran and no file was changed."
        case Status.ERROR:
            return (f"{message}. This is a problem of scoperun or the container engine, not of the script; "
                    "retrying later may work, otherwise tell the operator.")
        case _:
            return message or result.status.value


def _execution_lines(result: ExecutionResult, redactor: Redactor, workspace: Path | None) -> list[str]:
    """Status, exit code, what happened, output, errors, findings and the audit reference."""
    exit_code = "none (nothing ran)" if result.status is Status.REJECTED else (
        "none (killed)" if result.exit_code is None else str(result.exit_code))
    lines = [
        f"Status: {STATUS_LABELS.get(result.status, result.status.value)}",
        f"Exit Code: {exit_code}",
        f"What happened: {_inline(what_happened(result), redactor, limit=2000)}",
        "",
    ]
    ran = result.status not in {Status.REJECTED, Status.RUNNING}
    stdout = redactor.redact(result.stdout.text)
    stderr = redactor.redact(result.stderr.text)
    for title, text, limit, cut, capture in (
        ("Output", stdout, STDOUT_LIMIT, _head, result.stdout),
        ("Errors", stderr, STDERR_LIMIT, _tail, result.stderr),
    ):
        if not text:
            continue
        shown, note = cut(text, limit)
        notes = [note] if note else []
        if capture.truncated:
            notes.append(f"the script wrote {capture.total_bytes:,} bytes in all; scoperun kept only part")
        lines.append(f"**{title}:**" + (f" ({'; '.join(notes)})" if notes else ""))
        lines += [fence(shown), ""]
    if ran and not stdout and not stderr and result.status is not Status.ERROR:
        lines += ["(The script printed nothing.)", ""]
    if result.findings:
        lines.append("**Safety findings** (advice from a source scan; the container is the real boundary):")
        for f in result.findings:
            lines.append(f"- line {f.line}: {_inline(f.rule, redactor)} "
                         f"({_inline(f.severity, redactor)}): {_inline(f.message, redactor)}")
        lines.append("")
    hazards = [h for h in result.hazards if h.kind != "scan-summary"]
    if hazards:
        lines.append("**Hazards the run left in the case** (files the host must not trust; setuid bits were removed):")
        for h in hazards:
            lines.append(f"- {_inline(h.kind, redactor)}: {_inline(h.path, redactor)} — "
                         f"{_inline(h.detail, redactor)}")
        lines.append("")
    lines += _change_lines(result, redactor)
    lines.append(f"Audit Log: {_inline(_audit_path(result, workspace), redactor)}")
    return lines


_FIRST_PATHS = 10


def change_status_line(cs: ChangeSet) -> str:
    """Where a change set stands and how to undo or finish it, in one sentence."""
    run = cs.execution_id
    match cs.status:
        case ChangeSetStatus.APPLIED:
            return f"applied to the case; to undo, a person runs `scoperun rollback {run}`"
        case ChangeSetStatus.STAGED:
            return (f"held for review, the case is unchanged: a person reviews it with `scoperun changes {run}`, "
                    f"then `scoperun apply {run}` or `scoperun discard {run}`")
        case ChangeSetStatus.CONFLICT:
            return (f"NOT applied: the case changed since the run started ({', '.join(cs.conflicts[:5])}); review "
                    f"with `scoperun changes {run}`")
        case ChangeSetStatus.RECORDED:
            return "written in place (direct mode): recorded in the audit trail, no undo"
        case ChangeSetStatus.ROLLED_BACK:
            return "rolled back: the case holds its earlier content again"
        case ChangeSetStatus.DISCARDED:
            return "discarded: nothing reached the case"
        case _:
            return cs.note or cs.status.value


def _change_lines(result: ExecutionResult, redactor: Redactor) -> list[str]:
    """What the run changed in the case: summary, the first paths, applied or held, and how to undo."""
    cs = result.changes
    if result.status is Status.REJECTED:
        return []
    if cs is None:
        if result.write_mode == "read-only" or result.read_only:
            return ["**Changes to the case:** none (the case was mounted read-only).", ""]
        return []
    if cs.status is ChangeSetStatus.EMPTY:
        return ["**Changes to the case:** none (the run changed no file).", ""]
    status = _inline(change_status_line(cs), redactor)
    lines = [f"**Changes to the case:** {_inline(cs.summary, redactor)} — {status}"]
    for c in cs.entries[:_FIRST_PATHS]:
        what = c.action.value.replace("_", " ")
        extra = f" (renamed from {_inline(c.renamed_from, redactor)})" if c.renamed_from else ""
        lines.append(f"- {what}: {_inline(c.path, redactor)}{extra}")
    more = cs.totals.count - min(len(cs.entries), _FIRST_PATHS)
    if more > 0:
        lines.append(f"- … and {more:,} more (`scoperun changes {cs.execution_id}` lists them all)")
    lines.append("")
    return lines


def render_result(result: ExecutionResult, *, redactor: Redactor | None = None,
                  workspace: Path | None = None) -> str:
    """The plan's markdown for one run: header, script, case, status, exit code, output, audit log."""
    redactor = redactor or Redactor({})
    lines = [
        f"**Script Execution: {_inline(result.execution_id, redactor)}**",
        f"Script: {_inline(result.script, redactor)}",
        f"Case: {_inline(result.case, redactor)}",
    ]
    if result.args:
        lines.append(f"Arguments: {_inline(shlex.join(result.args), redactor)}")
    if result.working_dir:
        lines.append(f"Working Directory: {_inline(result.working_dir, redactor)}")
    lines += _execution_lines(result, redactor, workspace)
    return "\n".join(lines)


def render_error(exc: BaseException, *, redactor: Redactor | None = None, action: str = "run the script") -> str:
    """Clear text (never a traceback) for an exception that stopped a tool before anything ran."""
    from pydantic import ValidationError

    from scoperun.errors import AuditError, ConfigError, EngineError, WorkspaceError

    redactor = redactor or Redactor({})
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        text = f"⛔ Invalid arguments, nothing ran: {problems}. Correct the arguments and call the tool again."
    elif isinstance(exc, WorkspaceError):
        text = (f"⛔ Could not {action}: the workspace is not usable ({exc}). Nothing ran. "
                "This needs the operator (`scoperun doctor` shows the fix); retrying will not help.")
    elif isinstance(exc, AuditError):
        text = (f"⛔ Could not {action}: its audit record could not be written ({exc}). Nothing ran. "
                "This needs the operator; retrying will not help until the audit folder is writable.")
    elif isinstance(exc, ConfigError):
        text = f"⛔ Could not {action}: scoperun is misconfigured ({exc}). Nothing ran. Tell the operator."
    elif isinstance(exc, EngineError):
        text = (f"⚠️ Could not {action}: the container engine failed ({exc}). "
                "Retrying later may work; otherwise tell the operator.")
    else:
        text = f"⛔ Could not {action}: {exc}"
    return redactor.redact(text)


def _json_block(value: Any, limit: int, redactor: Redactor) -> tuple[str, str | None]:
    text = redactor.redact(json.dumps(value, indent=2, ensure_ascii=False, default=str))
    shown, note = _head(text, limit)
    return fence(shown, "json"), note


def render_browser_result(result: Any, *, url: str, case: str, redactor: Redactor | None = None,
                          workspace: Path | None = None) -> str:
    """Markdown for a `scoperun.browser.BrowserResult`: where the browser ended, what it extracted, files."""
    redactor = redactor or Redactor({})
    execution: ExecutionResult = result.execution
    lines = [
        f"**Browser Automation: {_inline(execution.execution_id, redactor)}**",
        f"Start URL: {_inline(url, redactor)}",
        f"Case: {_inline(case, redactor)}",
    ]
    if result.final_url:
        lines.append(f"Final URL: {_inline(result.final_url, redactor)}")
    if result.title:
        lines.append(f"Page Title: {_inline(result.title, redactor)}")
    if result.failed_action is not None or result.error:
        if result.failed_action is None:
            where = "the browser run"
        elif result.failed_action < 0:
            where = "opening the start URL"
        else:
            where = f"action #{result.failed_action} (0-based index in `actions`)"
        lines.append(f"Browser Error: {where} failed: {_inline(result.error or 'no detail', redactor)}. "
                     "Actions after it did not run.")
    extracted: Mapping[str, Any] = result.extracted or {}
    if extracted:
        block, note = _json_block(dict(extracted), STDOUT_LIMIT, redactor)
        lines += ["", "**Extracted:**" + (f" ({note})" if note else ""), block]
    files: Iterable[str] = result.files or []
    files = list(files)
    if files:
        lines += ["", "**Files saved in the case:**", *(f"- {_inline(f, redactor)}" for f in files)]
    lines.append("")
    lines += _execution_lines(execution, redactor, workspace)
    return "\n".join(lines)
