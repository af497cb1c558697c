"""Change sets: what every run changed in its case, staged runs, apply, discard, rollback, gc.

    from scoperun.changes import apply_changes, rollback_changes, load_change_set, gc_staging

Modules: `model` (typed change sets), `snapshot` (lstat listings, direct-mode diff), `overlay`
(staging folders, reading an upper layer), `safefs` (no-follow file operations inside a case),
`apply` (conflicts, apply, discard), `journal` (pre-images, rollback), `manage` (rollback,
inspection, gc), `store` (state files, audit events), `tracker` (the executor's hook).
Only `model` is imported eagerly: `scoperun.models` depends on it.
"""

from __future__ import annotations

from typing import Any

from scoperun.changeset import Change, ChangeAction, ChangeSet, ChangeSetStatus, ChangeTotals

__all__ = [
    "Change",
    "ChangeAction",
    "ChangeSet",
    "ChangeSetStatus",
    "ChangeTotals",
    "apply_changes",
    "discard_changes",
    "gc_staging",
    "load_change_set",
    "rollback_changes",
    "text_diffs",
]

_LAZY = {
    "apply_changes": "apply",
    "discard_changes": "apply",
    "gc_staging": "manage",
    "load_change_set": "manage",
    "rollback_changes": "manage",
    "text_diffs": "manage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
