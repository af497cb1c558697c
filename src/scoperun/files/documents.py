"""Document text (PDF, DOCX, XLSX/CSV, image metadata) and search, with parsing kept off the host.

Parsers are attack surface: a hostile PDF must not run code on the host. Extraction runs the
runner image's `/opt/scoperun/extract.py` in an ordinary audited run (read-only case, no network,
the run's limits); its results are cached on the host by content hash, so a document is parsed
once whatever it is called and wherever it moves. Plain text files are searched on the host
(reading bytes is not parsing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoperun.atomicio import write_json_atomic
from scoperun.changes.safefs import CaseRoot, hash_fd
from scoperun.errors import FileAccessError
from scoperun.files.models import DocumentText, SearchHit, SearchResult

if TYPE_CHECKING:
    from scoperun.files.common import CaseAccess
    from scoperun.scope import Workspace

__all__ = ["DOCUMENT_SUFFIXES", "EXTRACTOR", "MAX_DOCUMENT_BYTES", "read_document", "search"]

EXTRACTOR = "/opt/scoperun/extract.py"  # shipped in the runner image (src/scoperun/_images/runner)
DOCUMENT_SUFFIXES = (".pdf", ".docx", ".xlsx", ".xlsm", ".csv", ".tsv", ".png", ".jpg", ".jpeg", ".gif")
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
MAX_CHARS = 200_000  # characters of text kept per document
MAX_BATCH = 100  # documents one search extracts (the rest: next search, once these are cached)
MAX_TEXT_FILE = 20 * 1024 * 1024  # plain files bigger than this are not searched
MAX_SEARCH_BYTES = 512 * 1024 * 1024
_MARKER = re.compile(r"^--- (page|sheet|table) (.+) ---$")


@cache
def _extractor_version() -> str:
    from scoperun.engine.images import dockerfile_dir

    source = (dockerfile_dir("runner") / "scoperun_extract.py").read_bytes()
    return hashlib.sha256(source + str(MAX_CHARS).encode()).hexdigest()[:12]


def _cache_file(files: CaseAccess, sha256: str) -> Path:
    from scoperun.audit.state import state_dir

    return state_dir(files.settings) / "documents" / sha256[:2] / f"{sha256}.{_extractor_version()}.json"


def _cached(files: CaseAccess, sha256: str) -> dict[str, Any] | None:
    try:
        cached: dict[str, Any] = json.loads(_cache_file(files, sha256).read_text())
        return cached
    except (OSError, ValueError):
        return None


def _store(files: CaseAccess, record: dict[str, Any]) -> None:
    if not record.get("sha256"):
        return
    target = _cache_file(files, record["sha256"])
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json_atomic(target, {k: record[k] for k in ("kind", "text", "units", "truncated", "error", "size",
                                                          "sha256")})
    except OSError:
        pass  # a cache: the document is parsed again next time


def _extract(files: CaseAccess, ws: Workspace, case: str, paths: list[str], requested_by: str | None,
             ) -> tuple[dict[str, dict[str, Any]], str]:
    """Run the extractor on `paths` (case-relative) in one container; return records by path and the run id."""
    from scoperun.audit.state import state_dir
    from scoperun.engine.base import BindMount
    from scoperun.executor import FixedProgram
    from scoperun.models import ExecutionRequest, Limits

    out_dir = state_dir(files.settings) / "extract" / secrets.token_hex(8)
    out_dir.mkdir(parents=True, mode=0o700)
    try:
        uid, _, gid = files.settings.container_user.partition(":")
        if os.geteuid() == 0:
            os.chown(out_dir, int(uid), int(gid or uid))  # the run's user writes its results here
        else:
            os.chmod(out_dir, 0o777)  # a private, random folder only this run knows
        program = FixedProgram(image=files.settings.image,
                               command=("python", EXTRACTOR, "--max-chars", str(MAX_CHARS), "--out",
                                        "/scoperun-out/documents.jsonl", "--"),
                               mounts=(BindMount(out_dir, "/scoperun-out", read_only=False),))
        request = ExecutionRequest(script="scoperun:extract-documents", case=case, args=paths, write_mode="read-only",
                                   network="none", limits=Limits(timeout=min(files.settings.timeout, 600)),
                                   requested_by=requested_by or "scoperun-files")
        result = files.executor.run_program(request, program)
        records: dict[str, dict[str, Any]] = {}
        try:
            with open(out_dir / "documents.jsonl", "rb") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and isinstance(rec.get("path"), str):
                        records[rec["path"]] = rec
        except OSError:
            pass
        if not records and not result.success and result.status.value == "error":
            from scoperun.errors import EngineError

            # The engine failed (unreachable, image missing): the same error, and exit code, as a run's.
            raise EngineError(f"the document extraction run {result.execution_id} could not run: {result.message}")
        if not records and not result.success:
            if EXTRACTOR in result.stderr.text and "No such file" in result.stderr.text:
                why = (f"the runner image {files.settings.image} has no document extractor ({EXTRACTOR}): it was "
                       f"built by an older scoperun; rebuild it with `scoperun image build` (or `make image`)")
            else:
                why = f"the extraction run {result.execution_id} ended {result.status.value}: {result.message}"
            raise FileAccessError(f"rejected (extraction-failed): {why}", rule="extraction-failed", value=case)
        return records, result.execution_id
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def read_document(files: CaseAccess, case: str, path: str, *, requested_by: str | None = None) -> DocumentText:
    """Text of one document with page/sheet markers, extracted in a container unless cached."""
    with files._audited("read_document", case, path, requested_by) as ws:
        rel = files._rel(path)
        shown = files._show(rel)
        with CaseRoot(ws.case_dir(case)) as root, files._open_file(root, rel) as (fd, st):
            if st.st_size > MAX_DOCUMENT_BYTES:
                raise FileAccessError(f"rejected (too-large): {shown!r} has {st.st_size:,} bytes; documents up to "
                                      f"{MAX_DOCUMENT_BYTES:,} bytes are read", rule="too-large", value=shown)
            sha256, size = hash_fd(fd)
        try:
            arg = rel.decode("utf-8")
        except UnicodeDecodeError:
            raise FileAccessError(f"rejected (name-not-utf8): {shown!r} has a name that is not UTF-8; rename it to "
                                  f"read it", rule="name-not-utf8", value=shown) from None
        record, execution_id = _cached(files, sha256), None
        cached = record is not None
        if record is None:
            records, execution_id = _extract(files, ws, case, [arg], requested_by)
            record = records.get(arg) or {"error": "the extractor returned nothing for it"}
            if record.get("sha256") and record["sha256"] != sha256:
                raise FileAccessError(f"rejected (changed): {shown!r} changed while it was read; try again",
                                      rule="changed", value=shown)
            _store(files, record)
        if record.get("error"):
            raise FileAccessError(f"rejected (unreadable-document): {shown!r} could not be read as a document "
                                  f"({record['error']})", rule="unreadable-document", value=shown)
        text = files.redactor.redact(record.get("text") or "")
        doc = DocumentText(case=case, path=shown, kind=record.get("kind") or "?", size=size, sha256=sha256,
                           units=record.get("units") or 0, text=text, truncated=bool(record.get("truncated")),
                           cached=cached, execution_id=execution_id)
        files._event(ws, "read_document", case, shown, requested_by, nbytes=size, sha256=sha256, cached=cached,
                     execution_id=execution_id)
        return doc


_DOCUMENT_SUFFIXES_B = tuple(s.encode() for s in DOCUMENT_SUFFIXES)


def _is_document(name: bytes) -> bool:
    return name.lower().endswith(_DOCUMENT_SUFFIXES_B)


def _read_all(fd: int, size: int) -> bytes:
    """The file's bytes, asking for its size (a read of the 20 MB cap would allocate it every time)."""
    chunks, want = [], min(size, MAX_TEXT_FILE) + 1
    while want > 0 and (chunk := os.read(fd, want)):
        chunks.append(chunk)
        want -= len(chunk)
    return b"".join(chunks)[:MAX_TEXT_FILE]


