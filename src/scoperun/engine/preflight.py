"""Checks against the engine before a run is sent to it: the network exists, the limits fit.

Without them a missing network or `--cpus 64` on a 2-core engine surfaces as a raw engine
error after the run started; checked first, they are plain usage errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scoperun.errors import EngineError

__all__ = ["EngineCapacity", "PreflightProblem", "engine_capacity", "preflight"]

_BUILTIN_NETWORKS = frozenset({"bridge", "none"})


@dataclass(frozen=True)
class EngineCapacity:
    """What the engine's machine has: CPUs and memory (bytes)."""

    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class PreflightProblem:
    """One reason the run cannot work on this engine, with what to do instead."""

    option: str
    message: str


def engine_capacity(client: Any) -> EngineCapacity:
    """The engine's CPUs and memory, from its `info`; raise EngineError when it does not answer."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        info = client.info()
    except (DockerException, RequestException) as exc:
        raise EngineError(f"the Docker engine did not answer `info` ({exc}); check it with `scoperun doctor`") from None
    return EngineCapacity(cpus=int(info.get("NCPU") or 0), memory_bytes=int(info.get("MemTotal") or 0))


def _network_exists(client: Any, name: str) -> bool:
    from docker.errors import DockerException, NotFound
    from requests.exceptions import RequestException

    try:
        client.api.inspect_network(name)
        return True
    except NotFound:
        return False
    except (DockerException, RequestException) as exc:
        raise EngineError(f"the Docker engine could not look up network {name!r} ({exc})") from None


def preflight(client: Any, *, network: str | None = None, cpus: float | None = None,
              memory_bytes: int | None = None) -> list[PreflightProblem]:
    """What keeps a run with these settings from starting on this engine (empty when nothing)."""
    problems: list[PreflightProblem] = []
    if network and network not in _BUILTIN_NETWORKS and not _network_exists(client, network):
        problems.append(PreflightProblem("--network", (
            f"Docker network {network!r} does not exist on this engine; use bridge or none, or create it "
            f"with `docker network create {network}`")))
    if cpus is not None or memory_bytes is not None:
        capacity = engine_capacity(client)
        if cpus is not None and capacity.cpus and cpus > capacity.cpus:
            problems.append(PreflightProblem("--cpus", (
                f"--cpus {cpus:g} is more than the engine's {capacity.cpus} CPU(s); give at most {capacity.cpus}")))
        if memory_bytes is not None and capacity.memory_bytes and memory_bytes > capacity.memory_bytes:
            have = capacity.memory_bytes / 1024**3
            problems.append(PreflightProblem("--memory", (
                f"--memory {memory_bytes / 1024**3:.1f} GiB is more than the engine's {have:.1f} GiB; "
                f"give less (e.g. {max(1, int(have // 2))}g)")))
    return problems
