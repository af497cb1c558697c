"""Tokens, roles, Host/Origin checks and problem documents, through a real server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from scoperun.config import Settings
from scoperun.errors import ConfigError
from scoperun.service.tokens import TokenStore
from scoperun.testing import FakeBackend
from tests.service_helpers import serving

pytest.importorskip("fastapi")


def _app(settings: Settings, host: str = "127.0.0.1"):
    from scoperun.executor import Executor
    from scoperun.service.app import create_app

    return create_app(settings, Executor(settings, backend=FakeBackend()), host=host, mount_mcp=False)


def test_token_file_holds_only_hashes(settings: Settings) -> None:
    """A created token authenticates, the file holds its SHA-256 but never the token, mode 0600."""
    store = TokenStore.from_settings(settings)
    token = store.create("agent", "run")
    text = store.path.read_text()
    assert token not in text and json.loads(text)["tokens"][0]["sha256"]
    assert store.path.stat().st_mode & 0o777 == 0o600
    principal = store.authenticate(token)
    assert principal is not None and (principal.name, principal.role) == ("agent", "run")
    assert store.authenticate(token + "x") is None


def test_revoked_token_is_refused_by_another_store_instance(settings: Settings) -> None:
    """Revoking through one store (the CLI) makes every other instance (the server) refuse the token."""
    server_view, cli_view = TokenStore.from_settings(settings), TokenStore.from_settings(settings)
    token = cli_view.create("agent", "admin")
    assert server_view.authenticate(token) is not None
    cli_view.revoke("agent")
    assert server_view.authenticate(token) is None
    with pytest.raises(ConfigError):
        cli_view.revoke("agent")


def test_bad_names_and_roles_are_refused(settings: Settings) -> None:
    """A token name with spaces or slashes, or an unknown role, is refused with a ConfigError."""
    store = TokenStore.from_settings(settings)
    for name, role in (("a b", "run"), ("../x", "run"), ("ok", "root")):
        with pytest.raises(ConfigError):
            store.create(name, role)


def test_role_matrix_over_http(settings: Settings) -> None:
    """No token 401 with WWW-Authenticate; read sees stats; a revoked token is 401 on its next request."""
    store = TokenStore.from_settings(settings)
    read = store.create("reader", "read")
    with serving(_app(settings)) as url:
        r = httpx.get(f"{url}/v1/whoami")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "unauthorized" and r.json()["type"] == "urn:scoperun:problem:unauthorized"
        ok = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {read}"})
        assert ok.json() == {"name": "reader", "role": "read", "anonymous": False}
        stats = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {read}"})
        assert stats.status_code == 200 and stats.json()["queue"]["max_concurrent"] == settings.max_concurrent
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {read}"})
        assert "scoperun_queue_depth" in metrics.text
        assert httpx.get(f"{url}/v1/whoami", headers={"Authorization": "Bearer sr_wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Basic {read}"}).status_code == 401
        store.revoke("reader")
        gone = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {read}"})
        assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
        assert httpx.get(f"{url}/healthz").json()["ok"] is True


def test_open_loopback_server_closes_once_a_token_exists(settings: Settings) -> None:
    """With no token a loopback server answers as anonymous admin; the first token made closes it."""
    with serving(_app(settings)) as url:
        assert httpx.get(f"{url}/v1/whoami").json()["anonymous"] is True
        TokenStore.from_settings(settings).create("first", "admin")
        assert httpx.get(f"{url}/v1/whoami").status_code == 401


def test_beyond_loopback_without_tokens_is_refused(settings: Settings) -> None:
    """create_app refuses a non-loopback host while no token exists, and accepts it once one does."""
    with pytest.raises(ConfigError, match="without tokens"):
        _app(settings, host="0.0.0.0")
    TokenStore.from_settings(settings).create("ops", "admin")
    assert _app(settings, host="0.0.0.0") is not None


def test_host_and_origin_checks(settings: Settings) -> None:
    """A foreign Host header gets 421 and a cross-origin request 403 (DNS rebinding); same-origin passes."""
    with serving(_app(settings)) as url:
        port = url.rsplit(":", 1)[1]
        r = httpx.get(f"{url}/healthz", headers={"Host": "evil.example"})
        assert r.status_code == 421 and r.json()["code"] == "misdirected"
        r = httpx.get(f"{url}/v1/whoami", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["code"] == "bad-origin"
        r = httpx.get(f"{url}/v1/whoami", headers={"Origin": "http://127.0.0.1:1"})
        assert r.status_code == 403
        r = httpx.get(f"{url}/v1/whoami", headers={"Origin": f"http://127.0.0.1:{port}"})
        assert r.status_code == 200
        assert httpx.get(f"{url}/healthz", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_errors_are_problem_documents(settings: Settings) -> None:
    """Unknown routes, wrong methods and invalid queries answer application/problem+json with a code."""
    with serving(_app(settings)) as url:
        r = httpx.get(f"{url}/v1/nothing-here")
        assert (r.status_code, r.json()["code"]) == (404, "not-found")
        r = httpx.post(f"{url}/healthz")
        assert (r.status_code, r.json()["code"]) == (405, "method-not-allowed")
        r = httpx.get(f"{url}/docs")
        assert r.status_code == 200 and "swagger" in r.text.lower()
        assert "/v1/stats" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_token_cli_creates_lists_and_revokes(settings: Settings, tmp_path: Path) -> None:
    """`scoperun token create` prints the token once; list shows no hash; revoke marks it revoked."""
    from typer.testing import CliRunner

    from scoperun.cli.main import app

    runner = CliRunner()
    ws = ["--workspace", str(settings.workspace)]
    made = runner.invoke(app, [*ws, "token", "create", "page", "--role", "admin", "--json"])
    assert made.exit_code == 0, made.output
    token = json.loads(made.stdout)["token"]
    listed = runner.invoke(app, [*ws, "token", "list", "--json"])
    assert token not in listed.stdout and "sha256" not in listed.stdout and '"page"' in listed.stdout
    assert runner.invoke(app, [*ws, "token", "revoke", "page"]).exit_code == 0
    assert TokenStore.from_settings(settings).authenticate(token) is None
