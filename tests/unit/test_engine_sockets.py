"""A refused unix connection to the engine leaves no open socket behind (docker-py's own connect does)."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest

from scoperun.engine.docker import connect
from scoperun.errors import EngineError


def test_requests_to_a_stopped_engine_close_their_sockets(tmp_path: Path) -> None:
    """Once scoperun made a client, every docker-py request to an engine that is down (here: a socket
    path nothing listens on) closes the socket it opened, instead of leaving it to the garbage collector."""
    import docker
    from requests.exceptions import ConnectionError as RequestsConnectionError

    missing = f"unix://{tmp_path / 'docker.sock'}"
    with pytest.raises(EngineError):
        connect(missing, timeout=2)  # scoperun's door to the engine: refuses, says what to do
    client = docker.APIClient(base_url=missing, timeout=2, version="1.41")  # no version request on creation
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                with pytest.raises(RequestsConnectionError):
                    client.version()
            gc.collect()
    finally:
        client.close()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
