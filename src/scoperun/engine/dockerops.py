"""Docker housekeeping operations (containers, services, networks, volumes, versions) behind the engine
contract, with the one mapping of engine errors to scoperun's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from scoperun.engine.base import (
    BuildEvent,
    ContainerInfo,
    EngineVersion,
    ImageInfo,
    NetworkInfo,
    VolumeInfo,
    VolumeRemoval,
)
from scoperun.errors import EngineError

if TYPE_CHECKING:
    import docker

__all__ = ["DockerHousekeeping", "build_image", "remove_image", "container_memory", "engine_errors", "engine_version", "force_kill_container",
           "force_remove_container", "image_info", "list_containers", "list_networks", "list_services", "list_volumes",
           "lost_engine", "remove_network", "remove_service", "remove_volume", "scale_to_zero", "short", "stop_service"]


@contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """Translate docker-py and requests errors raised while `doing` into EngineError (the one mapping)."""
    import requests
    from docker.errors import DockerException

    try:
        yield
    except (DockerException, requests.RequestException) as exc:
        raise EngineError(f"the Docker engine failed to {doing} ({short(exc)}); check it with `scoperun doctor`.") from None


def short(exc: BaseException) -> str:
    """An engine error's text, cut to 300 characters (some carry whole responses)."""
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def lost_engine(exc: BaseException) -> str:
    """The message of a run whose engine went away under it."""
    return (f"lost the Docker engine during the run ({short(exc)}); the script may not have "
            f"finished. Check the engine with `scoperun doctor` and run it again.")


def _epoch(stamp: object) -> float | None:
    """Epoch seconds of an engine timestamp (RFC 3339, nanoseconds allowed); None if absent or unreadable."""
    try:
        return datetime.fromisoformat(str(stamp)).timestamp() if stamp else None
    except ValueError:
        return None


def _gone(call: Any, *args: Any, **kwargs: Any) -> bool:
    """Run an engine call; False if the engine says its object does not exist (404), True if it is done."""
    from docker.errors import NotFound

    try:
        call(*args, **kwargs)
    except NotFound:
        return False
    return True


def list_containers(client: docker.DockerClient, labels: tuple[str, ...], *, all_states: bool) -> list[ContainerInfo]:
    """The containers carrying every label (running ones unless `all_states`)."""
    with engine_errors("list containers"):
        found = client.api.containers(all=all_states, filters={"label": list(labels)})
    now = time.time()
    return [ContainerInfo(id=str(c["Id"]), name=str((c.get("Names") or ["?"])[0]).lstrip("/"),
                          state=str(c.get("State", "?")), created=float(c.get("Created") or now),
                          labels=dict(c.get("Labels") or {})) for c in found]


def container_memory(client: docker.DockerClient, container_id: str) -> int | None:
    """Memory in use (usage minus page cache, as the docker CLI shows it); None if the engine cannot say."""
    try:
        stats = client.api.stats(container_id, stream=False, one_shot=True)
        mem = stats.get("memory_stats") or {}
        usage = mem.get("usage")
        cache = (mem.get("stats") or {}).get("cache", 0)  # cgroup v1; the CLI shows usage - cache too
        return int(usage - cache) if usage is not None else None
    except Exception:  # a container that just ended, stats not supported: ps shows no figure
        return None


def force_kill_container(client: docker.DockerClient, container_id: str) -> bool:
    """SIGKILL a container; False if it is gone."""
    with engine_errors(f"kill container {container_id[:12]}"):
        return _gone(client.api.kill, container_id)


def force_remove_container(client: docker.DockerClient, container_id: str) -> bool:
    """Force-remove a container and its anonymous volumes; False if it is gone."""
    with engine_errors(f"remove container {container_id[:12]}"):
        return _gone(client.api.remove_container, container_id, force=True, v=True)


