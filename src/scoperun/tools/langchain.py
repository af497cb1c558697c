"""The plan's tools as LangChain tools: `make_tools(executor)` (extra: `pip install scoperun[langchain]`).

Each tool has a sync `func` and an async `coroutine`, so an async LangGraph graph awaits the
run on a worker thread instead of blocking its event loop. The run's audit record names who
asked: `requested_by`, plus the LangGraph thread id when the call carries one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, create_model

from scoperun.errors import ConfigError

try:
    # Imported at module level: LangChain finds the `config` parameter through the type hints.
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool, StructuredTool
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigError("LangChain is not installed; run `pip install 'scoperun[langchain]'`.") from exc

from scoperun.tools import core
from scoperun.tools import files as file_tools
from scoperun.tools.files import FILE_TOOLS
from scoperun.tools.render import render_error
from scoperun.tools.schemas import (
    DESCRIPTIONS,
    FILE_ARGS,
    BrowserAutomationArgs,
    CustomScriptArgs,
    MonitorArgs,
    ScriptOnFilesystemArgs,
    field_description,
)

if TYPE_CHECKING:
    from scoperun.executor import Executor

__all__ = ["make_tools"]


def _who(requested_by: str, config: RunnableConfig | None) -> str:
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return f"{requested_by}/thread-{thread}" if thread else requested_by


def _invalid_arguments(exc: Exception) -> str:
    # Given to the model as the tool's answer, so it can correct its call instead of crashing the graph.
    return render_error(exc, action="call the tool")


def _browser_args_schema() -> type[BaseModel]:
    """The browser tool's schema with the real action vocabulary of scoperun.browser, when it has one."""
    try:
        from scoperun.browser import Action  # type: ignore[import-not-found]
    except ImportError:
        return BrowserAutomationArgs
    return create_model(
        "BrowserAutomationArgs",
        __base__=BrowserAutomationArgs,
        __doc__=BrowserAutomationArgs.__doc__,
        actions=(list[Action], Field(description=field_description(BrowserAutomationArgs, "actions"))),
    )


def make_tools(executor: Executor, *, requested_by: str = "langchain") -> list[BaseTool]:
    """LangChain tools for `executor`: the plan's three script tools, the case/file tools, and the browser tool."""
    # `config: RunnableConfig = None` (not `RunnableConfig | None`): LangChain injects the call's
    # config only into a parameter annotated exactly RunnableConfig; it is hidden from the model.
    def execute_script_on_filesystem(script_name: str, case_name: str, script_args: list[str] | None = None,
                                     working_dir: str | None = None, config: RunnableConfig = None) -> str:
        reply = core.execute_script_on_filesystem(executor, script_name, case_name, script_args, working_dir,
                                                  requested_by=_who(requested_by, config))
        return str(reply)  # a plain str: messages and checkpoints never hold ToolReply

    async def aexecute_script_on_filesystem(script_name: str, case_name: str, script_args: list[str] | None = None,
                                            working_dir: str | None = None, config: RunnableConfig = None) -> str:
        reply = await core.aexecute_script_on_filesystem(executor, script_name, case_name, script_args,
                                                         working_dir, requested_by=_who(requested_by, config))
        return str(reply)

    def execute_custom_script(script_content: str, case_name: str, script_name: str = "temp_script.py",
                              config: RunnableConfig = None) -> str:
        return str(core.execute_custom_script(executor, script_content, case_name, script_name,
                                              requested_by=_who(requested_by, config)))

    async def aexecute_custom_script(script_content: str, case_name: str, script_name: str = "temp_script.py",
                                     config: RunnableConfig = None) -> str:
        return str(await core.aexecute_custom_script(executor, script_content, case_name, script_name,
                                                     requested_by=_who(requested_by, config)))

    def monitor_script_executions() -> str:
        return str(core.monitor_script_executions(executor))

    async def amonitor_script_executions() -> str:
        return str(await core.amonitor_script_executions(executor))

    tools: list[BaseTool] = [
        _tool("execute_script_on_filesystem", execute_script_on_filesystem, aexecute_script_on_filesystem,
              ScriptOnFilesystemArgs),
        _tool("execute_custom_script", execute_custom_script, aexecute_custom_script, CustomScriptArgs),
        _tool("monitor_script_executions", monitor_script_executions, amonitor_script_executions, MonitorArgs),
    ]
    tools += [_file_tool(executor, name, requested_by) for name in FILE_TOOLS]
    if core.browser_available():
        tools.append(_browser_tool(executor, requested_by))
    return tools


def _file_tool(executor: Executor, name: str, requested_by: str) -> BaseTool:
    """A case/file tool (list_cases, read_document, ...) with its schema from tools/schemas.py."""
    sync, async_ = getattr(file_tools, name), file_tools.ASYNC[name]

    def func(config: RunnableConfig = None, **kwargs: Any) -> str:
        return str(sync(executor, **kwargs, requested_by=_who(requested_by, config)))

    async def coroutine(config: RunnableConfig = None, **kwargs: Any) -> str:
        return str(await async_(executor, **kwargs, requested_by=_who(requested_by, config)))

    return _tool(name, func, coroutine, FILE_ARGS[name])


def _browser_tool(executor: Executor, requested_by: str) -> BaseTool:
    def execute_browser_automation(url: str, actions: list[Any], case_name: str, save_screenshots: bool = True,
                                   config: RunnableConfig = None) -> str:
        return str(core.execute_browser_automation(executor, url, actions, case_name, save_screenshots,
                                                   requested_by=_who(requested_by, config)))

    async def aexecute_browser_automation(url: str, actions: list[Any], case_name: str,
                                          save_screenshots: bool = True, config: RunnableConfig = None) -> str:
        return str(await core.aexecute_browser_automation(executor, url, actions, case_name, save_screenshots,
                                                          requested_by=_who(requested_by, config)))

    return _tool("execute_browser_automation", execute_browser_automation, aexecute_browser_automation,
                 _browser_args_schema())


def _tool(name: str, func: Any, coroutine: Any, schema: type[BaseModel]) -> BaseTool:
    return StructuredTool.from_function(func=func, coroutine=coroutine, name=name, description=DESCRIPTIONS[name],
                                        args_schema=schema, handle_validation_error=_invalid_arguments)
