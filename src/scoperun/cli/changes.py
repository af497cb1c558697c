"""`scoperun changes | apply | discard | rollback`: review and undo what runs changed.

Registered on the main app by `register(app)`. Exit status: 0 done; 1 conflict (nothing applied)
or rollback refused because files changed since; 2 bad usage or unknown run.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Annotated

import typer

from scoperun.cli.common import fail, out, plain, settings_of, shown
from scoperun.errors import ChangedSinceError, ScopeRunError

IdArg = Annotated[str, typer.Argument(help="Execution id (exec_...), as printed by `scoperun run`.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the change set as JSON.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does this, for the audit (default: your login).")]


def _mode(value: int | None) -> str:
    return "" if value is None else oct(value)[2:]


def print_change_set(cs, *, as_json: bool, source: str = "", diffs: list[str] | None = None,
                     settings=None) -> None:
    """Print a change set as a table (or JSON), with optional text diffs; secrets redacted, controls escaped."""
    if settings is not None:
        from scoperun.safety.redaction import redactor_for

        redactor = redactor_for(settings.secret_env)
        cs = redactor.redact_changes(cs)
        diffs = [redactor.redact(d) for d in diffs or []]
    if as_json:
        sys.stdout.write(cs.model_dump_json(indent=2) + "\n")
        return
    colour = {"applied": "green", "conflict": "red", "staged": "yellow"}.get(cs.status.value, "white")
    out.print(f"[bold]{shown(cs.execution_id)}[/] case {shown(cs.case)} · {cs.mode} · "
              f"[bold {colour}]{cs.status.value}[/] · {shown(cs.summary)}" + (f" (from {source})" if source else ""))
    if cs.note:
        out.print(shown(cs.note))
    for c in cs.entries:
        extra = []
        if c.size_before is not None or c.size_after is not None:
            extra.append(f"{c.size_before if c.size_before is not None else '-'} -> "
                         f"{c.size_after if c.size_after is not None else '-'} B")
        if c.mode_before != c.mode_after and (c.mode_before is not None and c.mode_after is not None):
            extra.append(f"mode {_mode(c.mode_before)} -> {_mode(c.mode_after)}")
        if c.target is not None:
            extra.append(f"-> {c.target}")
        if c.renamed_from:
            extra.append(f"renamed from {c.renamed_from}")
        if c.hardlink_to:
            extra.append(f"hard link of {c.hardlink_to}")
        mark = "!" if c.path in cs.conflicts else " "
        out.print(f"{mark}{c.action.value:>12} {c.type:<7} {shown(c.path)}  [dim]{shown(', '.join(extra))}[/]")
    if cs.truncated:
        out.print(f"[yellow]list capped; totals count all {cs.totals.count} paths[/]")
    for d in diffs or []:
        out.print(plain(d, lines=True), highlight=False, markup=False)


def changes(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(help="Execution id, or `gc` to remove finished staging folders.")],
    as_json: JsonOpt = False,
    diff: Annotated[bool, typer.Option("--diff/--no-diff", help="Show text diffs of small text files.")] = True,
    older_than: Annotated[float | None, typer.Option(
        help="For `gc`: days (default: staging_retention_days).")] = None,
) -> None:
    """Show what a run changed in its case (staged, applied or recorded); `changes gc` cleans staging."""
    from scoperun.changes import gc_staging, load_change_set, text_diffs

    settings = settings_of(ctx)
    try:
        if execution_id == "gc":
            days = settings.staging_retention_days if older_than is None else older_than
            removed = gc_staging(settings, timedelta(days=days))
            if as_json:
                sys.stdout.write(json.dumps({"removed": removed}) + "\n")
            else:
                out.print(f"removed {len(removed)} staging folder(s) older than {days:g} day(s)")
            return
        cs, source = load_change_set(settings, execution_id)
        diffs = text_diffs(settings, cs) if diff and not as_json else []
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    print_change_set(cs, as_json=as_json, source=source, diffs=diffs, settings=settings)


def apply(
    ctx: typer.Context, execution_id: IdArg,
    force: Annotated[bool, typer.Option("--force", help="Apply over conflicts (the journal keeps the case's "
                                                         "versions).")] = False,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Apply a run's staged changes to its case (pre-images saved to the journal first)."""
    from scoperun.changes import apply_changes

    try:
        settings = settings_of(ctx)
        cs = apply_changes(settings, execution_id, force=force, by=by)
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    print_change_set(cs, as_json=as_json, settings=settings)
    raise typer.Exit(1 if cs.status.value == "conflict" else 0)


def discard(ctx: typer.Context, execution_id: IdArg, by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Discard a run's staged changes; the case stays as it is."""
    from scoperun.changes import discard_changes

    try:
        settings = settings_of(ctx)
        cs = discard_changes(settings, execution_id, by=by)
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    print_change_set(cs, as_json=as_json, settings=settings)


def rollback(
    ctx: typer.Context, execution_id: IdArg,
    force: Annotated[bool, typer.Option("--force", help="Restore even over files changed since (kept in the "
                                                         "journal's displaced/ folder).")] = False,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Undo an applied run: restore every pre-image and remove what it added."""
    from scoperun.changes import rollback_changes

    try:
        settings = settings_of(ctx)
        cs = rollback_changes(settings, execution_id, force=force, by=by)
    except ChangedSinceError as exc:
        if as_json:
            sys.stdout.write(json.dumps({"refused": str(exc), "paths": exc.paths}) + "\n")
        raise fail(str(exc), 1) from None
    except ScopeRunError as exc:
        raise fail(str(exc)) from None
    print_change_set(cs, as_json=as_json, settings=settings)


def register(app: typer.Typer) -> None:
    """Add the change-set commands to the main app."""
    for fn in (changes, apply, discard, rollback):
        app.command(fn.__name__)(fn)
