"""Cases and file access for agents and people: one core behind Python, CLI, agent tools and HTTP.

    from scoperun.files import CaseFiles
    files = CaseFiles()
    files.cases()                                   # every case: files, size, last run
    files.list_files("Doe-MVA-2024", "Medical Records")
    files.read_document("Doe-MVA-2024", "MRI_report.pdf")   # parsed inside a container

Scoped to one case like a run (no symlink followed, special files refused), every access
audited; writes go through a staged change set (undo with `scoperun rollback`).
"""

from __future__ import annotations

from scoperun.audit.access import read_access_events, record_access
from scoperun.files.core import CaseFiles, sniff_kind
from scoperun.files.models import (
    CaseInfo,
    CaseList,
    DocumentText,
    FileEntry,
    FileListing,
    FileText,
    SearchHit,
    SearchResult,
    WriteResult,
)

__all__ = [
    "CaseFiles",
    "CaseInfo",
    "CaseList",
    "DocumentText",
    "FileEntry",
    "FileListing",
    "FileText",
    "SearchHit",
    "SearchResult",
    "WriteResult",
    "read_access_events",
    "record_access",
    "sniff_kind",
]
