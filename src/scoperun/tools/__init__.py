"""Agent adapters: the plan's four tools as plain Python (`core`), their markdown (`render`),
and thin LangChain (`scoperun.tools.langchain`) and MCP (`scoperun.tools.mcp`) wrappers.

The adapters import their frameworks lazily: `import scoperun.tools` needs neither.
"""

from __future__ import annotations

from scoperun.tools.core import (
    ToolReply,
    aexecute_browser_automation,
    aexecute_custom_script,
    aexecute_script_on_filesystem,
    amonitor_script_executions,
    browser_available,
    execute_browser_automation,
    execute_custom_script,
    execute_script_on_filesystem,
    monitor_script_executions,
)
from scoperun.tools.render import render_browser_result, render_error, render_result

__all__ = [
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
    "render_browser_result",
    "render_error",
    "render_result",
]
