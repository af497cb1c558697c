"""scoperun's fixed browser runner, shipped in the browser image and run as-is for every browser run.

It reads a JSON spec (start URL, declarative actions, output folder) from the read-only file
named by $SCOPERUN_BROWSER_SPEC, drives headless Chromium through Playwright, and keeps a JSON
result (final URL, title, extracted values, saved files, failed action) in <output>/result.json,
rewritten after every action so a run killed at its timeout still leaves what it got.

Every value from the spec is handed to Playwright as a plain argument (a URL, a selector, text to
type); none is ever evaluated, formatted into code or passed to a shell. Exit codes: 0 all
actions done, 1 an action (or the start URL) failed, 2 the spec or the browser is unusable.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any
from urllib.parse import urlsplit

SPEC_ENV = "SCOPERUN_BROWSER_SPEC"
DEFAULT_SPEC = "/scoperun/browser/spec.json"
CHROMIUM = os.environ.get("SCOPERUN_CHROMIUM", "/usr/bin/chromium")
# The container is the sandbox (non-root, no capabilities, read-only root, scoped mounts):
# Chromium's own sandbox needs privileges the container deliberately lacks. The rest keep a
# closed network quiet and avoid GPU probing.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--mute-audio",
]
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SAFE_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
LINKS_JS = "els => els.map(e => e.href)"  # fixed code of this program; never caller input


class ActionFailed(Exception):
    """An action could not be carried out; the message is shown to the caller as is."""


def check_url(url: Any) -> str:
    """Only http and https: file:, javascript:, data: and the rest are refused here too."""
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https") or not urlsplit(url).netloc:
        raise ActionFailed(f"refused URL {url!r}: only http:// and https:// URLs are allowed")
    return url


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise ActionFailed(f"refused name {name!r}: use letters, digits, - and _ (at most 64)")
    return name


class Runner:
    """Carries out one spec and keeps the result file up to date."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        out = spec.get("output_dir")
        # The output folder is relative to the working directory (the case); never absolute, no `..`.
        if not isinstance(out, str) or not SAFE_DIR.match(out) or ".." in out.split("/"):
            raise ActionFailed(f"refused output folder {out!r}")
        self.out_dir = out
        os.makedirs(out, mode=0o755, exist_ok=True)
        self.result: dict[str, Any] = {
            "final_url": None, "title": None, "extracted": {}, "files": [],
            "failed_action": None, "error": None, "completed_actions": 0,
            # The step under way (-1: the start URL): what a run killed at its timeout was doing.
            "running_action": None,
        }
        self.timeout_ms = int(spec.get("action_timeout_ms") or 15000)
        self.page: Any = None

    def save(self) -> None:
        """Write result.json atomically (a reader never sees half of it)."""
        if self.page is not None:
            try:
                self.result["final_url"] = self.page.url
                self.result["title"] = self.page.title()
            except Exception:
                pass
        tmp = os.path.join(self.out_dir, ".result.json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.result, fh, ensure_ascii=False)
        os.replace(tmp, os.path.join(self.out_dir, "result.json"))

    def path_for(self, name: str, suffix: str) -> str:
        path = os.path.join(self.out_dir, check_name(name) + suffix)
        if path in self.result["files"]:
            raise ActionFailed(f"a file named {name}{suffix} was already saved in this run; pick another name")
        return path

    def timeout(self, action: dict[str, Any]) -> int:
        value = action.get("timeout_ms")
        return int(value) if isinstance(value, int) and value > 0 else self.timeout_ms

    def goto(self, url: str) -> None:
        # No own navigation timeout: the run's timeout governs, so a page that never loads ends
        # the run `timed_out` instead of a guess at what "slow" means.
        self.page.goto(check_url(url), timeout=0, wait_until="load")

    def do(self, action: dict[str, Any]) -> None:
        """Carry out one action. Unknown kinds and bad fields fail the action, never the runner."""
        kind = action.get("action")
        page, t = self.page, self.timeout(action)
        if kind == "goto":
            self.goto(action.get("url"))
        elif kind == "click":
            page.locator(str(action["selector"])).first.click(timeout=t)
        elif kind == "fill":
            page.locator(str(action["selector"])).first.fill(str(action["value"]), timeout=t)
        elif kind == "press":
            page.locator(str(action["selector"])).first.press(str(action["key"]), timeout=t)
        elif kind == "select":
            page.locator(str(action["selector"])).first.select_option(str(action["value"]), timeout=t)
        elif kind == "wait_for":
            if action.get("selector") is not None:
                state = action.get("state") or "visible"
                page.locator(str(action["selector"])).first.wait_for(state=state, timeout=t)
            else:
                page.wait_for_timeout(int(action["milliseconds"]))
        elif kind == "extract_text":
            name = check_name(action["name"])
            loc = page.locator(str(action["selector"]))
            if action.get("all"):
                loc.first.wait_for(state="attached", timeout=t)
                self.result["extracted"][name] = loc.all_inner_texts()
            else:
                self.result["extracted"][name] = loc.first.inner_text(timeout=t)
        elif kind == "extract_links":
            name = check_name(action["name"])
            scope = action.get("selector")
            links = (page.locator(str(scope)).locator("a[href]") if scope else page.locator("a[href]"))
            self.result["extracted"][name] = [h for h in links.evaluate_all(LINKS_JS) if isinstance(h, str)]
        elif kind == "screenshot":
            path = self.path_for(action["name"], ".png")
            page.screenshot(path=path, full_page=bool(action.get("full_page")), timeout=t)
            self.result["files"].append(path)
        elif kind == "pdf":
            path = self.path_for(action["name"], ".pdf")
            page.pdf(path=path)
            self.result["files"].append(path)
        else:
            raise ActionFailed(f"unknown action {kind!r}")

    def run(self) -> int:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        actions = self.spec.get("actions")
        if not isinstance(actions, list):
            raise ActionFailed("the spec has no action list")
        viewport = self.spec.get("viewport") or {"width": 1280, "height": 720}
        self.save()
        try:
            manager = sync_playwright()
            pw = manager.__enter__()
        except Exception as exc:
            self.result["error"] = f"Playwright's driver did not start: {first_line(exc)}"
            self.save()
            return 2
        try:
            try:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            except PlaywrightError as exc:
                self.result["error"] = f"Chromium did not start: {first_line(exc)}"
                self.save()
                return 2
            return self._drive(browser, actions, viewport)
        finally:
            manager.__exit__(None, None, None)

    def explain(self, action: Any, exc: BaseException) -> str:
        """A message that says what was being waited for, not Playwright's call log."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        if isinstance(exc, KeyError):
            return f"missing field {exc}"
        if isinstance(exc, PlaywrightTimeout) and isinstance(action, dict) and action.get("selector"):
            state = (action.get("state") or "visible") if action.get("action") == "wait_for" else "ready"
            return (f"timed out after {self.timeout(action) / 1000:g} s waiting for {action['selector']!r} to be "
                    f"{state} (no such element, or it stayed hidden or disabled)")
        return first_line(exc)

    def _drive(self, browser: Any, actions: list[Any], viewport: dict[str, int]) -> int:
        """Open the start URL, carry out the actions in order, stop at the first failure."""
        from playwright.sync_api import Error as PlaywrightError

        context = browser.new_context(viewport=viewport, accept_downloads=False, service_workers="block")
        self.page = context.new_page()
        code = 0
        self.result["running_action"] = -1
        self.save()
        try:
            self.goto(self.spec.get("url"))
        except (PlaywrightError, ActionFailed) as exc:
            self.result["error"] = f"could not open the start URL: {first_line(exc)}"
            code = 1
        if code == 0:
            for index, action in enumerate(actions):
                kind = action.get("action") if isinstance(action, dict) else None
                self.result["running_action"] = index
                self.save()
                try:
                    if not isinstance(action, dict):
                        raise ActionFailed("an action must be a JSON object")
                    self.do(action)
                except (PlaywrightError, ActionFailed, KeyError, ValueError, TypeError) as exc:
                    message = self.explain(action, exc)
                    self.result["failed_action"] = index
                    self.result["error"] = f"action {index} ({kind}) failed: {message}"
                    print(f"[{index}] {kind}: FAILED: {message}", flush=True)
                    code = 1
                    break
                self.result["completed_actions"] = index + 1
                self.result["running_action"] = None
                print(f"[{index}] {kind}: ok", flush=True)
                self.save()
        self.result["running_action"] = None
        if self.spec.get("save_screenshots"):
            # The page as the run left it, also after a failure: that is when it helps most.
            try:
                path = os.path.join(self.out_dir, "final.png")
                self.page.screenshot(path=path, timeout=self.timeout_ms)
                self.result["files"].append(path)
            except PlaywrightError as exc:
                print(f"final screenshot not taken: {first_line(exc)}", file=sys.stderr, flush=True)
        self.save()
        context.close()
        browser.close()
        return code


def first_line(exc: BaseException) -> str:
    """Playwright errors carry a multi-line call log; the first line says what went wrong."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:500]


def main() -> int:
    if len(sys.argv) > 1:
        print(__doc__)
        return 0
    path = os.environ.get(SPEC_ENV, DEFAULT_SPEC)
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        if not isinstance(spec, dict):
            raise ValueError("the spec is not a JSON object")
        runner = Runner(spec)
    except (OSError, ValueError, ActionFailed) as exc:
        print(f"scoperun browser runner: unusable spec {path}: {exc}", file=sys.stderr)
        return 2
    try:
        code = runner.run()
    except ActionFailed as exc:
        runner.result["error"] = str(exc)
        runner.save()
        code = 2
    if runner.result["error"]:
        print(runner.result["error"], file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