def list_services(client: docker.DockerClient, labels: tuple[str, ...]) -> list[ContainerInfo]:
    """The swarm services carrying every label, as ContainerInfo (state running, `service=True`)."""
    with engine_errors("list the swarm's services (is docker_host a swarm manager?)"):
        found = client.api.services(filters={"label": list(labels)})
    return [ContainerInfo(id=str(s["ID"]), name=str(s["Spec"]["Name"]), state="running",
                          created=_epoch(s.get("CreatedAt")) or time.time(),
                          labels=dict(s["Spec"].get("Labels") or {}), service=True) for s in found]


def scale_to_zero(api: Any, service_id: str) -> None:
    """Kill the task but keep the service (its logs) until they are read: stop grace 0, SIGKILL."""
    from docker.errors import DockerException

    for _ in range(5):
        try:
            info = api.inspect_service(service_id)
            api.update_service(service_id, version=info["Version"]["Index"],
                               task_template=info["Spec"]["TaskTemplate"], name=info["Spec"]["Name"],
                               labels=info["Spec"].get("Labels"), mode={"Replicated": {"Replicas": 0}})
            return
        except DockerException:
            time.sleep(0.2)


def stop_service(client: docker.DockerClient, service_id: str) -> bool:
    """Kill a service's task (scale it to zero, keeping its logs); False if the service is gone."""
    with engine_errors(f"stop service {service_id[:12]}"):
        if not _gone(client.api.inspect_service, service_id):
            return False
        scale_to_zero(client.api, service_id)
    return True


def remove_service(client: docker.DockerClient, service_id: str) -> bool:
    """Remove a service; False if it is gone."""
    with engine_errors(f"remove service {service_id[:12]}"):
        return _gone(client.api.remove_service, service_id)


def list_networks(client: docker.DockerClient, labels: tuple[str, ...]) -> list[NetworkInfo]:
    """The networks carrying every label."""
    with engine_errors("list networks"):
        found = client.api.networks(filters={"label": list(labels)})
    return [NetworkInfo(str(n["Id"]), str(n["Name"]), dict(n.get("Labels") or {})) for n in found]


def remove_network(client: docker.DockerClient, network_id: str) -> bool:
    """Remove a network; False if it is in use (409) or gone (404)."""
    from docker.errors import APIError

    with engine_errors(f"remove network {network_id[:12]}"):
        try:
            return _gone(client.api.remove_network, network_id)
        except APIError as exc:
            if exc.status_code == 409:
                return False
            raise


def list_volumes(client: docker.DockerClient, labels: tuple[str, ...]) -> list[VolumeInfo]:
    """The volumes carrying every label."""
    with engine_errors("list volumes"):
        found = client.api.volumes(filters={"label": list(labels)}).get("Volumes") or []
    return [VolumeInfo(str(v["Name"]), dict(v.get("Labels") or {}), _epoch(v.get("CreatedAt"))) for v in found]


def remove_volume(client: docker.DockerClient, name: str) -> VolumeRemoval:
    """Remove volume `name`: "removed", "in use" (409) or "gone" (404)."""
    from docker.errors import APIError

    with engine_errors(f"remove volume {name}"):
        try:
            return "removed" if _gone(client.api.remove_volume, name) else "gone"
        except APIError as exc:
            if exc.status_code == 409:
                return "in use"
            raise


def engine_version(client: docker.DockerClient) -> EngineVersion:
    """The engine's version, API version and components by lower-case name."""
    with engine_errors("report its version"):
        found = client.version()
    components = {str(c.get("Name", "")).lower(): str(c.get("Version", ""))
                  for c in found.get("Components") or [] if c.get("Version")}
    return EngineVersion(str(found.get("Version")), str(found.get("ApiVersion")), components)


def image_info(client: docker.DockerClient, tag: str) -> ImageInfo | None:
    """The image `tag`, or None if the engine does not have it."""
    from docker.errors import ImageNotFound

    with engine_errors(f"inspect image {tag}"):
        try:
            image = client.images.get(tag)
        except ImageNotFound:
            return None
        return ImageInfo(str(image.id), str(image.short_id), dict(image.labels or {}), tuple(image.tags or ()))


