"""The monitoring page in real headless Chromium (Debian's, driven by Playwright) against a real server
on loopback, real runs on the real engine and real files."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoperun.config import Settings
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration.conftest import read_record, unavailable

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SCRIPT = """
import time, pathlib
print("starting <b>not bold</b> & done?")
time.sleep(3)
pathlib.Path("notes/intake.txt").write_text("intake rewritten by the run\\nsecond line\\n")
pathlib.Path("notes/summary.txt").write_text("a new summary\\n")
print("wrote 2 files")
"""


class PageServer:
    """`scoperun serve`'s app (API and page) on uvicorn in a thread, on a free loopback port, with a
    read and an admin token in its token file."""

    def __init__(self, settings: Settings, executor: Executor) -> None:
        import uvicorn

        from scoperun.service.app import create_app
        from scoperun.service.tokens import TokenStore

        store = TokenStore.from_settings(settings)
        self.admin = store.create("alice", "admin")
        self.read = store.create("rita", "read")
        app = create_app(settings, executor, mount_mcp=False)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def page_server(settings: Settings, executor: Executor) -> Iterator[PageServer]:
    server = PageServer(settings, executor)
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[dev]'")
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing: run `make tools` (installs Debian's chromium as root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


def open_page(browser: Any, server: PageServer, token: str, *, phone: bool = False) -> tuple[Any, Any, list[str]]:
    """A fresh context logged in through the login form; returns (context, page, every URL it requested)."""
    size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
    context = browser.new_context(viewport=size)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server.url + "/runs")
    assert "/login" in page.url and "token" not in page.url.split("?", 1)[-1].replace("next=", "")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(server.url + "/runs")
    cookie = next(c for c in context.cookies() if c["name"] == "scoperun_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
    return context, page, requested


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_admin_sees_a_run_live_reads_it_and_rolls_it_back(settings: Settings, executor: Executor,
                                                         page_server: PageServer, browser: Any,
                                                         workspace: Path) -> None:
    """Log in, see a new run appear and finish live, read its escaped output, view its diff, roll it back
    with the button, and find the case restored on disk; the page asks nothing of another host."""
    case_dir = workspace / "projects" / CASE
    before = (case_dir / "notes" / "intake.txt").read_bytes()
    context, page, requested = open_page(browser, page_server, page_server.admin)
    try:
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(
            executor.run_code(SCRIPT, case=CASE, requested_by="page-test")))
        worker.start()
        row = page.locator("tr", has_text="page-test")
        row.wait_for(timeout=60_000)  # appears without a reload: the table polls
        assert page.url == page_server.url + "/runs"
        execution_id = row.get_attribute("data-id")
        row.locator(".status", has_text="succeeded").wait_for(timeout=120_000)
        worker.join(timeout=120)
        assert results and results[0].status.value == "succeeded", results
        assert results[0].execution_id == execution_id
        shot(page, "runs")

        row.get_by_role("link", name=execution_id).click()
        page.wait_for_url(f"{page_server.url}/runs/{execution_id}")
        stdout = page.locator("pre#stdout")
        assert "starting <b>not bold</b> & done?" in stdout.inner_text()
        assert stdout.locator("b").count() == 0  # shown as text, never as markup
        assert "wrote 2 files" in stdout.inner_text()
        with page.expect_download() as download:
            page.get_by_role("link", name="download full stdout").click()
        assert "wrote 2 files" in Path(download.value.path()).read_text()
        assert page.locator("#cs-status").inner_text() == "applied"
        diff = page.locator("pre.diff").first.inner_text()
        assert "-intake for" in diff and "+intake rewritten by the run" in diff
        assert "+a new summary" in page.locator("main").inner_text()
        shot(page, "run-detail")

        page.get_by_role("button", name="Roll back changes").click()
        page.get_by_role("button", name="Yes, roll back changes").wait_for()
        shot(page, "confirm")
        page.get_by_role("button", name="Yes, roll back changes").click()
        page.wait_for_url(f"{page_server.url}/runs/{execution_id}?done=rollback")
        assert page.locator("#cs-status").inner_text() == "rolled_back"
        assert (case_dir / "notes" / "intake.txt").read_bytes() == before
        assert not (case_dir / "notes" / "summary.txt").exists()
        events = read_record(workspace, execution_id)["events"]
        assert events[-1]["event"] == "rolled_back" and events[-1]["by"] == "page:alice"
        assert "rolled_back by page:alice" in page.locator("ul.events").inner_text()

        for path, name in (("/", "overview"), ("/cases", "cases"), ("/alerts", "alerts")):
            page.goto(page_server.url + path)
            page.locator("h1").wait_for()
            shot(page, name)
        page.goto(page_server.url + "/")
        assert page.locator("[data-target='success rate'] .verdict").inner_text() in ("OK", "BREACH")
        assert page.get_by_role("img", name="Runs per hour (bars) and success rate (line)").count() == 1
        off_host = [u for u in requested if not u.startswith(page_server.url)]
        assert off_host == []
    finally:
        context.close()


def test_phone_and_login_screens(settings: Settings, executor: Executor, page_server: PageServer,
                                 browser: Any) -> None:
    """At phone width the pages fit without sideways scrolling of the page itself; screenshots for docs/."""
    result = executor.run_code("print('hello from a phone screenshot')\n", case=CASE, requested_by="phone")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(page_server.url + "/login")
    shot(page, "login")
    context.close()
    context, page, _ = open_page(browser, page_server, page_server.read, phone=True)
    try:
        for path, name in (("/", "overview-phone"), ("/runs", "runs-phone"),
                           (f"/runs/{result.execution_id}", "run-detail-phone")):
            page.goto(page_server.url + path)
            page.locator("h1").wait_for()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"{path} is {width} px wide on a 390 px phone"
            shot(page, name)
    finally:
        context.close()


def test_read_token_sees_no_buttons_and_is_refused(settings: Settings, executor: Executor,
                                                   page_server: PageServer, browser: Any, workspace: Path) -> None:
    """A read token's page has no apply/rollback buttons, and the server refuses those POSTs from it."""
    result = executor.run_code("open('notes/intake.txt', 'a').write('more\\n')\n", case=CASE)
    assert result.changes is not None and result.changes.status.value == "applied"
    intake = (workspace / "projects" / CASE / "notes" / "intake.txt").read_bytes()
    context, page, _ = open_page(browser, page_server, page_server.read)
    try:
        page.goto(f"{page_server.url}/runs/{result.execution_id}")
        assert page.locator("#cs-status").inner_text() == "applied"
        assert page.get_by_role("button", name="Roll back changes").count() == 0
        assert page.locator("form[action$='/rollback'], form[action$='/apply']").count() == 0
        for action in ("rollback", "apply", "discard"):
            answer = page.request.post(f"{page_server.url}/runs/{result.execution_id}/{action}",
                                       form={"csrf": "guess", "confirm": "yes"})
            assert answer.status == 403, action
    finally:
        context.close()
    # The same refusal to a plain HTTP client holding a read session.
    with httpx.Client(base_url=page_server.url) as client:
        client.post("/login", data={"token": page_server.read, "next": "/"})
        assert client.post(f"/runs/{result.execution_id}/rollback", data={"confirm": "yes"}).status_code == 403
    assert (workspace / "projects" / CASE / "notes" / "intake.txt").read_bytes() == intake


