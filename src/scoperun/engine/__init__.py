"""Container engines behind one contract (see `base.Backend`); engine SDKs load lazily."""

from __future__ import annotations

from scoperun.engine.base import MANAGED_LABEL, Backend, BindMount, RunOutcome, RunSpec

__all__ = ["MANAGED_LABEL", "Backend", "BindMount", "RunOutcome", "RunSpec"]
