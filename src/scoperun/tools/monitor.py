"""`monitor_script_executions`: recent activity and statistics of the audit trail, as markdown.

The figures come from the host-local audit index (`scoperun.stats`), caught up with the JSON
records first, so a call costs a few SQL queries instead of one read per record on the bucket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scoperun.safety.redaction import Redactor

if TYPE_CHECKING:
    from scoperun.config import Settings

__all__ = ["execution_stats_markdown"]


def execution_stats_markdown(settings: Settings, *, redactor: Redactor | None = None, since: str | None = None) -> str:
    """The markdown `monitor_script_executions` returns for the configured workspace."""
    from scoperun.audit.stats import render_stats_markdown, stats_for_settings

    text = render_stats_markdown(stats_for_settings(settings, since=since))
    return (redactor or Redactor({})).redact(text)
