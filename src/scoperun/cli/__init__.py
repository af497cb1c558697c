"""The `scoperun` command line. `main` imports the app only when called, so importing this
package (e.g. for the entry point) costs nothing.

Modules: `common` (consoles, exit codes, options), `main` (the app, run and image commands),
and one module per command group.

`scoperun run-code` / `run` through a server (SCOPERUN_URL) take the lean path of `remote` when it
understands the whole command line (standard library only: no typer, rich, pydantic, httpx).
`scoperun version` and `scoperun --help` answer without building the app: the version is a
constant; the top-level help (also printed for a bare `scoperun`) comes from `fasthelp`, the same
bytes typer prints, drawn from parts stored at development time (no typer or rich), or, where
fasthelp defers (a narrow or unusual terminal, stale parts), from a user cache of the app's own
output keyed by everything that can change it (the CLI's source files, scoperun's version,
terminal width, colour settings); a miss builds the app as usual and refills the cache.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

_HELP_ARGS = (["--help"], ["-h"])
_VERSION_ARGS = (["version"], ["--version"])


def main() -> None:
    """Entry point of the `scoperun` command."""
    argv = sys.argv[1:]
    if argv in _VERSION_ARGS:
        from scoperun import __version__

        sys.stdout.write(__version__ + "\n")
        return
    if argv[:1] in (["run-code"], ["run"]) and os.environ.get("SCOPERUN_URL"):
        from scoperun.cli.remote import run as run_remote

        code = run_remote(argv)
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    if argv in _HELP_ARGS or not argv:
        from scoperun.cli import fasthelp

        where = fasthelp.terminal()
        text = fasthelp.render(*where) if where else None
        if text is not None:
            # A bare `scoperun` is click's no_args_is_help: the same help less the last newline, status 2.
            sys.stdout.buffer.write(text if argv else text[:-1])
            sys.stdout.flush()
            if not argv:
                sys.exit(2)
            return
    cache = _help_cache_path() if argv in _HELP_ARGS else None
    if cache is not None:
        try:
            with open(cache, "rb") as fh:
                sys.stdout.buffer.write(fh.read())
            sys.stdout.flush()
            return
        except OSError:
            pass
    from scoperun.cli.main import main as run_cli

    if cache is None:
        run_cli()
        return
    _run_and_keep_help(run_cli, cache)


def _help_cache_path() -> str | None:
    """Where the help for this exact CLI and terminal is kept; None when it cannot be cached."""
    import hashlib

    from scoperun import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    package = os.path.dirname(here)
    key = hashlib.sha256(__version__.encode())
    try:
        for folder in (here, package):
            for name in sorted(os.listdir(folder)):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    key.update(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    tty = sys.stdout.isatty()
    width = 0
    for fd in (0, 1, 2):  # rich's width: the first of stdin, stdout, stderr that is a terminal
        try:
            width = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            pass
    env = sorted((k, v) for k, v in os.environ.items()
                 if k.startswith("SCOPERUN_") or k in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM",
                                                       "TTY_COMPATIBLE", "TTY_INTERACTIVE"))
    key.update(f"{tty}:{width}:{env}:{sys.argv[0]}".encode())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scoperun", f"help-{key.hexdigest()[:32]}.txt")


class _Tee:
    """stdout that also keeps what was written (for the help cache); looks like the real one to rich."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.kept: list[bytes] = []

    def write(self, text: str | bytes) -> int:
        encoding = getattr(self._real, "encoding", None) or "utf-8"
        self.kept.append(text if isinstance(text, bytes) else text.encode(encoding, "replace"))
        return self._real.write(text)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def _run_and_keep_help(run_cli: object, cache: str) -> None:
    real = sys.stdout
    tee = _Tee(real)
    sys.stdout = tee
    code: object = 0
    try:
        run_cli()  # type: ignore[operator]
    except SystemExit as exc:
        code = exc.code
        raise
    finally:
        sys.stdout = real
        if code in (0, None) and tee.kept:
            try:
                from pathlib import Path

                from scoperun.atomicio import write_bytes_atomic

                os.makedirs(os.path.dirname(cache), exist_ok=True)
                write_bytes_atomic(Path(cache), tee.kept)
            except OSError:
                pass  # no cache: the next --help builds the app again
