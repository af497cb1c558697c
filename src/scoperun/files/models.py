"""Typed answers of the case and file operations (what crosses every interface)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from scoperun.changeset import ChangeSet

__all__ = ["CaseInfo", "CaseList", "DocumentText", "FileEntry", "FileListing", "FileText", "SearchHit",
           "SearchResult", "WriteResult"]

EntryKind = Literal["file", "dir", "symlink", "other"]


class CaseInfo(BaseModel):
    """One case folder: its size (from a cached count) and its last run (from the audit index)."""

    name: str
    files: int | None = Field(None, description="Regular files in the case (cached; None when not counted yet).")
    bytes: int | None = Field(None, description="Their total size in bytes.")
    last_modified: datetime | None = Field(None, description="Newest modification time of anything in the case.")
    counted_at: datetime | None = Field(None, description="When files/bytes were counted (the cache's age).")
    count_capped: bool = Field(False, description="True when the count stopped at the walk cap (at least this many).")
    last_run_id: str | None = None
    last_run_status: str | None = None
    last_run_at: datetime | None = None


class CaseList(BaseModel):
    """The cases matching a prefix."""

    cases: list[CaseInfo]
    total: int = Field(description="Cases matching, before the page limit.")
    truncated: bool = False


class FileEntry(BaseModel):
    """One entry of a listing; `path` is relative to the case (names with secrets redacted)."""

    path: str
    type: EntryKind
    size: int
    modified: datetime
    target: str | None = Field(None, description="A symlink's target (shown, never followed).")


class FileListing(BaseModel):
    """A bounded page of a folder's entries."""

    case: str
    path: str
    entries: list[FileEntry]
    offset: int = 0
    more: bool = Field(False, description="More entries follow: call again with offset=offset+len(entries).")
    scanned: int = Field(0, description="Entries looked at to answer.")
    stopped: str | None = Field(None, description="Why the walk stopped early (depth or scan cap), if it did.")


class FileText(BaseModel):
    """Part of a text file, with an honest account of what was left out."""

    case: str
    path: str
    size: int
    offset: int
    text: str
    truncated: bool = Field(description="True when the file goes on after this part.")
    next_offset: int | None = Field(None, description="Offset to read the next part from.")


class DocumentText(BaseModel):
    """The text of a document extracted inside a container, with page/sheet markers."""

    case: str
    path: str
    kind: str
    size: int
    sha256: str
    units: int = Field(0, description="Pages (PDF) or sheets (XLSX); 1 for other kinds.")
    text: str
    truncated: bool = False
    cached: bool = Field(False, description="True when the text came from the content-hash cache.")
    execution_id: str | None = Field(None, description="The audited container run that extracted it.")


class SearchHit(BaseModel):
    """One match: where it is and the text around it."""

    path: str
    line: int
    page: int | None = Field(None, description="Page (PDF) or sheet number the line is on, for documents.")
    snippet: str


class SearchResult(BaseModel):
    """Matches of a query in a case, bounded."""

    case: str
    query: str
    hits: list[SearchHit]
    files_searched: int
    documents_searched: int
    truncated: bool = Field(False, description="True when the hit limit was reached.")
    skipped: list[str] = Field(default_factory=list, description="Why some files were not searched.")


class WriteResult(BaseModel):
    """A write or upload: staged as a change set like a run's, applied or held for review."""

    case: str
    path: str
    bytes: int
    sha256: str
    execution_id: str
    change_set: ChangeSet
