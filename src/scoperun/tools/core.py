"""The plan's four agent tools as plain Python over an `Executor`, each returning markdown.

Same names and arguments as the plan (so its agent can switch to them), plus the executor as
first argument. Every `a...` twin is async and keeps the event loop free. A tool never raises
for what a model can cause or cannot fix: refusals, failures and an unusable workspace all
come back as clear text.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Self

from pydantic import ValidationError

from scoperun.errors import ScopeRunError
from scoperun.executor import Executor
from scoperun.models import ExecutionRequest, ExecutionResult
from scoperun.tools.monitor import execution_stats_markdown
from scoperun.tools.render import redactor_for, render_browser_result, render_error, render_result

__all__ = [
    "MAX_SCRIPT_CHARS",
    "ToolReply",
    "aexecute_browser_automation",
    "aexecute_custom_script",
    "aexecute_script_on_filesystem",
    "amonitor_script_executions",
    "browser_available",
    "execute_browser_automation",
    "execute_custom_script",
    "execute_script_on_filesystem",
    "monitor_script_executions",
]

MAX_SCRIPT_CHARS = 1_000_000  # a script longer than this is almost surely pasted data, not code
DEFAULT_REQUESTED_BY = "agent"


class ToolReply(str):
    """A tool's markdown (it *is* the str the model reads) plus `ok` and the typed `result` behind it.

    `ok` is True only when the work was done (the run succeeded); adapters use it to flag errors,
    e.g. MCP's `isError`. `result` is the ExecutionResult (BrowserResult for the browser), or None
    when nothing ran.
    """

    ok: bool
    result: Any

    def __new__(cls, text: str, *, ok: bool, result: Any = None) -> Self:
        reply = super().__new__(cls, text)
        reply.ok = ok
        reply.result = result
        return reply


def _reply(executor: Executor, result: ExecutionResult) -> ToolReply:
    text = render_result(result, redactor=redactor_for(executor.settings), workspace=_workspace_root(executor))
    return ToolReply(text, ok=result.success, result=result)


def _refusal(text: str) -> ToolReply:
    return ToolReply(text, ok=False)


def browser_available() -> bool:
    """True when `scoperun.browser` is installed (the browser tool is offered only then)."""
    try:
        return importlib.util.find_spec("scoperun.browser") is not None
    except (ImportError, ValueError):
        return False


def _workspace_root(executor: Executor) -> Path:
    return Path(executor.settings.workspace).expanduser().resolve()


def _guard(executor: Executor, action: str, produce: Callable[[], ToolReply]) -> ToolReply:
    """Run `produce`; turn what stopped it before anything ran into text for the model."""
    try:
        return produce()
    except (ValidationError, ScopeRunError) as exc:
        return _refusal(render_error(exc, redactor=redactor_for(executor.settings), action=action))


# -- execute_script_on_filesystem ------------------------------------------------------------------


def _case_relative_working_dir(working_dir: str | None, case_name: str, projects_dir: str) -> str | None:
    """Accept the plan's `projects/<case>/sub` form too; the scope check still validates the rest."""
    if not working_dir or not working_dir.strip():
        return None
    parts = PurePosixPath(working_dir).parts
    prefix = PurePosixPath(projects_dir, case_name).parts
    if parts[: len(prefix)] == prefix:
        rest = parts[len(prefix):]
        return PurePosixPath(*rest).as_posix() if rest else None
    return working_dir


def _script_request(executor: Executor, script_name: str, case_name: str, script_args: list[str] | None,
                    working_dir: str | None, requested_by: str | None) -> ExecutionRequest:
    tools = executor.settings.tools_dir.strip("/")
    name = script_name.strip()
    if name.startswith(tools + "/"):
        name = name[len(tools) + 1:]  # "Tools/x.py" given where "x.py" was meant
    # An absolute name goes to the scope check as is, so it is refused as absolute (not "not found").
    script = name if name.startswith("/") else f"{tools}/{name}"
    return ExecutionRequest(
        script=script,
        case=case_name,
        args=list(script_args or []),
        working_dir=_case_relative_working_dir(working_dir, case_name, executor.settings.projects_dir),
        requested_by=requested_by or DEFAULT_REQUESTED_BY,
    )


