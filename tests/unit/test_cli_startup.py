"""CLI start-up: `scoperun version` and a repeated `scoperun --help` build no app and import no pydantic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CALL = ("import sys; sys.argv = ['scoperun', *sys.argv[1:]]; from scoperun.cli import main; main(); "
        "print(sorted(m for m in ('typer', 'pydantic', 'docker', 'rich') if m in sys.modules), file=sys.stderr)")


def _cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-c", CALL, *args], capture_output=True, text=True, env=env, timeout=120)


def test_version_imports_nothing_heavy(tmp_path: Path) -> None:
    """`scoperun version` prints the version with neither typer, rich, pydantic nor docker imported."""
    import scoperun

    proc = _cli(["version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"{scoperun.__version__}\n"
    assert proc.stderr.strip() == "[]"


def test_repeated_help_is_the_apps_own_help_without_building_it(tmp_path: Path) -> None:
    """The first --help builds the app and keeps its output; the next prints the same bytes from the cache."""
    first = _cli(["--help"], tmp_path)
    assert first.returncode == 0 and "Usage" in first.stdout and "run" in first.stdout
    second = _cli(["--help"], tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert second.stderr.strip() == "[]"
    assert len(list((tmp_path / "scoperun").glob("help-*.txt"))) == 1


def test_a_changed_cli_source_misses_the_cache(tmp_path: Path) -> None:
    """The cache key covers the CLI's source files: another mtime of one of them means another entry."""
    import scoperun.cli as cli

    first = cli._help_cache_path()
    path = Path(cli.__file__)
    st = path.stat()
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert cli._help_cache_path() != first
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
