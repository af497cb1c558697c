"""The change set of one run: typed entries, totals and a one-line summary.

Paths are relative to the case and handled as bytes inside scoperun (a case may hold names that
are not UTF-8). At the boundary a name is stored as text when it is valid UTF-8; otherwise `path`
holds a readable rendering (`\\xff` escapes) and `path_b64` the exact bytes, base64-encoded, and
the bytes are what every operation uses.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scoperun.policies import ApplyPolicy, WriteMode

__all__ = [
    "Change",
    "ChangeAction",
    "ChangeSet",
    "ChangeSetStatus",
    "ChangeTotals",
    "EntryType",
    "StatKey",
    "WriteMode",
    "ApplyPolicy",
    "decode_name",
    "encode_name",
]

EntryType = Literal["file", "dir", "symlink", "other"]


class ChangeAction(StrEnum):
    """What happened to one path."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"
    MODE_CHANGED = "mode_changed"


class ChangeSetStatus(StrEnum):
    """Where a change set stands."""

    EMPTY = "empty"  # the run changed nothing
    STAGED = "staged"  # kept for review: apply or discard
    CONFLICT = "conflict"  # kept staged: the case changed under it since the run started
    APPLIED = "applied"
    DISCARDED = "discarded"
    ROLLED_BACK = "rolled_back"
    RECORDED = "recorded"  # direct mode: written in place, recorded, no undo


def encode_name(raw: bytes) -> tuple[str, str | None]:
    """Text for a name, plus its base64 bytes when the name is not valid UTF-8."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")


def decode_name(text: str, b64: str | None) -> bytes:
    """The exact bytes of a name stored by `encode_name`."""
    return base64.b64decode(b64) if b64 is not None else text.encode("utf-8")


# (type, size, mtime_ns) of a path when the run started; None = absent. Compared before applying.
StatKey = tuple[str, int, int]


class Change(BaseModel):
    """One changed path of the case."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Relative to the case; readable rendering when not UTF-8.")
    path_b64: str | None = Field(None, description="Exact name bytes (base64) when the name is not UTF-8.")
    action: ChangeAction
    type: EntryType = Field(description="Type after the run (before it, for deletions).")
    size_before: int | None = None
    size_after: int | None = None
    sha256_before: str | None = Field(None, description="None when unknown (direct mode) or not a file.")
    sha256_after: str | None = None
    mode_before: int | None = Field(None, description="Permission bits (e.g. 0o644 = 420).")
    mode_after: int | None = None
    target: str | None = Field(None, description="Symlink target (recorded, never followed).")
    target_b64: str | None = None
    target_before: str | None = None
    hardlink_to: str | None = Field(None, description="Added as a hard link of this other added path.")
    renamed_from: str | None = Field(None, description="Same content (or inode) as this deleted path.")
    start: StatKey | None = Field(None, description="(type, size, mtime_ns) when the run started; None = absent.")

    @property
    def raw_path(self) -> bytes:
        """The path's exact bytes."""
        return decode_name(self.path, self.path_b64)

    @property
    def raw_target(self) -> bytes | None:
        """The symlink target's exact bytes."""
        return None if self.target is None else decode_name(self.target, self.target_b64)


class ChangeTotals(BaseModel):
    """Counts and byte totals of a change set."""

    files_added: int = 0
    files_modified: int = 0
    files_deleted: int = 0
    dirs_added: int = 0
    dirs_removed: int = 0
    links_added: int = 0
    links_changed: int = 0
    links_deleted: int = 0
    mode_changes: int = 0
    renames: int = 0
    other: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0

    @property
    def count(self) -> int:
        """Number of changed paths."""
        return (self.files_added + self.files_modified + self.files_deleted + self.dirs_added + self.dirs_removed
                + self.links_added + self.links_changed + self.links_deleted + self.mode_changes + self.other)


class ChangeSet(BaseModel):
    """What one run changed in its case, and whether it reached the case."""

    model_config = ConfigDict(extra="forbid")

    execution_id: str
    case: str
    mode: Literal["staged", "direct"]
    status: ChangeSetStatus
    summary: str = ""
    totals: ChangeTotals = Field(default_factory=ChangeTotals)
    entries: list[Change] = Field(default_factory=list)
    truncated: bool = Field(False, description="True when `entries` was capped; totals always count everything.")
    complete: bool = Field(True, description="False when the host could not read every change (too deep, "
                           "unreadable, post_run_budget spent): never applied by policy, only with --force.")
    conflicts: list[str] = Field(default_factory=list, description="Paths changed in the case since the run started.")
    note: str = Field("", description="Why the changes were (not) applied, and what to do next.")
    journal: str | None = Field(None, description="Journal folder (relative to the workspace) once applied.")

    def capped(self, limit: int) -> ChangeSet:
        """A copy listing at most `limit` entries (totals unchanged)."""
        if len(self.entries) <= limit:
            return self.model_copy()
        return self.model_copy(update={"entries": self.entries[:limit], "truncated": True})


def compute_totals(entries: list[Change]) -> ChangeTotals:
    """Count entries by kind and bytes written or removed."""
    t = ChangeTotals()
    for e in entries:
        if e.renamed_from and e.type == "file":
            t.renames += 1
        if e.action is ChangeAction.MODE_CHANGED:
            t.mode_changes += 1
            continue
        field = {"file": "files", "dir": "dirs", "symlink": "links", "other": "other"}[e.type]
        if field == "other":
            t.other += 1
            continue
        suffix = {ChangeAction.ADDED: "added", ChangeAction.MODIFIED: "modified" if field == "files" else "changed",
                  ChangeAction.DELETED: "removed" if field == "dirs" else "deleted"}[e.action]
        name = f"{field}_{suffix}"
        if hasattr(t, name):
            setattr(t, name, getattr(t, name) + 1)
        if e.type == "file":
            if e.action is not ChangeAction.DELETED:
                t.bytes_added += e.size_after or 0
            if e.action is not ChangeAction.ADDED:
                t.bytes_removed += e.size_before or 0
    return t


def summarize(t: ChangeTotals) -> str:
    """One line such as '3 files added, 1 modified, 1 folder removed'."""
    parts: list[str] = []

    def add(n: int, one: str, many: str) -> None:
        if n:
            parts.append(f"{n} {one if n == 1 else many}")

    # A rename is kept as a delete plus an add (with renamed_from); say it once, as a rename.
    files = [(max(t.files_added - t.renames, 0), "added"), (t.files_modified, "modified"),
             (max(t.files_deleted - t.renames, 0), "deleted")]
    first = True
    for n, verb in files:
        if n:
            parts.append(f"{n} {'file' if n == 1 else 'files'} {verb}" if first else f"{n} {verb}")
            first = False
    if t.renames:
        noun = ("file " if t.renames == 1 else "files ") if first else ""
        parts.append(f"{t.renames} {noun}renamed")
    add(t.dirs_added, "folder added", "folders added")
    add(t.dirs_removed, "folder removed", "folders removed")
    add(t.links_added + t.links_changed + t.links_deleted, "symlink changed", "symlinks changed")
    add(t.mode_changes, "mode change", "mode changes")
    add(t.other, "special file", "special files")
    return ", ".join(parts) if parts else "no changes"
