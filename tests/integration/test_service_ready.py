"""/readyz asks the engine through the contract: green with the runner image present, 503 saying why otherwise."""

from __future__ import annotations

import httpx
import pytest

from scoperun.config import Settings
from scoperun.executor import Executor
from tests.service_helpers import serving

pytest.importorskip("fastapi")
pytestmark = pytest.mark.integration


def _ready(settings: Settings) -> httpx.Response:
    from scoperun.service.app import create_app

    executor = Executor(settings)
    try:
        with serving(create_app(settings, executor, ping_interval=1.0)) as url:
            return httpx.get(f"{url}/readyz", timeout=30)
    finally:
        executor.close()


def test_readyz_checks_the_engine_and_the_image(settings: Settings) -> None:
    """With the engine up and the image present /readyz is 200; a missing image or engine is 503 naming it."""
    ok = _ready(settings)
    assert ok.status_code == 200, ok.text
    assert {c["name"]: c["ok"] for c in ok.json()["checks"]}["engine"] is True
    missing = _ready(settings.model_copy(update={"image": "scoperun-runner:no-such-tag"}))
    engine = next(c for c in missing.json()["checks"] if c["name"] == "engine")
    assert missing.status_code == 503 and not engine["ok"] and "scoperun image build" in engine["detail"]
    down = _ready(settings.model_copy(update={"docker_host": "tcp://127.0.0.1:9"}))
    engine = next(c for c in down.json()["checks"] if c["name"] == "engine")
    assert down.status_code == 503 and "tcp://127.0.0.1:9" in engine["detail"]
