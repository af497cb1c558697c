"""What the slot pool and the pre-started containers ask of the engine, said once.

A waiting container is made like a fresh one for its template (the backend's own hardening),
with the launcher as PID 1 reading its stdin, labelled as the pool's, and removed by the engine
when its launcher exits (AutoRemove). A run that takes one may fit its memory, CPUs and pids
(`docker update` sets those exactly) and names it after itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from scoperun.engine.base import MANAGED_LABEL, RunSpec
from scoperun.engine.launched import close_attach_socket, launcher_command

__all__ = ["WarmEngine", "fit_limits", "rename_quietly", "settled", "start_waiting"]

POOL_LABEL = "org.scoperun.pool"  # value: the owner, "<host>:<pid>"


class WarmEngine(Protocol):
    """The backend's side (DockerBackend); these helpers never import it."""

    @property
    def client(self) -> Any: ...

    @property
    def stream_client(self) -> Any: ...

    def _create_kwargs(self, spec: RunSpec, volumes: dict[str, str] | None = None) -> dict[str, Any]: ...

    def remove_container(self, container_id: str, volumes: dict[str, str], *, inline: bool) -> Any: ...


def start_waiting(backend: WarmEngine, template: RunSpec, *, name: str, owner: str, idle: float,
                  extra_mounts: tuple[Any, ...] = ()) -> tuple[str, Any, str]:
    """Create, attach to and start one waiting container for `template`; (id, attach socket, image id).

    `extra_mounts` (docker-py Mounts) go first. Nothing is left behind when it fails.
    """
    api = backend.client.api
    kwargs = backend._create_kwargs(template)
    host_config = kwargs["host_config"]
    host_config["Mounts"][:0] = list(extra_mounts)
    host_config["AutoRemove"] = True  # the launcher exits after its run or when idle too long: gone with it
    kwargs.update(
        command=launcher_command(idle), environment={}, stdin_open=True, name=name,
        labels={**template.labels, MANAGED_LABEL: "1", POOL_LABEL: owner,
                # Idle: its launcher exits after `idle`; serving: after the run's timeout (at most a day).
                "org.scoperun.deadline": str(int(time.time() + idle + 86400 + 60))},
    )
    container_id = str(api.create_container(**kwargs)["Id"])
    sock = None
    try:
        sock = backend.stream_client.api.attach_socket(
            container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        api.start(container_id)
        image_id = str(api.inspect_container(container_id)["Image"])
    except BaseException:
        close_attach_socket(sock)
        backend.remove_container(container_id, {}, inline=True)
        raise
    return container_id, sock, image_id


def fit_limits(backend: WarmEngine, container_id: str, spec: RunSpec) -> None:
    """Set the run's memory (with swap), CPUs and pids on a waiting container, exactly."""
    api = backend.client.api
    # Memory and swap together (memory alone is refused or half-applied); NanoCpus, not quota/period.
    body = {"Memory": spec.memory_bytes, "MemorySwap": spec.memory_bytes, "NanoCpus": int(spec.cpus * 1e9),
            "PidsLimit": spec.pids_limit}
    res = api._post_json(api._url("/containers/{0}/update", container_id), data=body)
    api._raise_for_status(res)


def rename_quietly(backend: WarmEngine, container_id: str, name: str) -> None:
    """Name a taken container after its run (so `ps` and `stop` find it); gone already is fine."""
    try:
        backend.client.api.rename(container_id, name)
    except Exception:
        pass


def settled(busy: Callable[[], bool], timeout: float) -> bool:
    """Wait until `busy()` is false (a pool preparing nothing); False if still busy after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while busy():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
