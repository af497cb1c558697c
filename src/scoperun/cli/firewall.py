"""`scoperun firewall install|status|remove`: keep containers away from the metadata server."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from scoperun.errors import ConfigError, FirewallError

app = typer.Typer(no_args_is_help=True, help="Block container traffic to the metadata server (iptables DOCKER-USER).")
_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)

CidrOpt = Annotated[list[str] | None, typer.Option(
    "--cidr", help="Extra address or CIDR to block, besides the settings' blocked_cidrs (repeatable).")]
OnlyOpt = Annotated[bool, typer.Option("--only", help="Act on the --cidr values only, not on blocked_cidrs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(exc: FirewallError) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(str(exc))}")
    return typer.Exit(1)


def _targets(ctx: typer.Context, cidr: list[str] | None, only: bool) -> list[str]:
    from scoperun.config import load_settings

    overrides = ctx.obj or {}
    try:
        configured = [] if only else load_settings(**overrides).blocked_cidrs
    except ConfigError as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    from scoperun.safety.firewall import normalise_cidrs

    try:
        return normalise_cidrs([*configured, *(cidr or [])])
    except FirewallError as exc:
        raise _fail(exc) from None


@app.command()
def install(ctx: typer.Context, cidr: CidrOpt = None, only: OnlyOpt = False, as_json: JsonOpt = False) -> None:
    """Add a DROP rule to DOCKER-USER for each blocked CIDR (idempotent; needs root)."""
    from scoperun.safety import firewall

    targets = _targets(ctx, cidr, only)
    try:
        added = firewall.install(targets)
    except FirewallError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps({"blocked": targets, "added": added}) + "\n")
        return
    for target in targets:
        _out.print(f"[green]blocked[/] {target}" + ("" if target in added else " (already)"))


@app.command()
def status(ctx: typer.Context, cidr: CidrOpt = None, only: OnlyOpt = False, as_json: JsonOpt = False) -> None:
    """Show whether each blocked CIDR has its rule; exit 1 when one is missing."""
    from scoperun.safety import firewall

    try:
        state = firewall.status(_targets(ctx, cidr, only))
    except FirewallError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps({"ok": state.ok, "blocked": state.blocked, "missing": state.missing,
                                     "present": state.present}) + "\n")
    else:
        for target in state.blocked:
            _out.print(f"[green]blocked[/] {target}")
        for target in state.missing:
            _out.print(f"[red]MISSING[/] {target}   fix: scoperun firewall install")
    raise typer.Exit(0 if state.ok else 1)


@app.command()
def remove(
    ctx: typer.Context, cidr: CidrOpt = None, only: OnlyOpt = False,
    all_rules: Annotated[bool, typer.Option("--all", help="Remove every scoperun rule, whatever its CIDR.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete scoperun's DROP rules (the settings' CIDRs and --cidr ones, or --all)."""
    from scoperun.safety import firewall

    try:
        removed = firewall.remove(None if all_rules else _targets(ctx, cidr, only))
    except FirewallError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps({"removed": removed}) + "\n")
    else:
        _out.print(f"removed {len(removed)} rule(s): {escape(', '.join(removed)) or '-'}")


def register(root: typer.Typer) -> None:
    """Add the `firewall` group to the main app."""
    root.add_typer(app, name="firewall")
