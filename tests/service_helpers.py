"""A real uvicorn server on loopback for the service tests (in a thread of the test process)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: Any, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yield its base URL; stop it afterwards."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def stopped_after(docker_client, container_id: str, t0: float, *, patience: float = 10.0) -> float:
    """Seconds from `t0` (monotonic) until the engine reports the container not running (or gone)."""
    import docker

    while time.monotonic() - t0 < patience:
        try:
            if not docker_client.api.inspect_container(container_id)["State"]["Running"]:
                break
        except docker.errors.NotFound:
            break
        time.sleep(0.01)
    return time.monotonic() - t0
