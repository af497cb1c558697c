"""The case and file tools for agents, as markdown over `scoperun.files.CaseFiles`.

list_cases, list_files, read_file, read_document, search_files and write_file: each returns a
ToolReply (markdown, `ok`, the typed result). Refusals (unknown case, `..`, symlink, binary
file, ...) come back as text naming the reason and what to do, never as an exception.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from scoperun.config import format_size
from scoperun.files import CaseFiles
from scoperun.tools.core import ToolReply, _guard
from scoperun.tools.render import _inline as inline
from scoperun.tools.render import change_status_line, fence, redactor_for

if TYPE_CHECKING:
    from scoperun.executor import Executor

__all__ = ["ASYNC", "FILE_TOOLS", "list_cases", "list_files", "read_document", "read_file", "search_files",
           "write_file"]

FILE_TOOLS = ("list_cases", "list_files", "read_file", "read_document", "search_files", "write_file")
DEFAULT_REQUESTED_BY = "agent"
_SHOWN_CHARS = 20_000  # characters of a file or document shown in one reply


def _files(executor: Executor) -> CaseFiles:
    return CaseFiles(executor)


def list_cases(executor: Executor, prefix: str | None = None, *, requested_by: str | None = None) -> ToolReply:
    """Every case (or those starting with `prefix`): files, size, last change, last run."""
    def produce() -> ToolReply:
        listed = _files(executor).cases(prefix or None, limit=200, requested_by=requested_by or DEFAULT_REQUESTED_BY)
        r = redactor_for(executor.settings)
        if not listed.cases:
            return ToolReply(f"No case{' starts with ' + inline(prefix, r) if prefix else ''} in this workspace.",
                             ok=True, result=listed)
        lines = [f"**Cases:** {listed.total:,}" + (f" starting with {inline(prefix, r)!r}" if prefix else ""), "",
                 "| case | files | size | last modified | last run |", "| --- | --- | --- | --- | --- |"]
        for c in listed.cases:
            run = "never"
            if c.last_run_status and c.last_run_at:
                run = f"{c.last_run_status} ({c.last_run_at:%Y-%m-%d %H:%M})"
            files = "?" if c.files is None else f"{c.files:,}{'+' if c.count_capped else ''}"
            modified = f"{c.last_modified:%Y-%m-%d}" if c.last_modified else "?"
            lines.append(f"| {inline(c.name, r).replace('|', '¦')} | {files} | {format_size(c.bytes)} | {modified} | {run} |")
        if listed.truncated:
            lines.append(f"\n(showing {len(listed.cases)} of {listed.total:,}; pass a prefix to narrow the list)")
        return ToolReply("\n".join(lines), ok=True, result=listed)

    return _guard(executor, "list the cases", produce)


def list_files(executor: Executor, case_name: str, path: str = ".", pattern: str | None = None,
               recursive: bool = False, offset: int = 0, *, requested_by: str | None = None) -> ToolReply:
    """A page of the files and folders under `path` in one case."""
    def produce() -> ToolReply:
        listing = _files(executor).list_files(case_name, path, pattern=pattern, recursive=recursive, offset=offset,
                                              limit=200, requested_by=requested_by or DEFAULT_REQUESTED_BY)
        r = redactor_for(executor.settings)
        head = (f"**Files in {inline(case_name, r)}/{inline(listing.path, r)}**" + (" (recursive)" if recursive else "")
                + (f" matching {inline(pattern, r)!r}" if pattern else ""))
        lines = [head, ""]
        for e in listing.entries:
            if e.type == "dir":
                lines.append(f"- {inline(e.path, r)}/")
            elif e.type == "symlink":
                lines.append(f"- {inline(e.path, r)} → {inline(e.target, r)} (symlink; never followed)")
            else:
                lines.append(f"- {inline(e.path, r)} ({format_size(e.size)}, {e.modified:%Y-%m-%d}"
                             + (", special file" if e.type == "other" else "") + ")")
        if not listing.entries:
            lines.append("(nothing here)")
        if listing.more:
            lines.append(f"\nMore entries follow: call again with offset={listing.offset + len(listing.entries)}.")
        if listing.stopped:
            lines.append(f"\nNote: {listing.stopped}.")
        return ToolReply("\n".join(lines), ok=True, result=listing)

    return _guard(executor, "list the files", produce)


def read_file(executor: Executor, case_name: str, path: str, offset: int = 0, *,
              requested_by: str | None = None) -> ToolReply:
    """Text of one file in a case, from byte `offset`; binary files are refused with their type."""
    def produce() -> ToolReply:
        part = _files(executor).read_file(case_name, path, offset=offset, limit=_SHOWN_CHARS,
                                          requested_by=requested_by or DEFAULT_REQUESTED_BY)
        r = redactor_for(executor.settings)
        head = f"**{inline(case_name, r)}/{inline(part.path, r)}** ({format_size(part.size)})"
        if part.offset:
            head += f", from byte {part.offset:,}"
        lines = [head, fence(r.redact(part.text))]
        if part.truncated:
            lines.append(f"TRUNCATED: the file goes on after byte {part.next_offset:,} of {part.size:,}; call "
                         f"read_file again with offset={part.next_offset} for the next part.")
        return ToolReply("\n".join(lines), ok=True, result=part)

    return _guard(executor, "read the file", produce)


def read_document(executor: Executor, case_name: str, path: str, *, requested_by: str | None = None) -> ToolReply:
    """Text of a PDF/DOCX/XLSX/CSV (or an image's metadata), extracted in an isolated container."""
    def produce() -> ToolReply:
        doc = _files(executor).read_document(case_name, path, requested_by=requested_by or DEFAULT_REQUESTED_BY)
        r = redactor_for(executor.settings)
        unit = {"pdf": "pages", "xlsx": "sheets"}.get(doc.kind)
        head = f"**{inline(case_name, r)}/{inline(doc.path, r)}** ({doc.kind.upper()}, {format_size(doc.size)}" + (
            f", {doc.units} {unit}" if unit else "") + ")"
        text = doc.text
        lines = [head, fence(text[:_SHOWN_CHARS] if text else "(no text: e.g. a scanned PDF without a text layer)")]
        if len(text) > _SHOWN_CHARS or doc.truncated:
            lines.append(f"TRUNCATED: showing the first {min(len(text), _SHOWN_CHARS):,} characters; use "
                         f"search_files to find a passage, or a custom script to process the whole document.")
        return ToolReply("\n".join(lines), ok=True, result=doc)

    return _guard(executor, "read the document", produce)


def search_files(executor: Executor, case_name: str, query: str, glob: str | None = None, *,
                 requested_by: str | None = None) -> ToolReply:
    """Case-insensitive search of a phrase in a case's text files and documents."""
    def produce() -> ToolReply:
        found = _files(executor).search(case_name, query, glob=glob, limit=50,
                                        requested_by=requested_by or DEFAULT_REQUESTED_BY)
        r = redactor_for(executor.settings)
        head = (f"**Search for {inline(query, r)!r} in {inline(case_name, r)}**: {len(found.hits)} match"
                f"{'es' if len(found.hits) != 1 else ''} ({found.files_searched} text files and "
                f"{found.documents_searched} documents searched)")
        lines = [head, ""]
        for h in found.hits:
            where = f"page {h.page}, " if h.page is not None else ""
            lines.append(f"- {inline(h.path, r)} ({where}line {h.line}): {inline(h.snippet, r)}")
        if found.truncated:
            lines.append("\nMore matches exist: narrow the search (a longer phrase, or glob such as \"*.pdf\").")
        for note in found.skipped[:10]:
            lines.append(f"Note: {inline(note, r)}")
        return ToolReply("\n".join(lines), ok=True, result=found)

    return _guard(executor, "search the files", produce)


def write_file(executor: Executor, case_name: str, path: str, content: str, *,
               requested_by: str | None = None) -> ToolReply:
    """Write a text file into a case through a staged change set (applied or held for review)."""
    def produce() -> ToolReply:
        done = _files(executor).write_file(case_name, path, content, requested_by=requested_by or DEFAULT_REQUESTED_BY)
        r = redactor_for(executor.settings)
        cs = done.change_set
        text = (f"**Wrote {inline(case_name, r)}/{inline(done.path, r)}** ({format_size(done.bytes)})\n"
                f"Changes to the case: {inline(cs.summary, r)} — {inline(change_status_line(cs), r)}\n"
                f"Audit record: {executor.settings.audit_dir}/{done.execution_id}.json")
        return ToolReply(text, ok=cs.status.value in {"applied", "staged", "empty"}, result=done)

    return _guard(executor, "write the file", produce)


# Async twins by tool name: the file I/O (and a document's container run) happens on a worker thread.
def _async_twin(func: Any) -> Any:
    async def twin(*args: Any, **kwargs: Any) -> ToolReply:
        return await asyncio.to_thread(func, *args, **kwargs)

    twin.__doc__ = f"Async `{func.__name__}`: the work happens on a worker thread."
    return twin


ASYNC: dict[str, Any] = {name: _async_twin(globals()[name]) for name in FILE_TOOLS}
