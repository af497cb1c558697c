"""Ctrl-C at the worst moments of a start leaves no container and no staging volume behind.

A KeyboardInterrupt can land while the engine is creating the container (it exists, but its id
never came back) or after the backend returned the started run and before `wait` took charge of
it. Both windows are hit deterministically here by wrapping the real engine calls.
"""

from __future__ import annotations

import pytest

from scoperun import ExecutionRequest, Executor
from tests.conftest import CASE
from tests.integration.conftest import leftover_containers, read_record

SLEEPY = "import time\nprint('working', flush=True)\ntime.sleep(120)\n"


def _staging_volumes(docker_client, execution_id: str) -> list[str]:
    return [v.name for v in docker_client.volumes.list(filters={"label": f"org.scoperun.execution-id={execution_id}"})]


@pytest.mark.parametrize("write_mode", ["staged", "direct"])
def test_ctrl_c_while_the_engine_creates_the_container(settings, workspace, docker_client, monkeypatch,
                                                       write_mode: str) -> None:
    """An interrupt after the engine made the container but before its id came back: the container
    (found by its name) and the staging volume are removed, and the record says interrupted."""
    (workspace / "Tools" / "sleepy.py").write_text(SLEEPY)
    ex = Executor(settings.model_copy(update={"write_mode": write_mode}))
    real_create = ex.backend.client.api.create_container  # type: ignore[attr-defined]

    def create_then_interrupt(*args, **kwargs):
        real_create(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ex.backend.client.api, "create_container", create_then_interrupt)  # type: ignore[attr-defined]
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            ex.run(ExecutionRequest(script="Tools/sleepy.py", case=CASE))
    finally:
        ex.close()
    execution_id = caught.value.scoperun_execution_id  # type: ignore[attr-defined]
    assert leftover_containers(docker_client, {execution_id}) == []
    assert _staging_volumes(docker_client, execution_id) == []
    record = read_record(workspace, execution_id)
    assert record["status"] == "error" and "interrupted" in record["message"]


def test_ctrl_c_between_start_and_wait(settings, workspace, docker_client, monkeypatch) -> None:
    """An interrupt after the container started and before `wait` took charge: it is killed and removed."""
    (workspace / "Tools" / "sleepy.py").write_text(SLEEPY)
    started: list[str] = []

    def interrupt_before_waiting(handle):
        started.append(handle.container_id)
        raise KeyboardInterrupt

    monkeypatch.setattr("scoperun.pipeline.wait", interrupt_before_waiting)
    ex = Executor(settings)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            ex.run(ExecutionRequest(script="Tools/sleepy.py", case=CASE))
    finally:
        ex.close()
    assert started, "the run never reached the engine"
    execution_id = caught.value.scoperun_execution_id  # type: ignore[attr-defined]
    assert leftover_containers(docker_client, {execution_id}) == []
    record = read_record(workspace, execution_id)
    assert record["status"] == "error" and "interrupted" in record["message"]
