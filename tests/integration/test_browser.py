"""Browser runs on the real engine with real Chromium, against a web server this test starts itself.

The server is a second container (the runner image's python -m http.server with a tiny handler)
on a private Docker network the module creates; the browser container joins that network. No
traffic leaves the engine's own networks.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scoperun.browser import BrowserRequest, run_browser
from scoperun.config import Settings
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration.conftest import IMAGE, read_record, unavailable

BROWSER_IMAGE = os.environ.get("SCOPERUN_TEST_BROWSER_IMAGE", "scoperun-browser:latest")
TEST_LABEL = {"org.scoperun.test": "1"}

FORM_PAGE = """<!doctype html>
<html><head><title>Intake form</title></head>
<body>
<h1 id="heading">Client intake</h1>
<form method="post" action="/submit">
  <textarea id="note" name="note"></textarea>
  <select id="kind" name="kind"><option value="mva">MVA</option><option value="slip">Slip and fall</option></select>
  <button id="send" type="submit">Send</button>
</form>
<a href="/docs/a.html">A</a> <a href="https://example.invalid/b">B</a>
</body></html>
"""

# Echoes the POSTed note (HTML-escaped) and keeps the raw bytes it received in /data; /hang
# accepts the request and never answers.
SERVER = r'''
import html, http.server, os, time, urllib.parse

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hang":
            time.sleep(3600)
        return super().do_GET()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        note = form.get("note", [""])[0].replace("\r\n", "\n")  # forms send CRLF line ends
        with open("/data/received.txt", "w", encoding="utf-8") as fh:
            fh.write(note)
        page = ("<!doctype html><html><head><title>Received</title></head><body>"
                f"<pre id='echo'>{html.escape(note)}</pre><p id='kind'>{html.escape(form.get('kind', [''])[0])}</p>"
                "</body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

os.chdir("/site")
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
'''

# Quotes, newlines, HTML, JS and Python: typed as text, it must reach the server byte for byte.
NASTY = (
    "O'Brien said \"stop\"\n"
    "</textarea><script>document.title='pwned'</script>\n"
    "\"); import os; os.system('touch /workspace/projects/pwned') #\n"
    "${7*7} `id` {{ config }} \\n \\\" '; DROP TABLE cases; --"
)


@pytest.fixture(scope="module")
def browser_image(docker_client: Any) -> str:
    """The browser image (built by `make image`); a failure under CI, never a skip."""
    import docker.errors

    try:
        docker_client.images.get(BROWSER_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"{BROWSER_IMAGE} is missing; build it with `scoperun image build --browser` (or `make image`)")
    return BROWSER_IMAGE


@pytest.fixture(scope="module")
def web(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A form site served by a labelled container on a private network; both removed afterwards."""
    root = tmp_path_factory.mktemp("site")
    site, data = root / "site", root / "data"
    site.mkdir()
    data.mkdir()
    (site / "form.html").write_text(FORM_PAGE)
    (root / "server.py").write_text(SERVER)
    for path in (root, site, data, site / "form.html", root / "server.py"):
        path.chmod(0o777 if path.is_dir() else 0o644)  # the server runs as uid 1000
    suffix = secrets.token_hex(4)
    network = docker_client.networks.create(f"scoperun-test-web-{suffix}", driver="bridge", labels=TEST_LABEL)
    name = f"scoperun-test-web-{suffix}"
    server = None
    try:
        server = docker_client.containers.run(
            IMAGE, ["python", "/srv/server.py"], name=name, detach=True, labels=TEST_LABEL,
            network=network.name, user="1000:1000", cap_drop=["ALL"], read_only=True,
            volumes={str(site): {"bind": "/site", "mode": "ro"}, str(data): {"bind": "/data", "mode": "rw"},
                     str(root / "server.py"): {"bind": "/srv/server.py", "mode": "ro"}},
        )
        probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/form.html', timeout=2)"
        deadline = time.monotonic() + 30
        while server.exec_run(["python", "-c", probe]).exit_code != 0:
            assert time.monotonic() < deadline, server.logs().decode()
            time.sleep(0.3)
        yield {"base": f"http://{name}:8000", "network": network.name, "data": data}
    finally:
        if server is not None:
            server.remove(force=True)
        network.remove()


