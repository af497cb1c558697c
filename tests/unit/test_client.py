"""scoperun.Client against a real server on loopback (fake engine): retries, problems, results."""

from __future__ import annotations

import time

import pytest

from scoperun.config import Settings
from scoperun.errors import ServiceError
from scoperun.models import ExecutionRequest, Status
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE
from tests.service_helpers import serving

pytest.importorskip("fastapi")


def _app(settings: Settings, backend: FakeBackend):
    from scoperun.executor import Executor
    from scoperun.service.app import create_app

    return create_app(settings, Executor(settings, backend=backend), host="127.0.0.1", mount_mcp=False)


def test_client_waits_out_429_with_the_same_key_and_gets_the_result(settings: Settings) -> None:
    """With the queue full the client honours Retry-After, retries with its Idempotency-Key and gets one run."""
    from scoperun import Client

    full = settings.model_copy(update={"max_concurrent": 1, "max_queue": 0})
    backend = FakeBackend(script=lambda spec: FakeRun(stdout=b"done\n", sleep=1.5))
    with serving(_app(full, backend)) as url, Client(url, None, max_retry_wait=3) as client:
        first = client.submit(ExecutionRequest(script="Tools/hello.py", case=CASE))
        t0 = time.monotonic()
        result = client.run(ExecutionRequest(script="Tools/hello.py", case=CASE))  # 429 first, then accepted
        assert time.monotonic() - t0 >= 1.0  # it did wait for the slot
        assert result.status is Status.SUCCEEDED and result.stdout.text == "done\n"
        assert client.get(first)["status"] in ("running", "succeeded")
    assert len(backend.specs) == 2  # the retried request ran once


def test_client_raises_service_error_with_the_problem_code(settings: Settings) -> None:
    """A refused request becomes ServiceError carrying the server's status and stable code."""
    from scoperun import Client
    from scoperun.service.tokens import TokenStore

    TokenStore.from_settings(settings).create("someone", "read")
    with serving(_app(settings, FakeBackend())) as url:
        with Client(url, "sr_not-a-token") as client, pytest.raises(ServiceError) as info:
            client.submit(ExecutionRequest(script="Tools/hello.py", case=CASE))
        assert info.value.status == 401 and info.value.code == "unauthorized"
