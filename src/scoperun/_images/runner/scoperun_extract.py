"""Extract the text of case documents INSIDE a run's container (parsers are attack surface).

    python /opt/scoperun/extract.py --max-chars N [--out FILE] -- PATH [PATH ...]

Writes (to FILE, else stdout) one JSON object per PATH, one per line: {"path", "sha256", "size", "kind", "text",
"units", "truncated", "error"}. Text carries page/sheet markers ("--- page 3 ---"). A path is
opened without following symlinks; a file that is not regular is refused. Runs as the
container's non-root user on a read-only case; it never writes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import stat
import struct
import sys
import zipfile

MAX_INPUT = 256 * 1024 * 1024  # bytes read of one document; bigger ones are refused


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > MAX_INPUT:
            raise ValueError(f"{st.st_size} bytes: larger than the {MAX_INPUT} bytes a document may have")
        return fh.read(MAX_INPUT + 1)


def kind_of(path: str, data: bytes) -> str:
    """The document kind from its first bytes (the name only breaks ties between zip formats)."""
    lower = path.lower()
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return "binary"
        if "word/document.xml" in names:
            return "docx"
        if "xl/workbook.xml" in names:
            return "xlsx"
        return "zip"
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return "image"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    if b"\x00" not in data[:8192]:
        return "text"
    return "binary"


def _pdf(data: bytes) -> tuple[list[str], int]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    parts = []
    for i, page in enumerate(reader.pages, 1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - one broken page must not hide the others
            text = f"[page {i} could not be read: {type(exc).__name__}]"
        parts.append(f"--- page {i} ---\n{text.strip()}")
    return parts, len(reader.pages)


def _docx(data: bytes) -> tuple[list[str], int]:
    import docx

    document = docx.Document(io.BytesIO(data))
    lines = [p.text for p in document.paragraphs]
    for t, table in enumerate(document.tables, 1):
        lines.append(f"--- table {t} ---")
        lines.extend("\t".join(cell.text for cell in row.cells) for row in table.rows)
    return ["\n".join(lines).strip()], 1


def _xlsx(data: bytes, budget: int) -> tuple[list[str], int]:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    parts, used = [], 0
    for sheet in book.worksheets:
        rows = []
        for row in sheet.iter_rows(values_only=True):
            line = "\t".join("" if v is None else str(v) for v in row).rstrip("\t")
            rows.append(line)
            used += len(line) + 1
            if used > budget:  # a huge sheet: stop reading, the caller marks it truncated
                break
        parts.append(f"--- sheet {sheet.title} ---\n" + "\n".join(rows).rstrip())
        if used > budget:
            break
    return parts, len(book.sheetnames)


def _csv(data: bytes) -> tuple[list[str], int]:
    text = data.decode("utf-8-sig", "replace")
    try:
        dialect = csv.Sniffer().sniff(text[:4096])
        rows = ["\t".join(r) for r in csv.reader(io.StringIO(text), dialect)]
        return ["\n".join(rows)], 1
    except csv.Error:
        return [text], 1


def _image(data: bytes) -> tuple[list[str], int]:
    fmt, width, height = "unknown", None, None
    if data.startswith(b"\x89PNG"):
        fmt = "PNG"
        width, height = struct.unpack(">II", data[16:24])
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        fmt = "GIF"
        width, height = struct.unpack("<HH", data[6:10])
    elif data.startswith(b"\xff\xd8"):
        fmt = "JPEG"
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                break
            i += 2 + length
    lines = [f"image: {fmt}", f"width: {width}", f"height: {height}", f"bytes: {len(data)}"]
    return ["\n".join(lines)], 1


def extract(path: str, max_chars: int) -> dict:
    """One document's record (never raises: an error is part of the record)."""
    out: dict = {"path": path, "sha256": None, "size": None, "kind": None, "text": "", "units": 0,
                 "truncated": False, "error": None}
    try:
        data = _read(path)
        out["sha256"], out["size"] = hashlib.sha256(data).hexdigest(), len(data)
        kind = out["kind"] = kind_of(path, data)
        if kind == "pdf":
            parts, units = _pdf(data)
        elif kind == "docx":
            parts, units = _docx(data)
        elif kind == "xlsx":
            parts, units = _xlsx(data, max_chars)
        elif kind == "csv":
            parts, units = _csv(data)
        elif kind == "image":
            parts, units = _image(data)
        elif kind == "text":
            parts, units = [data.decode("utf-8", "replace")], 1
        else:
            raise ValueError(f"{kind} file: no text to extract")
        text = "\n\n".join(parts)
        out["units"] = units
        out["truncated"] = len(text) > max_chars or (kind == "xlsx" and len(text) >= max_chars)
        out["text"] = text[:max_chars]
    except Exception as exc:  # noqa: BLE001 - a hostile or broken document: report, never crash the batch
        out["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-chars", type=int, default=200_000)
    parser.add_argument("--out", default=None, help="write the JSON lines here instead of stdout")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    out = open(args.out, "w", encoding="ascii") if args.out else sys.stdout  # noqa: SIM115
    errors = 0
    try:
        for path in args.paths:
            record = extract(path, args.max_chars)
            errors += record["error"] is not None
            out.write(json.dumps(record, ensure_ascii=True) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out:
        print(f"extracted {len(args.paths) - errors} of {len(args.paths)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