@pytest.fixture
def browser_executor(settings: Settings, executor: Executor, browser_image: str, web: dict[str, Any]) -> Executor:
    """The integration executor, with the browser image and the test site's network."""
    executor.settings = settings.model_copy(update={"browser_image": browser_image, "network": web["network"]})
    return executor


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (asserting the signature first)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_form_is_filled_submitted_extracted_and_saved(browser_executor: Executor, web: dict, workspace: Path) -> None:
    """Fill, select, click, wait, extract, screenshot and PDF on a real form; a hostile value stays literal text."""
    actions = [
        {"action": "extract_links", "name": "links"},
        {"action": "fill", "selector": "#note", "value": NASTY},
        {"action": "select", "selector": "#kind", "value": "slip"},
        {"action": "click", "selector": "#send"},
        {"action": "wait_for", "selector": "#echo"},
        {"action": "extract_text", "selector": "#echo", "name": "echo"},
        {"action": "extract_text", "selector": "#kind", "name": "kind"},
        {"action": "screenshot", "name": "received"},
        {"action": "pdf", "name": "received"},
    ]
    request = BrowserRequest(url=f"{web['base']}/form.html", actions=actions, case=CASE, timeout=120)
    result = run_browser(browser_executor, request)
    ex = result.execution
    assert ex.status.value == "succeeded", (ex.message, ex.stderr.text)
    assert (web["data"] / "received.txt").read_text(encoding="utf-8") == NASTY  # byte for byte
    assert result.extracted["echo"] == NASTY and result.extracted["kind"] == "slip"
    assert result.extracted["links"] == [f"{web['base']}/docs/a.html", "https://example.invalid/b"]
    assert result.title == "Received" and result.final_url == f"{web['base']}/submit"

    folder = f"browser/{ex.execution_id}"
    assert result.files == [f"{folder}/received.png", f"{folder}/received.pdf", f"{folder}/final.png"]
    case_dir = workspace / "projects" / CASE
    assert png_size((case_dir / folder / "received.png").read_bytes()) == (1280, 720)
    assert (case_dir / folder / "received.pdf").read_bytes()[:5] == b"%PDF-"
    # Nothing else changed: only the run's own folder appeared in the case, nothing in the workspace.
    made = sorted(p.relative_to(case_dir).as_posix() for p in case_dir.rglob("*"))
    assert made == ["browser", folder, *(f"{folder}/{n}" for n in
                    ("final.png", "received.pdf", "received.png", "result.json")), "notes", "notes/intake.txt"]
    assert not list(workspace.rglob("pwned"))

    record = read_record(workspace, ex.execution_id)
    assert record["status"] == "succeeded" and record["case_name"] == CASE
    assert ex.image == BROWSER_IMAGE and ex.limits is not None and ex.limits.memory == "2g"
    spec = json.loads((workspace / ex.script.removeprefix("browser:")).read_text())
    assert spec["actions"][1]["value"] == NASTY  # the actions were data, kept for the audit


def test_failing_action_via_cli_keeps_what_was_extracted(workspace: Path, browser_image: str, web: dict,
                                                         docker_client: Any, tmp_path: Path) -> None:
    """`scoperun browse` ends `failed` at a missing selector with its index; earlier extractions are kept."""
    actions = tmp_path / "actions.json"
    actions.write_text(json.dumps([
        {"action": "extract_text", "selector": "#heading", "name": "heading"},
        {"action": "click", "selector": "#no-such-button", "timeout_ms": 2000},
        {"action": "extract_text", "selector": "#heading", "name": "never"},
    ]))
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_BROWSER_IMAGE": browser_image}
    proc = subprocess.run(
        [sys.executable, "-m", "scoperun", "browse", "--case", CASE, "--url", f"{web['base']}/form.html",
         "--actions", str(actions), "--network", web["network"], "--timeout", "120", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["execution"]["status"] == "failed" and result["failed_action"] == 1
    assert result["extracted"] == {"heading": "Client intake"}
    assert "#no-such-button" in result["error"] and "action 1 (click)" in result["error"]
    assert result["execution"]["message"] == result["error"]  # the audit record says it too
    assert read_record(workspace, result["execution"]["execution_id"])["status"] == "failed"
    assert any(f.endswith("/final.png") for f in result["files"])  # the page as the failure left it


def test_page_that_never_loads_ends_at_the_timeout(browser_executor: Executor, web: dict) -> None:
    """A start page that never answers ends the run `timed_out` at the run's timeout, saying where."""
    request = BrowserRequest(url=f"{web['base']}/hang", actions=[{"action": "screenshot", "name": "never"}],
                             case=CASE, timeout=10)
    result = run_browser(browser_executor, request)
    assert result.execution.status.value == "timed_out"
    assert result.failed_action is None and "while opening the start URL" in (result.error or "")
    assert result.files == [] and result.execution.durations.run < 60


def test_agent_browser_tool_drives_the_real_browser(browser_executor: Executor, web: dict, workspace: Path) -> None:
    """The agent tool execute_browser_automation runs real Chromium and reports extraction and files as markdown."""
    from scoperun.tools import core

    actions = [{"action": "fill", "selector": "#note", "value": "Call the adjuster"},
               {"action": "click", "selector": "#send"},
               {"action": "wait_for", "selector": "#echo"},
               {"action": "extract_text", "selector": "#echo", "name": "echo"}]
    reply = core.execute_browser_automation(browser_executor, f"{web['base']}/form.html", actions, CASE)
    assert reply.ok, str(reply)
    assert "Call the adjuster" in str(reply) and "final.png" in str(reply)
    assert "Database/script_executions/" in str(reply)
    bad = core.execute_browser_automation(browser_executor, "file:///etc/passwd", actions, CASE)
    assert not bad.ok and "refused" in str(bad)