def _find(text: str, needle: str, path: str, hits: list[SearchHit], limit: int, *, document: bool,
          redact: Callable[[str], str]) -> None:
    if needle not in text.casefold():
        return
    unit: int | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if document and (m := _MARKER.match(line)):
            if m.group(1) in {"page", "sheet"}:
                unit = int(m.group(2)) if m.group(2).isdigit() else (unit or 0) + 1
            continue
        at = line.casefold().find(needle)
        if at < 0:
            continue
        start = max(0, at - 80)
        snippet = ("…" if start else "") + line[start:at + len(needle) + 80].strip()
        hits.append(SearchHit(path=path, line=number, page=unit if document else None, snippet=redact(snippet[:240])))
        if len(hits) >= limit:
            return


def search(files: CaseAccess, case: str, query: str, *, glob: str | None = None, limit: int = 50,
           requested_by: str | None = None) -> SearchResult:
    """Case-insensitive search of `query` in text files and document text; at most `limit` hits."""
    from scoperun.files.common import Walk, sniff_kind

    limit = max(1, min(limit, 500))
    with files._audited("search", case, glob, requested_by) as ws:
        needle = query.casefold().strip()
        if not needle or len(needle) > 500 or "\x00" in needle:
            raise FileAccessError("rejected (query): give a search phrase of 1 to 500 characters", rule="query",
                                  value=query[:100])
        needle_bytes = needle.encode("ascii") if needle.isascii() else None
        hits: list[SearchHit] = []
        skipped: list[str] = []
        searched = docs = spent = 0
        pending: list[tuple[str, str]] = []  # (path, sha256) of documents without cached text
        with CaseRoot(ws.case_dir(case)) as root:
            walk = Walk(os.dup(root.fd), b"", recursive=True, pattern=glob)
            try:
                for rel, st, _, dfd, name in walk:
                    if len(hits) >= limit or not stat.S_ISREG(st.st_mode):
                        if len(hits) >= limit:
                            break
                        continue
                    shown = files._show(rel)
                    document = _is_document(name)
                    if st.st_size > (MAX_DOCUMENT_BYTES if document else MAX_TEXT_FILE):
                        skipped.append(f"{shown}: {st.st_size:,} bytes, too large to search")
                        continue
                    if spent + st.st_size > MAX_SEARCH_BYTES:
                        skipped.append(f"stopped after reading {spent:,} bytes; narrow the search with glob")
                        break
                    try:
                        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
                    except OSError:
                        continue
                    try:
                        if not stat.S_ISREG(os.fstat(fd).st_mode):
                            continue
                        spent += st.st_size
                        if document:
                            sha256, _ = hash_fd(fd)
                            record = _cached(files, sha256)
                            if record is None:
                                try:
                                    pending.append((rel.decode("utf-8"), shown))
                                except UnicodeDecodeError:
                                    skipped.append(f"{shown}: name is not UTF-8, not extracted")
                                continue
                            docs += 1
                            _find(record.get("text") or "", needle, shown, hits, limit, document=True,
                                  redact=files.redactor.redact)
                            continue
                        data = _read_all(fd, st.st_size)
                    finally:
                        os.close(fd)
                    if sniff_kind(data[:8192], shown) is not None:
                        continue  # binary, not a document we extract
                    searched += 1
                    if needle_bytes is not None and data.isascii() and needle_bytes not in data.lower():
                        continue  # the common case, decided without decoding
                    _find(data.decode("utf-8", "replace"), needle, shown, hits, limit, document=False,
                          redact=files.redactor.redact)
            finally:
                walk.close()
            if walk.stopped:
                skipped.append(walk.stopped)
        if pending and len(hits) < limit:
            batch = pending[:MAX_BATCH]
            if len(pending) > len(batch):
                skipped.append(f"{len(pending) - len(batch)} documents not extracted yet (at most {MAX_BATCH} per "
                               f"search); search again to include them")
            records, _ = _extract(files, ws, case, [p for p, _ in batch], requested_by) if batch else ({}, None)
            for arg, shown in batch:
                record = records.get(arg)
                if record is None:
                    continue
                _store(files, record)
                if record.get("error"):
                    skipped.append(f"{shown}: {record['error']}")
                    continue
                docs += 1
                if len(hits) < limit:
                    _find(record.get("text") or "", needle, shown, hits, limit, document=True,
                          redact=files.redactor.redact)
        result = SearchResult(case=case, query=query, hits=hits[:limit], files_searched=searched,
                              documents_searched=docs, truncated=len(hits) >= limit, skipped=skipped[:50])
        files._event(ws, "search", case, glob, requested_by, nbytes=spent, query=files.redactor.redact(query)[:200],
                     hits=len(result.hits))
        return result