def build_image(client: docker.DockerClient, context: BinaryIO, *, tag: str, build_args: dict[str, str],
                labels: dict[str, str]) -> Iterator[BuildEvent]:
    """Stream a build of `tag` from a tar context: never pulling, intermediate containers removed even on failure."""
    with engine_errors(f"build image {tag}"):
        chunks: Iterator[dict[str, Any]] = client.api.build(
            fileobj=context, custom_context=True, tag=tag, buildargs=build_args, labels=labels,
            rm=True, forcerm=True, pull=False, decode=True)
        for chunk in chunks:
            if "error" in chunk:
                yield BuildEvent(error=str((chunk.get("errorDetail") or {}).get("message") or chunk["error"]).rstrip())
                return
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                yield BuildEvent(image_id=str(aux["ID"]))
            text = chunk.get("stream") or chunk.get("status")
            if text:
                yield BuildEvent(text=str(text))


def remove_image(client: docker.DockerClient, image_id: str) -> bool:
    """Remove an image and its untagged parents; False if it is gone or still needed (409)."""
    from docker.errors import APIError

    with engine_errors(f"remove image {image_id[:19]}"):
        try:
            return _gone(client.api.remove_image, image_id, noprune=False)
        except APIError as exc:
            if exc.status_code == 409:
                return False
            raise


class DockerHousekeeping:
    """EngineHousekeeping and ImageBuilder on one Docker engine; DockerBackend inherits it and supplies `client`."""

    @property
    def client(self) -> docker.DockerClient:
        """The engine client (made on first use by the backend)."""
        raise NotImplementedError

    def containers(self, *labels: str, all_states: bool = False) -> list[ContainerInfo]:
        """The containers carrying every label (running ones unless `all_states`)."""
        return list_containers(self.client, labels, all_states=all_states)

    def container_memory(self, container_id: str) -> int | None:
        """Memory a container uses now, or None."""
        return container_memory(self.client, container_id)

    def force_kill_container(self, container_id: str) -> bool:
        """SIGKILL a container; False if gone."""
        return force_kill_container(self.client, container_id)

    def force_remove_container(self, container_id: str) -> bool:
        """Force-remove a container with its anonymous volumes; False if gone."""
        return force_remove_container(self.client, container_id)

    def services(self, *labels: str) -> list[ContainerInfo]:
        """The swarm services carrying every label."""
        return list_services(self.client, labels)

    def stop_service(self, service_id: str) -> bool:
        """Kill a service's task (scaled to zero); False if gone."""
        return stop_service(self.client, service_id)

    def remove_service(self, service_id: str) -> bool:
        """Remove a service; False if gone."""
        return remove_service(self.client, service_id)

    def networks(self, *labels: str) -> list[NetworkInfo]:
        """The networks carrying every label."""
        return list_networks(self.client, labels)

    def remove_network(self, network_id: str) -> bool:
        """Remove a network; False if in use or gone."""
        return remove_network(self.client, network_id)

    def volumes(self, *labels: str) -> list[VolumeInfo]:
        """The volumes carrying every label."""
        return list_volumes(self.client, labels)

    def remove_volume(self, name: str) -> VolumeRemoval:
        """Remove a volume: removed, in use or gone."""
        return remove_volume(self.client, name)

    def engine_version(self) -> EngineVersion:
        """The engine's versions."""
        return engine_version(self.client)

    def image_info(self, tag: str) -> ImageInfo | None:
        """The image `tag`, or None."""
        return image_info(self.client, tag)

    # -- image builds (ImageBuilder) --

    def build_image(self, context: BinaryIO, *, tag: str, build_args: dict[str, str],
                    labels: dict[str, str]) -> Iterator[BuildEvent]:
        """Stream a local build of `tag`."""
        return build_image(self.client, context, tag=tag, build_args=build_args, labels=labels)

    def remove_image(self, image_id: str) -> bool:
        """Remove an image; False if gone or still needed."""
        return remove_image(self.client, image_id)
