"""Shared fixtures: a real workspace on disk for every test; the real engine for integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scoperun.config import Settings

CASE = "Doe-John-MVA-3-14-2024"
OTHER_CASE = "Roe-Jane-SlipFall-2023"
CONTAINER_UID = 1000


def make_workspace(root: Path) -> Path:
    """A minimal workspace: two cases, Tools with a few scripts, the Database folders."""
    for case in (CASE, OTHER_CASE):
        (root / "projects" / case / "notes").mkdir(parents=True)
        (root / "projects" / case / "notes" / "intake.txt").write_text(f"intake for {case}\n")
    (root / "projects" / OTHER_CASE / "secret.txt").write_text("other case's private file\n")
    tools = root / "Tools"
    tools.mkdir()
    (tools / "hello.py").write_text(
        "import os, sys\nprint('hello from', os.environ['CASE_NAME'])\nprint('to stderr', file=sys.stderr)\n"
    )
    (tools / "hello.sh").write_text("#!/bin/bash\necho \"bash says $CASE_NAME\"\nls notes\n")
    (root / "Database" / "script_executions").mkdir(parents=True)
    (root / "Database" / "temp_scripts").mkdir(parents=True)
    if os.geteuid() == 0:
        # The container runs as uid 1000: give it the case folders and the agent's script folder.
        for path in [root / "projects", *(root / "projects").rglob("*"), root / "Database",
                     *(root / "Database").rglob("*")]:
            os.chown(path, CONTAINER_UID, CONTAINER_UID)
    return root


@pytest.fixture(autouse=True)
def _host_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep each test's audit index and chain heads out of the host's real state folder."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SCOPERUN_STATE_DIR", str(state))
    monkeypatch.delenv("SCOPERUN_INDEX_PATH", raising=False)
    return state


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh workspace folder with two cases."""
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def settings(workspace: Path) -> Settings:
    """Settings pointing at the fresh workspace, with short default timeouts for tests."""
    return Settings(workspace=workspace, timeout=60, network="none")


@pytest.fixture(autouse=True)
def _no_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start fresh containers unless a test turns the warm pool on (it keeps idle containers around)."""
    monkeypatch.setenv("SCOPERUN_POOL", "0")


@pytest.fixture(autouse=True)
def _staging_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged runs write their overlay layers under the test's own temporary folder."""
    monkeypatch.setenv("SCOPERUN_STAGING_DIR", str(tmp_path / "staging"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The test that restarts dockerd runs only under CI (`.ci/run`) or on request, never by a plain
    `pytest` or `make test` on a user's machine, whose engine may be running other containers."""
    if os.environ.get("CI") == "true" or os.environ.get("SCOPERUN_TEST_DAEMON_RESTART") == "1":
        return
    skip = pytest.mark.skip(reason="restarts the machine's dockerd: runs under CI=true or with "
                                   "SCOPERUN_TEST_DAEMON_RESTART=1")
    for item in items:
        if "daemon_restart" in item.keywords:
            item.add_marker(skip)
