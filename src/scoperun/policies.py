"""The one definition of each run policy: how a run sees its case, when staged changes reach it,
and what the script scanner's findings do; and how a run ended (`Status`). No pydantic here, so
the CLI can name them without loading the models."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = ["ApplyPolicy", "SafetyPolicy", "Status", "WriteMode"]

WriteMode = Literal["staged", "direct", "read-only"]
ApplyPolicy = Literal["on-success", "never", "always"]


class SafetyPolicy(StrEnum):
    """What to do with findings: ignore them, report them, or refuse the script."""

    off = "off"
    warn = "warn"
    block = "block"


class Status(StrEnum):
    """How a run ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    REJECTED = "rejected"
    ERROR = "error"
    ABANDONED = "abandoned"  # the scoperun process died mid-run; set by `scoperun gc`
    CANCELLED = "cancelled"  # a caller or an operator (`scoperun stop`) stopped it; the container was killed
