"""The `scoperun` command line. `main` imports the app only when called, so importing this
package (e.g. for the entry point) costs nothing.

Modules: `common` (consoles, exit codes, options), `main` (the app, run and image commands),
and one module per command group.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the `scoperun` command."""
    from scoperun.cli.main import main as run_cli

    run_cli()
