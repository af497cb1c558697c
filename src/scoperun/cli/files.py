"""`scoperun cases` and `scoperun files ls|cat|read|find|put|get`: cases and their files, scoped and audited.

Registered on the main app by `register(app)`. Exit status: 0 done; 2 refused (unknown case,
path leaving the case, symlink, binary or special file); 1 workspace, audit or engine problem.
Names and text are shown with control characters escaped, so a file name cannot rewrite the terminal.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from scoperun.cli.common import EXIT_ENGINE, EXIT_PROBLEM, EXIT_REJECTED, fail, out, settings_of
from scoperun.errors import EngineError, ScopeError, ScopeRunError

app = typer.Typer(help="Look inside a case and move files in and out: scoped to the case, every access audited.",
                  no_args_is_help=True)

CaseArg = Annotated[str, typer.Argument(help="Case folder name under projects/ (see `scoperun cases`).")]
PathArg = Annotated[str, typer.Argument(help="Path inside the case, e.g. 'Medical Records/MRI.pdf'.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ByOpt = Annotated[str | None, typer.Option("--requested-by", help="Who asks, for the audit (default: your login).")]
T = TypeVar("T")


def safe(text: str) -> str:
    """`text` for a terminal: control characters shown as escapes, rich markup escaped."""
    shown = "".join(ch if unicodedata.category(ch) != "Cc" or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in text)
    return escape(shown)


def _name(text: str) -> str:
    """A one-line name: newlines and tabs escaped too."""
    return safe(text.replace("\n", "\\n").replace("\t", "\\t"))


def _files(ctx: typer.Context) -> Any:
    from scoperun.files import CaseFiles

    return CaseFiles(settings=settings_of(ctx))


def _call(action: Callable[[], T]) -> T:
    try:
        return action()
    except ScopeError as exc:
        raise fail(str(exc), EXIT_REJECTED) from None
    except EngineError as exc:  # the engine failing is 125 in every command
        raise fail(str(exc), EXIT_ENGINE) from None
    except ScopeRunError as exc:
        raise fail(str(exc), EXIT_PROBLEM) from None


def _json(model: Any) -> None:
    sys.stdout.write(model.model_dump_json(indent=2) + "\n")


def cases(ctx: typer.Context, prefix: Annotated[str | None, typer.Argument(help="Only cases starting with this.")] = None,
          as_json: JsonOpt = False, requested_by: ByOpt = None) -> None:
    """List the cases: files, size, last modification and last run (counts cached, never a walk per call)."""
    from scoperun.config import format_size

    listed = _call(lambda: _files(ctx).cases(prefix, requested_by=requested_by))
    if as_json:
        return _json(listed)
    if not listed.cases:
        out.print("no cases" + (f" starting with {_name(prefix)!r}" if prefix else ""))
        return None
    for c in listed.cases:
        run = f"{c.last_run_status} {c.last_run_at:%Y-%m-%d %H:%M}" if c.last_run_status and c.last_run_at else "no runs"
        files = "?" if c.files is None else f"{c.files}{'+' if c.count_capped else ''}"
        modified = f"{c.last_modified:%Y-%m-%d}" if c.last_modified else "?"
        out.print(f"{_name(c.name)}  [dim]{files} files · {format_size(c.bytes)} · modified {modified} · {run}[/]")
    if listed.truncated:
        out.print(f"[yellow]showing {len(listed.cases)} of {listed.total}; give a prefix[/]")
    return None


@app.command("ls")
def ls(ctx: typer.Context, case: CaseArg, path: Annotated[str, typer.Argument(help="Folder inside the case.")] = ".",
       recursive: Annotated[bool, typer.Option("--recursive", "-r", help="List subfolders too.")] = False,
       pattern: Annotated[str | None, typer.Option("--pattern", "-p", help="Glob on names, e.g. '*.pdf'.")] = None,
       offset: Annotated[int, typer.Option(help="Skip this many entries.")] = 0,
       limit: Annotated[int, typer.Option(help="Entries per page (max 1000).")] = 200,
       as_json: JsonOpt = False, requested_by: ByOpt = None) -> None:
    """List a folder of a case (sorted, paged; symlinks shown, never followed)."""
    from scoperun.config import format_size

    listing = _call(lambda: _files(ctx).list_files(case, path, pattern=pattern, recursive=recursive, offset=offset,
                                                   limit=limit, requested_by=requested_by))
    if as_json:
        return _json(listing)
    for e in listing.entries:
        if e.type == "dir":
            out.print(f"{'':>10}  {e.modified:%Y-%m-%d %H:%M}  {_name(e.path)}/")
        elif e.type == "symlink":
            out.print(f"{'link':>10}  {e.modified:%Y-%m-%d %H:%M}  {_name(e.path)} -> {_name(e.target or '')}")
        else:
            out.print(f"{format_size(e.size):>10}  {e.modified:%Y-%m-%d %H:%M}  {_name(e.path)}"
                      + (" [yellow](special file)[/]" if e.type == "other" else ""))
    if listing.more:
        out.print(f"[yellow]more entries: --offset {listing.offset + len(listing.entries)}[/]")
    if listing.stopped:
        out.print(f"[yellow]{escape(listing.stopped)}[/]")
    return None


@app.command("cat")
def cat(ctx: typer.Context, case: CaseArg, path: PathArg,
        offset: Annotated[int, typer.Option(help="Byte to start from.")] = 0,
        limit: Annotated[int, typer.Option(help="Bytes to show (max 1 MiB).")] = 64 * 1024,
        as_json: JsonOpt = False, requested_by: ByOpt = None) -> None:
    """Show a text file of a case (binary files are refused with their type: use `files read` or `files get`)."""
    part = _call(lambda: _files(ctx).read_file(case, path, offset=offset, limit=limit, requested_by=requested_by))
    if as_json:
        return _json(part)
    out.print(safe(part.text), end="" if part.text.endswith("\n") else "\n", highlight=False)
    if part.truncated:
        out.print(f"[yellow]-- truncated at byte {part.next_offset} of {part.size}; --offset {part.next_offset} "
                  f"for more --[/]")
    return None


@app.command("read")
def read(ctx: typer.Context, case: CaseArg, path: PathArg, as_json: JsonOpt = False, requested_by: ByOpt = None) -> None:
    """Show the text of a PDF, DOCX, XLSX/CSV (or an image's metadata), extracted inside a container."""
    from scoperun.config import format_size

    doc = _call(lambda: _files(ctx).read_document(case, path, requested_by=requested_by))
    if as_json:
        return _json(doc)
    out.print(safe(doc.text), highlight=False)
    note = f"{doc.kind}, {format_size(doc.size)}" + (", cached" if doc.cached else f", extracted by {doc.execution_id}")
    out.print(f"[dim]-- {escape(note)}{' · truncated' if doc.truncated else ''} --[/]")
    return None


@app.command("find")
def find(ctx: typer.Context, case: CaseArg, query: Annotated[str, typer.Argument(help="Phrase (case-insensitive).")],
         glob: Annotated[str | None, typer.Option("--glob", "-g", help="Only files matching, e.g. '*.pdf'.")] = None,
         limit: Annotated[int, typer.Option(help="Most matches shown (max 500).")] = 50,
         as_json: JsonOpt = False, requested_by: ByOpt = None) -> None:
    """Search a case's text files and documents (PDF, DOCX, XLSX) for a phrase."""
    found = _call(lambda: _files(ctx).search(case, query, glob=glob, limit=limit, requested_by=requested_by))
    if as_json:
        return _json(found)
    for h in found.hits:
        where = f"p{h.page}:" if h.page is not None else ""
        out.print(f"{_name(h.path)}:{where}{h.line}: {_name(h.snippet)}", highlight=False)
    out.print(f"[dim]{len(found.hits)} matches · {found.files_searched} text files, {found.documents_searched} "
              f"documents searched{' · more exist' if found.truncated else ''}[/]")
    for note in found.skipped[:10]:
        out.print(f"[yellow]{_name(note)}[/]")
    if not found.hits:
        raise typer.Exit(1)
    return None


@app.command("put")
def put(ctx: typer.Context, case: CaseArg, path: PathArg,
        source: Annotated[Path, typer.Argument(help="Local file to upload ('-' reads stdin).")],
        as_json: JsonOpt = False, requested_by: ByOpt = None) -> None:
    """Upload a file into a case through a staged change set (undo with `scoperun rollback <id>`)."""
    from scoperun.config import format_size

    files = _files(ctx)
    if str(source) == "-":
        data = sys.stdin.buffer.read()
        done = _call(lambda: files.write_file(case, path, data, requested_by=requested_by))
    else:
        done = _call(lambda: files.upload(case, path, source, requested_by=requested_by))
    if as_json:
        return _json(done)
    cs = done.change_set
    out.print(f"[bold]{escape(done.execution_id)}[/] {_name(done.path)} ({format_size(done.bytes)}): {escape(cs.summary)}")
    if cs.note:
        out.print(escape(cs.note))
    if cs.status.value not in {"applied", "staged", "empty"}:
        raise typer.Exit(EXIT_PROBLEM)
    return None


@app.command("get")
def get(ctx: typer.Context, case: CaseArg, path: PathArg,
        dest: Annotated[Path | None, typer.Argument(help="Local file to create ('-' or none: stdout).")] = None,
        requested_by: ByOpt = None) -> None:
    """Download a case file's exact bytes (an existing local file is never overwritten)."""
    files = _files(ctx)
    if dest is None or str(dest) == "-":
        sys.stdout.buffer.write(_call(lambda: files.read_bytes(case, path, requested_by=requested_by)))
        sys.stdout.buffer.flush()
        return
    try:
        digest, size = _call(lambda: files.download(case, path, dest, requested_by=requested_by))
    except FileExistsError:
        raise fail(f"{dest} exists; scoperun never overwrites a local file", EXIT_REJECTED) from None
    out.print(f"{escape(str(dest))}: {size} bytes, sha256 {digest}")


def register(root: typer.Typer) -> None:
    """Add `cases` and the `files` group to the main app."""
    root.command("cases")(cases)
    root.add_typer(app, name="files")
