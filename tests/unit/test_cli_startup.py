"""CLI start-up: `scoperun version` and a repeated `scoperun --help` build no app and import no pydantic;
a first `--help` builds the app without the optional integrations, the engine SDK or pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CALL = ("import sys; sys.argv = ['scoperun', *sys.argv[1:]]; from scoperun.cli import main; main(); "
        "print(sorted(m for m in ('typer', 'pydantic', 'docker', 'rich') if m in sys.modules), file=sys.stderr)")


# Never loaded to print help or the version: what only some commands need.
NOT_FOR_HELP = ("docker", "langchain_core", "mcp", "prometheus_client", "fastapi", "uvicorn", "playwright", "httpx",
                "pydantic", "pydantic_settings", "scoperun.config", "scoperun.models", "scoperun.executor")
MODULES = ("import json, sys; sys.argv = ['scoperun', *sys.argv[1:]]; from scoperun.cli import main\n"
           "try:\n    main()\nfinally:\n    print(json.dumps(sorted(sys.modules)), file=sys.stderr)")


def _cli(args: list[str], cache: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), **extra}
    return subprocess.run([sys.executable, "-c", CALL, *args], capture_output=True, text=True, env=env, timeout=120)


def test_version_imports_nothing_heavy(tmp_path: Path) -> None:
    """`scoperun version` prints the version with neither typer, rich, pydantic nor docker imported."""
    import scoperun

    proc = _cli(["version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"{scoperun.__version__}\n"
    assert proc.stderr.strip() == "[]"


def test_repeated_help_is_the_apps_own_help_without_building_it(tmp_path: Path) -> None:
    """Where fasthelp defers, the first --help builds the app and keeps its output; the next prints the same
    bytes from the cache."""
    first = _cli(["--help"], tmp_path, SCOPERUN_HELP_SLOW="1")
    assert first.returncode == 0 and "Usage" in first.stdout and "run" in first.stdout
    second = _cli(["--help"], tmp_path, SCOPERUN_HELP_SLOW="1")
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


def _loaded(args: list[str], cache: Path, **extra: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), **extra}
    proc = subprocess.run([sys.executable, "-c", MODULES, *args], capture_output=True, text=True, env=env, timeout=120)
    return proc, {name.split(".")[0] if not name.startswith("scoperun.") else name
                  for name in json.loads(proc.stderr.strip().splitlines()[-1])}


def test_help_and_version_load_no_integration_engine_or_models(tmp_path: Path) -> None:
    """A first `--help` (the app is built) and `version` import no docker, langchain, mcp, prometheus, fastapi,
    uvicorn, playwright, httpx, pydantic or the settings."""
    for args in (["--help"], ["version"], ["--version"]):
        proc, loaded = _loaded(args, tmp_path / args[0], SCOPERUN_HELP_SLOW="1")
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
        assert not loaded & set(NOT_FOR_HELP), (args, sorted(loaded & set(NOT_FOR_HELP)))
    proc, loaded = _loaded(["--help"], tmp_path / "--help", SCOPERUN_HELP_SLOW="1")  # the cached help: no app
    assert "typer" not in loaded and "scoperun.cli.main" not in loaded


def test_each_group_adds_exactly_the_names_its_table_says() -> None:
    """`GROUPS` names every top-level command or group each module's `register` adds, and nothing else."""
    import importlib

    import typer

    cli_main = importlib.import_module("scoperun.cli.main")
    for module, names in cli_main.GROUPS:
        fresh = typer.Typer()
        importlib.import_module(f"scoperun.cli.{module}").register(fresh)
        added = {c.name or c.callback.__name__.replace("_", "-") for c in fresh.registered_commands}
        assert added | {g.name for g in fresh.registered_groups} == set(names), module


def test_a_command_line_builds_only_the_group_of_its_command(tmp_path: Path) -> None:
    """`scoperun -q audit --help` loads the audit commands only; `run --help` none of the groups; an unknown
    command all of them (click's error suggests among every command)."""
    groups = {f"scoperun.cli.{m}" for m in ("audit", "ops", "service", "files", "changes", "browser", "mcp")}
    proc, loaded = _loaded(["-q", "audit", "--help"], tmp_path)
    assert proc.returncode == 0 and "verify" in proc.stdout
    assert loaded & groups == {"scoperun.cli.audit"}
    proc, loaded = _loaded(["run", "--help"], tmp_path)
    assert proc.returncode == 0 and "--case" in proc.stdout and not loaded & groups
    proc, loaded = _loaded(["ru"], tmp_path)
    assert proc.returncode == 2 and "run" in proc.stderr and loaded >= groups
