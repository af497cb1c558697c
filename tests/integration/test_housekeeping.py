"""The Docker side of the engine contract (EngineHousekeeping) on the real engine: what ps, stop and gc rely on."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from scoperun.engine.base import EXECUTION_ID_LABEL, MANAGED_LABEL, EngineHousekeeping
from scoperun.engine.docker import DockerBackend
from scoperun.errors import EngineError
from tests.integration.conftest import IMAGE


def _quietly(cleanup: Callable[[], object]) -> None:
    """Clean up what a test made; already gone (the test removed it) is fine."""
    try:
        cleanup()
    except Exception:
        pass


@pytest.fixture
def engine(docker_client) -> Iterator[DockerBackend]:
    backend = DockerBackend(remove_in_background=False, timeout=60)
    yield backend
    backend.close()


def test_containers_memory_kill_and_removal(engine: DockerBackend, docker_client) -> None:
    """Labelled containers are listed with their fields and memory; kill and force-remove say when one is gone."""
    run = f"exec_hk_{secrets.token_hex(4)}"
    labels = {MANAGED_LABEL: "1", EXECUTION_ID_LABEL: run, "org.scoperun.test": "1"}
    container = docker_client.containers.run(IMAGE, ["sleep", "120"], detach=True, labels=labels,
                                             name=f"scoperun-{run}", network_mode="none", user="1000:1000")
    try:
        assert isinstance(engine, EngineHousekeeping)
        found = engine.containers(f"{MANAGED_LABEL}=1", f"{EXECUTION_ID_LABEL}={run}")
        assert [(c.id, c.name, c.state, c.labels[EXECUTION_ID_LABEL]) for c in found] == [
            (container.id, f"scoperun-{run}", "running", run)]
        assert abs(found[0].created - time.time()) < 600
        memory = engine.container_memory(container.id)
        assert memory is not None and memory > 0
        assert engine.force_kill_container(container.id) is True
        ended = engine.containers(f"{EXECUTION_ID_LABEL}={run}", all_states=True)
        assert [c.state for c in ended] == ["exited"] and engine.containers(f"{EXECUTION_ID_LABEL}={run}") == []
        with pytest.raises(EngineError, match="failed to kill container"):  # not running: the engine refuses
            engine.force_kill_container(container.id)
        assert engine.force_remove_container(container.id) is True
        assert engine.force_remove_container(container.id) is False
        assert engine.force_kill_container(container.id) is False
    finally:
        _quietly(lambda: container.remove(force=True))


def test_volume_removal_says_removed_in_use_or_gone(engine: DockerBackend, docker_client) -> None:
    """A labelled volume is listed with its creation time; removal reports `in use`, `removed`, then `gone`."""
    run = f"exec_hk_{secrets.token_hex(4)}"
    labels = {MANAGED_LABEL: "1", EXECUTION_ID_LABEL: run, "org.scoperun.test": "1"}
    volume = docker_client.volumes.create(name=f"scoperun-stage-{run}", labels=labels)
    container = docker_client.containers.create(IMAGE, ["true"], labels=labels, network_mode="none",
                                                volumes={volume.name: {"bind": "/mnt/v", "mode": "ro"}})
    try:
        listed = engine.volumes(f"{MANAGED_LABEL}=1", f"{EXECUTION_ID_LABEL}={run}")
        assert [v.name for v in listed] == [volume.name] and listed[0].labels[EXECUTION_ID_LABEL] == run
        assert listed[0].created is not None and abs(listed[0].created - time.time()) < 600
        assert engine.remove_volume(volume.name) == "in use"
        container.remove(force=True)
        assert engine.remove_volume(volume.name) == "removed"
        assert engine.remove_volume(volume.name) == "gone"
        assert engine.volumes(f"{EXECUTION_ID_LABEL}={run}") == []
    finally:
        _quietly(lambda: container.remove(force=True))
        _quietly(volume.remove)


def test_networks_by_label_and_removal(engine: DockerBackend, docker_client) -> None:
    """A labelled network is listed and removed once; a second removal says it is gone."""
    name = f"scoperun-none-hk-{secrets.token_hex(4)}"
    network = docker_client.networks.create(name, labels={MANAGED_LABEL: "1", "org.scoperun.test": "1"},
                                            internal=True)
    try:
        assert name in {n.name for n in engine.networks(MANAGED_LABEL, "org.scoperun.test=1")}
        assert engine.remove_network(network.id) is True
        assert engine.remove_network(network.id) is False
    finally:
        _quietly(network.remove)


def test_an_unreachable_engine_is_an_engine_error_naming_it() -> None:
    """Every housekeeping call on an engine that does not answer raises EngineError naming its address."""
    down = DockerBackend("tcp://127.0.0.1:9", remove_in_background=False, timeout=5)
    try:
        for call in (lambda: down.containers(MANAGED_LABEL), lambda: down.volumes(MANAGED_LABEL),
                     lambda: down.image_info(IMAGE)):
            with pytest.raises(EngineError, match="127.0.0.1:9"):
                call()
    finally:
        down.close()
