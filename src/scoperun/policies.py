"""The one definition of each run policy: how a run sees its case, when staged changes reach it,
and what the script scanner's findings do."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = ["ApplyPolicy", "SafetyPolicy", "WriteMode"]

WriteMode = Literal["staged", "direct", "read-only"]
ApplyPolicy = Literal["on-success", "never", "always"]


class SafetyPolicy(StrEnum):
    """What to do with findings: ignore them, report them, or refuse the script."""

    off = "off"
    warn = "warn"
    block = "block"
