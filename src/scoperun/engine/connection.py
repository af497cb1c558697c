"""Connecting to a Docker engine: one client maker that says what to do when the engine is not there."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from scoperun.errors import EngineError

if TYPE_CHECKING:
    import docker

__all__ = ["connect"]


def _close_refused_unix_sockets() -> None:
    """Make docker-py close the socket of a unix connection the engine refused (once per process).

    docker-py's `UnixHTTPConnection.connect` opens a socket and only keeps it once connected: while
    the engine is down (restarting, stopped) every request leaves one open socket behind for the
    garbage collector. Same steps as docker-py's, plus the close.
    """
    from docker.transport import unixconn

    if getattr(unixconn.UnixHTTPConnection.connect, "_scoperun_closes", False):
        return

    def connect(self: Any) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    connect._scoperun_closes = True  # type: ignore[attr-defined]
    unixconn.UnixHTTPConnection.connect = connect


def connect(base_url: str | None = None, timeout: float | None = 60) -> docker.DockerClient:
    """Make a docker-py client (API version negotiated) or raise EngineError saying what to do."""
    import os

    import docker
    from docker.errors import DockerException

    _close_refused_unix_sockets()
    client: docker.DockerClient | None = None
    address = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    source = ("SCOPERUN_DOCKER_HOST" if base_url else "DOCKER_HOST" if os.environ.get("DOCKER_HOST")
              else "the default socket")
    try:
        if address.startswith("unix://"):
            # Knock first: docker-py leaves the socket of a refused unix connection open.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                try:
                    probe.connect(address[len("unix://"):])
                except OSError as exc:
                    raise DockerException(f"cannot connect to {address}: {exc.strerror or exc}") from None
        client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        if client is not None:
            client.close()  # its connection pool holds a socket
        fix = (f"check {source} (or unset it to use the local socket)" if source != "the default socket"
               else "start it (`make engine` as root, or `sudo systemctl start docker`)")
        raise EngineError(
            f"cannot reach the Docker engine at {address} ({source}): {exc}. To fix: {fix}; then check "
            f"with `scoperun doctor`."
        ) from None
    return client
