"""The cases and files routes through a real server on loopback (no engine): roles, bytes, problems."""

from __future__ import annotations

import httpx
import pytest

from scoperun.config import Settings
from scoperun.files import read_access_events
from scoperun.service.tokens import TokenStore
from scoperun.testing import FakeBackend
from tests.conftest import CASE, OTHER_CASE
from tests.service_helpers import serving

pytest.importorskip("fastapi")


def _app(settings: Settings):
    from scoperun.executor import Executor
    from scoperun.service.app import create_app

    return create_app(settings, Executor(settings, backend=FakeBackend()), mount_mcp=False)


def test_cases_files_text_and_exact_bytes_over_http(settings: Settings) -> None:
    """A reader lists cases and files, reads text and downloads exact bytes; the access is audited by token name."""
    store = TokenStore.from_settings(settings)
    read = {"Authorization": f"Bearer {store.create('paralegal', 'read')}"}
    with serving(_app(settings)) as url:
        cases = httpx.get(f"{url}/v1/cases", headers=read).json()
        assert [c["name"] for c in cases["cases"]] == [CASE, OTHER_CASE] and cases["cases"][0]["files"] == 1
        listing = httpx.get(f"{url}/v1/cases/{CASE}/files", params={"recursive": True}, headers=read).json()
        assert [e["path"] for e in listing["entries"]] == ["notes", "notes/intake.txt"]
        text = httpx.get(f"{url}/v1/cases/{CASE}/text", params={"path": "notes/intake.txt"}, headers=read).json()
        assert text["text"] == f"intake for {CASE}\n" and text["truncated"] is False
        raw = httpx.get(f"{url}/v1/cases/{CASE}/content", params={"path": "notes/intake.txt"}, headers=read)
        assert raw.content == f"intake for {CASE}\n".encode() and raw.headers["content-type"] == "application/octet-stream"
    event = read_access_events(settings, settings.workspace.resolve())[-1]
    assert event["event"] == "files.download" and event["by"] == "http/paralegal"


def test_upload_needs_the_run_role_and_is_staged(settings: Settings) -> None:
    """PUT content is 403 for a reader; a runner's upload lands through a change set with its execution id."""
    store = TokenStore.from_settings(settings)
    read = {"Authorization": f"Bearer {store.create('reader', 'read')}"}
    run = {"Authorization": f"Bearer {store.create('agent', 'run')}"}
    blob = bytes(range(256)) * 4
    with serving(_app(settings)) as url:
        denied = httpx.put(f"{url}/v1/cases/{CASE}/content", params={"path": "up/b.bin"}, content=blob, headers=read)
        assert denied.status_code == 403
        done = httpx.put(f"{url}/v1/cases/{CASE}/content", params={"path": "up/b.bin"}, content=blob, headers=run)
        assert done.status_code == 201, done.text
        body = done.json()
        assert body["execution_id"].startswith("exec_") and body["change_set"]["status"] == "applied"
        back = httpx.get(f"{url}/v1/cases/{CASE}/content", params={"path": "up/b.bin"}, headers=read)
        assert back.content == blob


@pytest.mark.parametrize(("case", "path", "status", "code", "rule"), [
    ("doe-john", "notes/intake.txt", 404, "unknown-case", "unknown-case"),
    (CASE, "notes/missing.txt", 404, "file-not-found", "not-found"),
    (CASE, f"../{OTHER_CASE}/secret.txt", 403, "outside-scope", "path-traversal"),
    (CASE, "/etc/passwd", 403, "outside-scope", "absolute-path"),
])
def test_refusals_are_problem_documents(settings: Settings, case: str, path: str, status: int, code: str,
                                        rule: str) -> None:
    """Unknown cases, missing files and paths leaving the case are RFC 9457 problems with the refusal's rule."""
    with serving(_app(settings)) as url:
        r = httpx.get(f"{url}/v1/cases/{case}/text", params={"path": path})
    assert r.status_code == status and r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["rule"] == rule
    if code == "unknown-case":
        assert f"did you mean '{CASE}'" in body["detail"]