def test_admin_post_without_csrf_or_from_another_origin_is_refused(settings: Settings, executor: Executor,
                                                                   page_server: PageServer) -> None:
    """An admin session still needs the form's CSRF token and a same-origin request to change anything."""
    result = executor.run_code("open('notes/intake.txt', 'a').write('x\\n')\n", case=CASE)
    with httpx.Client(base_url=page_server.url) as client:
        assert client.post("/login", data={"token": "wrong"}).status_code == 401
        client.post("/login", data={"token": page_server.admin, "next": "/"})
        url = f"/runs/{result.execution_id}/rollback"
        assert client.post(url, data={"confirm": "yes", "csrf": "nope"}).status_code == 403
        page = client.get(f"/runs/{result.execution_id}").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        foreign = client.post(url, data={"confirm": "yes", "csrf": csrf}, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403
        assert client.get(f"/runs/{result.execution_id}").headers["content-security-policy"].startswith(
            "default-src 'self'")


def test_screenshots_dir_is_checked_in() -> None:
    """docs/screenshots exists in the repository (the browser tests refresh its images)."""
    assert SHOTS.is_dir() or shutil.which("git") is None


def test_page_lives_beside_the_api_and_revoking_a_token_ends_its_session(settings: Settings,
                                                                         page_server: PageServer) -> None:
    """The API keeps its problem documents and bearer auth next to the page; a revoked token's cookie stops working."""
    from scoperun.service.tokens import TokenStore

    with httpx.Client(base_url=page_server.url) as client:
        assert client.get("/v1/nothing-here").json()["code"] == "not-found"
        who = client.get("/v1/whoami", headers={"Authorization": f"Bearer {page_server.read}"}).json()
        assert who["name"] == "rita"
        assert client.get("/", follow_redirects=False).status_code == 303
        assert client.post("/login", data={"token": page_server.read, "next": "/runs"}).status_code == 303
        assert client.get("/runs", follow_redirects=False).status_code == 200
        assert client.get("/static/page.js").headers["content-security-policy"].startswith("default-src 'self'")
        TokenStore.from_settings(settings).revoke("rita")
        gone = client.get("/runs", follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login?next=")


def test_run_page_shows_output_live_while_the_run_goes_on(settings: Settings, page_server: PageServer,
                                                          browser: Any) -> None:
    """A run started through the API shows its output on its page while it runs, then its result, with no
    reload by the user."""
    code = "import time\nprint('tick 1', flush=True)\ntime.sleep(6)\nprint('tick 2', flush=True)\n"
    with httpx.Client(base_url=page_server.url, headers={"Authorization": f"Bearer {page_server.admin}"}) as api:
        answer = api.post("/v1/runs", json={"code": code, "case": CASE, "script_name": "live.py"})
        assert answer.status_code == 202, answer.text
        execution_id = answer.json()["execution_id"]
    context, page, _ = open_page(browser, page_server, page_server.admin)
    try:
        page.goto(f"{page_server.url}/runs/{execution_id}")
        # Opened at once: the run may still be queued, with no record yet; the page follows it anyway.
        page.locator("pre#stdout", has_text="tick 1").wait_for(timeout=60_000)
        assert page.locator("#run-status").inner_text() == "running"
        assert "tick 2" not in page.locator("pre#stdout").inner_text()
        assert page.get_by_role("button", name="Stop run").count() == 1
        page.locator("#run-status", has_text="succeeded").wait_for(timeout=120_000)
        assert "tick 2" in page.locator("pre#stdout").inner_text()
    finally:
        context.close()


def test_admin_stops_a_running_run_from_its_page(settings: Settings, page_server: PageServer, browser: Any,
                                                 docker_client) -> None:
    """The Stop button (after its confirmation) kills the run's container; the run ends cancelled, audited."""
    code = "import time\nprint('long job', flush=True)\ntime.sleep(120)\n"
    with httpx.Client(base_url=page_server.url, headers={"Authorization": f"Bearer {page_server.admin}"}) as api:
        execution_id = api.post("/v1/runs", json={"code": code, "case": CASE}).json()["execution_id"]
    context, page, _ = open_page(browser, page_server, page_server.admin)
    try:
        page.goto(f"{page_server.url}/runs/{execution_id}")
        page.locator("pre#stdout", has_text="long job").wait_for(timeout=60_000)
        page.get_by_role("button", name="Stop run").click()
        page.get_by_role("button", name="Yes, stop run").click()
        page.wait_for_url(f"{page_server.url}/runs/{execution_id}?done=stop")
        page.locator("#run-status", has_text="cancelled").wait_for(timeout=60_000)
    finally:
        context.close()
    record = read_record(settings.workspace, execution_id)
    assert record["status"] == "cancelled" and "page:alice" in json.dumps(record)