def execute_script_on_filesystem(executor: Executor, script_name: str, case_name: str,
                                 script_args: list[str] | None = None, working_dir: str | None = None, *,
                                 requested_by: str | None = None) -> ToolReply:
    """Run `Tools/<script_name>` on one case in a fresh container; return the plan's markdown."""
    def produce() -> ToolReply:
        request = _script_request(executor, script_name, case_name, script_args, working_dir, requested_by)
        return _reply(executor, executor.run(request))

    return _guard(executor, "run the script", produce)


async def aexecute_script_on_filesystem(executor: Executor, script_name: str, case_name: str,
                                        script_args: list[str] | None = None, working_dir: str | None = None, *,
                                        requested_by: str | None = None) -> ToolReply:
    """Async `execute_script_on_filesystem`: the run happens on a worker thread."""
    try:
        request = _script_request(executor, script_name, case_name, script_args, working_dir, requested_by)
        result = await executor.arun(request)
    except (ValidationError, ScopeRunError) as exc:
        return _refusal(render_error(exc, redactor=redactor_for(executor.settings), action="run the script"))
    return _reply(executor, result)


# -- execute_custom_script ----------------------------------------------------------------------------


def execute_custom_script(executor: Executor, script_content: str, case_name: str,
                          script_name: str = "temp_script.py", *, requested_by: str | None = None) -> ToolReply:
    """Write `script_content` to Database/temp_scripts/ under a unique name and run it on one case."""
    if not script_content or not script_content.strip():
        return _refusal("⛔ Rejected, nothing ran: script_content is empty. Pass the complete script source.")
    if len(script_content) > MAX_SCRIPT_CHARS:
        return _refusal(f"⛔ Rejected, nothing ran: script_content has {len(script_content):,} characters (limit "
                f"{MAX_SCRIPT_CHARS:,}). Read large data from the case's files instead of pasting it into code.")

    def produce() -> ToolReply:
        return _reply(executor, executor.run_code(script_content, case=case_name,
                                                  script_name=script_name or "temp_script.py",
                                                  requested_by=requested_by or DEFAULT_REQUESTED_BY))

    return _guard(executor, "run the custom script", produce)


async def aexecute_custom_script(executor: Executor, script_content: str, case_name: str,
                                 script_name: str = "temp_script.py", *, requested_by: str | None = None) -> ToolReply:
    """Async `execute_custom_script`: writing and running happen on a worker thread."""
    return await asyncio.to_thread(execute_custom_script, executor, script_content, case_name, script_name,
                                   requested_by=requested_by)


# -- monitor_script_executions ------------------------------------------------------------------------


def monitor_script_executions(executor: Executor) -> ToolReply:
    """Recent activity and statistics of the workspace's audit trail, as markdown."""
    return _guard(executor, "read the execution statistics", lambda: ToolReply(
        execution_stats_markdown(executor.settings, redactor=redactor_for(executor.settings)), ok=True))


async def amonitor_script_executions(executor: Executor) -> ToolReply:
    """Async `monitor_script_executions` (reading records is file I/O: done on a worker thread)."""
    return await asyncio.to_thread(monitor_script_executions, executor)


# -- execute_browser_automation -------------------------------------------------------------------


def execute_browser_automation(executor: Executor, url: str, actions: list[Any], case_name: str,
                               save_screenshots: bool = True, *, requested_by: str | None = None) -> ToolReply:
    """Drive a headless browser through declarative `actions` for one case; return markdown."""
    if not browser_available():
        return _refusal("⛔ Browser automation is not available in this scoperun installation "
                        "(scoperun.browser is missing). Nothing ran.")

    def produce() -> ToolReply:
        from scoperun.browser import BrowserRequest, run_browser

        request = BrowserRequest(url=url, actions=actions, case=case_name, save_screenshots=save_screenshots,
                                 requested_by=requested_by or DEFAULT_REQUESTED_BY)
        result = run_browser(executor, request)
        text = render_browser_result(result, url=url, case=case_name, redactor=redactor_for(executor.settings),
                                     workspace=_workspace_root(executor))
        ok = result.execution.success and result.failed_action is None and not result.error
        return ToolReply(text, ok=ok, result=result)

    return _guard(executor, "run the browser automation", produce)


async def aexecute_browser_automation(executor: Executor, url: str, actions: list[Any], case_name: str,
                                      save_screenshots: bool = True, *, requested_by: str | None = None) -> ToolReply:
    """Async `execute_browser_automation`: the browser run happens on a worker thread."""
    return await asyncio.to_thread(execute_browser_automation, executor, url, actions, case_name,
                                   save_screenshots, requested_by=requested_by)
