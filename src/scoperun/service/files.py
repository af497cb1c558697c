"""HTTP routes for cases and files: /v1/cases and /v1/cases/{case}/... over `scoperun.files.CaseFiles`.

Reads need the `read` role, writes the `run` role. Paths inside a case go in the `path` query
parameter. Refusals are problem documents: an unknown case is 404 `unknown-case` (with close
names), a missing file 404 `file-not-found`, a path leaving the case or a symlink 403
`outside-scope`, a binary, special or too-large file 422 `file-refused`; each carries the
refusal's `rule`. Every access is audited under `http/<token name>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response

from scoperun.errors import FileAccessError, ScopeError
from scoperun.files import CaseFiles, CaseList, DocumentText, FileListing, FileText, SearchResult, WriteResult
from scoperun.service.deps import Reader, Runner, Service, ServiceDep
from scoperun.service.problems import Problem

__all__ = ["MAX_UPLOAD", "install", "router"]

router = APIRouter(prefix="/v1/cases", tags=["cases and files"])
MAX_UPLOAD = 512 * 1024 * 1024  # bytes of one PUT body
T = TypeVar("T")
PathQ = Annotated[str, Query(description="Path inside the case, e.g. 'Medical Records/MRI.pdf'.")]


def _problem(exc: ScopeError) -> Problem:
    rule = exc.rule
    if rule == "unknown-case":
        return Problem(404, "unknown-case", str(exc), rule=rule)
    if rule == "not-found":
        return Problem(404, "file-not-found", str(exc), rule=rule)
    if isinstance(exc, FileAccessError):
        return Problem(422, "file-refused", str(exc), rule=rule)
    return Problem(403, "outside-scope", str(exc), rule=rule)


async def _call(func: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(func)
    except ScopeError as exc:
        raise _problem(exc) from None


def _files(service: Service) -> CaseFiles:
    files = service.extras.get("case_files")
    if files is None:
        files = service.extras["case_files"] = CaseFiles(service.executor)
    return files


def _who(principal: Any) -> str:
    return f"http/{principal.name}"


@router.get("", summary="Cases: file count, size, last change and last run")
async def list_cases(service: ServiceDep, caller: Reader, prefix: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> CaseList:
    return await _call(lambda: _files(service).cases(prefix, limit=limit, requested_by=_who(caller)))


@router.get("/{case}/files", summary="A page of a folder's entries (recursive on request)")
async def list_files(service: ServiceDep, caller: Reader, case: str, path: str = ".", pattern: str | None = None,
                     recursive: bool = False, offset: Annotated[int, Query(ge=0)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> FileListing:
    return await _call(lambda: _files(service).list_files(case, path, pattern=pattern, recursive=recursive,
                                                          offset=offset, limit=limit, requested_by=_who(caller)))


@router.get("/{case}/text", summary="Part of a text file (binary files refused with their type)")
async def read_text(service: ServiceDep, caller: Reader, case: str, path: PathQ,
                    offset: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=1024 * 1024)] = 64 * 1024) -> FileText:
    return await _call(lambda: _files(service).read_file(case, path, offset=offset, limit=limit,
                                                         requested_by=_who(caller)))


@router.get("/{case}/document", summary="Text of a PDF, DOCX, XLSX/CSV or image metadata (parsed in a container)")
async def read_document(service: ServiceDep, caller: Reader, case: str, path: PathQ) -> DocumentText:
    return await _call(lambda: _files(service).read_document(case, path, requested_by=_who(caller)))


@router.get("/{case}/search", summary="Search text files and documents for a phrase")
async def search(service: ServiceDep, caller: Reader, case: str,
                 q: Annotated[str, Query(min_length=1, max_length=500, description="The phrase.")],
                 glob: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> SearchResult:
    return await _call(lambda: _files(service).search(case, q, glob=glob, limit=limit, requested_by=_who(caller)))


@router.get("/{case}/content", summary="Download a file's exact bytes", response_class=Response)
async def download(service: ServiceDep, caller: Reader, case: str, path: PathQ) -> Response:
    data = await _call(lambda: _files(service).read_bytes(case, path, requested_by=_who(caller)))
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": "attachment", "X-Content-Type-Options": "nosniff"})


@router.put("/{case}/content", status_code=201, summary="Upload a file through a staged change set (undoable)")
async def upload(request: Request, service: ServiceDep, caller: Runner, case: str, path: PathQ) -> WriteResult:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD:
        raise Problem(413, "file-refused", f"the body has {int(declared):,} bytes; at most {MAX_UPLOAD:,} are "
                                           f"accepted in one upload", rule="too-large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise Problem(413, "file-refused", f"the body is larger than {MAX_UPLOAD:,} bytes", rule="too-large")
        chunks.append(chunk)
    data = b"".join(chunks)
    return await _call(lambda: _files(service).write_file(case, path, data, requested_by=_who(caller)))


def install(app: FastAPI, service: Service) -> None:
    """Add the cases and files routes to the app."""
    app.include_router(router)
