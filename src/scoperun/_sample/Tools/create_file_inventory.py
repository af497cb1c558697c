#!/usr/bin/env python3
"""Write an inventory of every file in the current directory (a case folder).

For each file: relative path, size, sha256, modified time (UTC), type (libmagic when
python-magic is installed, else by extension) and, for PDFs, the page count (when pypdf is
installed). Symlinks are listed but never followed. The inventory's own output file is skipped.

usage: create_file_inventory.py [--format {md,json,csv}] [--output FILE] [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import mimetypes
import os
import stat
import sys
import tempfile

try:  # optional: better type detection
    import magic  # type: ignore[import-not-found]
except ImportError:  # also raised by python-magic when libmagic itself is missing
    magic = None

try:  # optional: PDF page counts
    import pypdf  # type: ignore[import-not-found]
except ImportError:
    pypdf = None

FIELDS = ["path", "size", "sha256", "modified", "type", "pages"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="create_file_inventory.py",
        description="Inventory the files of the current directory (the case folder).",
    )
    parser.add_argument("--format", choices=["md", "json", "csv"], default="md", help="output format (default: md)")
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the inventory to FILE, relative to the current directory (default: print to stdout)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    args = parser.parse_args(argv)
    if args.output is not None:
        if not args.output.strip():
            parser.error("--output needs a file name")
        if os.path.isdir(args.output):
            parser.error(f"--output {args.output!r} is a directory; give a file name")
    return args


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    # O_NOFOLLOW: a file swapped for a symlink after the walk must not be followed either.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_type(path: str) -> str:
    if magic is not None:
        try:
            return magic.from_file(path, mime=True)
        except Exception:
            pass
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def pdf_pages(path: str, kind: str) -> int | None:
    if pypdf is None or not (kind == "application/pdf" or path.lower().endswith(".pdf")):
        return None
    try:
        return len(pypdf.PdfReader(path).pages)
    except Exception:
        return None


def collect(skip: str | None) -> list[dict]:
    entries: list[dict] = []
    for top, dirs, names in os.walk(".", followlinks=False):
        dirs.sort()
        for name in sorted(names) + sorted(d for d in dirs if os.path.islink(os.path.join(top, d))):
            full = os.path.join(top, name)
            rel = os.path.relpath(full, ".")
            if skip is not None and os.path.abspath(full) == skip:
                continue
            info = os.lstat(full)
            modified = dt.datetime.fromtimestamp(info.st_mtime, dt.UTC)
            entry = {
                "path": rel,
                "size": info.st_size,
                "sha256": None,
                "modified": modified.isoformat(timespec="seconds"),
                "type": None,
                "pages": None,
            }
            if stat.S_ISLNK(info.st_mode):
                entry["type"] = "symlink -> " + os.readlink(full)
            elif stat.S_ISREG(info.st_mode):
                try:
                    entry["sha256"] = sha256_of(full)
                except OSError as exc:
                    entry["type"] = f"unreadable ({exc.strerror})"
                else:
                    entry["type"] = file_type(full)
                    entry["pages"] = pdf_pages(full, entry["type"])
            else:
                entry["type"] = "special"
            entries.append(entry)
    entries.sort(key=lambda e: e["path"])
    return entries


def render(entries: list[dict], fmt: str) -> str:
    if fmt == "json":
        doc = {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "root": os.path.basename(os.getcwd()),
            "file_count": len(entries),
            "total_size": sum(e["size"] for e in entries),
            "files": entries,
        }
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for entry in entries:
            writer.writerow({k: "" if entry[k] is None else entry[k] for k in FIELDS})
        return out.getvalue()
    lines = [
        f"# File inventory: {os.path.basename(os.getcwd())}",
        "",
        f"{len(entries)} files, {sum(e['size'] for e in entries)} bytes in total.",
        "",
        "| Path | Size | Type | Pages | Modified (UTC) | SHA-256 |",
        "|---|---:|---|---:|---|---|",
    ]
    for e in entries:
        path = e["path"].replace("|", "\\|")
        pages = "" if e["pages"] is None else str(e["pages"])
        digest = (e["sha256"] or "")[:16]
        lines.append(f"| {path} | {e['size']} | {e['type']} | {pages} | {e['modified']} | {digest} |")
    return "\n".join(lines) + "\n"


def write_atomically(target: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".inventory-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    skip = os.path.abspath(args.output) if args.output else None
    entries = collect(skip)
    text = render(entries, args.format)
    if args.output is None:
        sys.stdout.write(text)
    elif args.dry_run:
        print(f"[dry-run] would write {len(entries)} entries ({args.format}) to {args.output}:")
        sys.stdout.write(text)
    else:
        try:
            write_atomically(args.output, text)
        except OSError as exc:
            print(f"create_file_inventory: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"Wrote inventory of {len(entries)} files to {args.output} ({args.format}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
