"""Integration fixtures: the real Docker engine and the real runner image.

Under CI=true a missing engine or image is a failure, never a skip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from scoperun.config import Settings
from scoperun.engine.base import MANAGED_LABEL
from scoperun.executor import Executor

IMAGE = os.environ.get("SCOPERUN_TEST_IMAGE", "scoperun-runner:latest")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def unavailable(message: str) -> NoReturn:
    """A prerequisite is missing: fail under CI (CI=true), where everything must be there; else skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client for the real engine (fails under CI when none answers)."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:
        unavailable(f"the Docker engine or image {IMAGE} is not available ({exc}); run `make image`")
    yield client
    client.close()


@pytest.fixture
def settings(workspace: Path, docker_client) -> Settings:
    """Settings for the fresh workspace and the real runner image."""
    return Settings(workspace=workspace, image=IMAGE, timeout=60, network="none")


def _execution_ids(workspace: Path) -> set[str]:
    audit = workspace / "Database" / "script_executions"
    return {p.stem for p in audit.glob("*.json")} if audit.is_dir() else set()


def leftover_containers(docker_client, execution_ids: set[str]) -> list:
    """scoperun containers (running or not) that belong to the given runs."""
    # sparse: one list call; inspecting each container races with other runs removing theirs.
    found = docker_client.containers.list(all=True, sparse=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if (c.attrs.get("Labels") or {}).get("org.scoperun.execution-id") in execution_ids]


def assert_no_containers_left(docker_client, workspace: Path) -> None:
    """Every container made for this workspace's runs is gone (strays are removed, then reported)."""
    ids = _execution_ids(workspace)
    deadline = time.monotonic() + 10
    left = leftover_containers(docker_client, ids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_containers(docker_client, ids)
    for c in left:
        c.remove(force=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture
def executor(settings: Settings, workspace: Path, docker_client) -> Iterator[Executor]:
    """A real executor; on teardown, proves every container it made is gone (and removes strays)."""
    ex = Executor(settings)
    yield ex
    ex.close()
    assert_no_containers_left(docker_client, workspace)


def read_record(workspace: Path, execution_id: str) -> dict:
    """The audit record of one run, with the events logged after it ended merged in (as `audit show` shows it)."""
    from scoperun.audit.log import AuditLog

    return AuditLog(workspace / "Database" / "script_executions").view(execution_id)


# Registers the `guard` fixture of the adversarial suite for every integration module.
from tests.integration._adversarial import guard  # noqa: E402, F401
