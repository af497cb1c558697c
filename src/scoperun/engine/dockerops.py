"""Docker housekeeping operations (volumes, ...) behind the engine contract, with one error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from scoperun.engine.base import EngineVersion, ImageInfo, VolumeInfo
from scoperun.errors import EngineError

if TYPE_CHECKING:
    import docker

__all__ = ["engine_errors", "engine_version", "image_info", "list_volumes", "lost_engine", "remove_volume", "short"]


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


def list_volumes(client: docker.DockerClient, label: str) -> list[VolumeInfo]:
    """The volumes carrying `label`."""
    with engine_errors("list volumes"):
        found = client.volumes.list(filters={"label": label})
        return [VolumeInfo(v.name, dict(v.attrs.get("Labels") or {})) for v in found]


def remove_volume(client: docker.DockerClient, name: str) -> bool:
    """Remove volume `name`; False if it is in use (409) or already gone (404)."""
    from docker.errors import APIError, NotFound

    with engine_errors(f"remove volume {name}"):
        try:
            client.api.remove_volume(name)
        except NotFound:
            return False
        except APIError as exc:
            if exc.status_code == 409:
                return False
            raise
    return True


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
        return ImageInfo(str(image.id), str(image.short_id), dict(image.labels or {}))
