"""Browser automation as data: a typed action list carried out by headless Chromium in a container.

The plan pasted the URL and raw action strings into generated Python (flaw 7: any quote became
code). Here a caller's actions are validated pydantic models; they are written as JSON to the
workspace's temp scripts folder, mounted read-only into a fresh browser container, and read by
the one fixed program shipped in the browser image (/opt/scoperun/browser_runner.py). Nothing a
caller sends becomes source code. The run goes through the executor like any other (scoped to the
case, audited, limited); screenshots, PDFs and result.json land in the case under
`browser/<execution_id>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from scoperun.engine.base import BindMount, RunOutcome
from scoperun.errors import BrowserActionError
from scoperun.executor import Executor, FixedProgram, new_execution_id
from scoperun.models import ExecutionRequest, ExecutionResult, Limits, Status
from scoperun.safety.redaction import redactor_for

__all__ = [
    "ACTION_TIMEOUT_MS",
    "VIEWPORT",
    "Action",
    "BrowserRequest",
    "BrowserResult",
    "Click",
    "ExtractLinks",
    "ExtractText",
    "Fill",
    "Goto",
    "Pdf",
    "Press",
    "Screenshot",
    "Select",
    "WaitFor",
    "check_url",
    "execute_browser_automation",
    "make_request",
    "parse_actions",
    "run_browser",
]

RUNNER_PATH = "/opt/scoperun/browser_runner.py"  # shipped in the browser image, never written by a run
SPEC_TARGET = "/scoperun/browser/spec.json"  # where the actions file is mounted, read-only
OUTPUT_FOLDER = "browser"  # in the case: browser/<execution_id>/
VIEWPORT: dict[str, int] = {"width": 1280, "height": 720}
ACTION_TIMEOUT_MS = 15_000  # how long a selector action waits for its element, unless it says otherwise
MAX_ACTIONS = 200
_RESULT_CAP = 16 * 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# final.png is the end-of-run screenshot; result.json is the runner's record.
_RESERVED_NAMES = frozenset({"final", "result"})
_SCHEME_REASONS = {
    "file": "it would read files inside the container instead of a web page",
    "javascript": "it is code, and a browser run only carries out declared actions",
    "data": "it is an inline document, not a web page",
}


def check_url(url: str) -> str:
    """Return `url` if it is an absolute http or https URL; raise ValueError saying why not."""
    if not isinstance(url, str) or not url:
        raise ValueError("a URL is required (http:// or https://)")
    if len(url) > 8192 or any(ord(c) < 0x20 or c == "\x7f" for c in url) or url != url.strip():
        raise ValueError("the URL has control characters, surrounding spaces or is over 8192 characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        why = _SCHEME_REASONS.get(scheme, "only web pages can be opened")
        shown = f"{scheme}:" if scheme else "a URL without a scheme"
        raise ValueError(f"{shown} URLs are refused ({why}); use an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"the URL {url!r} has no host; use e.g. https://example.org/page")
    return url


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


Selector = Annotated[str, Field(min_length=1, max_length=2000, description="A Playwright selector (CSS, text=, xpath=).")]
Name = Annotated[str, Field(description="A safe file stem / key: letters, digits, - and _, at most 64.")]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_ms: int | None = Field(
        None, ge=1, le=600_000, description=f"How long to wait for the element (default {ACTION_TIMEOUT_MS} ms)."
    )

    @field_validator("*", mode="after")
    @classmethod
    def _strings_have_no_nul(cls, value: Any) -> Any:
        return _no_nul(value) if isinstance(value, str) else value


class _Named(_Action):
    name: Name

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"name {value!r} is not a safe file stem (letters, digits, - and _, at most 64, "
                             f"starting with a letter or digit)")
        return value


class Goto(_Action):
    """Open a URL (http or https only) and wait for it to load."""

    action: Literal["goto"] = "goto"
    url: str

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_url(value)


class Click(_Action):
    """Click the first element matching `selector`."""

    action: Literal["click"] = "click"
    selector: Selector


class Fill(_Action):
    """Set the text of an input or textarea; `value` is typed as literal text, whatever it holds."""

    action: Literal["fill"] = "fill"
    selector: Selector
    value: str = Field(max_length=100_000)


class Press(_Action):
    """Press a key (e.g. Enter, Tab, Control+A) in the element matching `selector`."""

    action: Literal["press"] = "press"
    selector: Selector
    key: str = Field(min_length=1, max_length=64)


class Select(_Action):
    """Choose the option with this value (or label) in a <select>."""

    action: Literal["select"] = "select"
    selector: Selector
    value: str = Field(max_length=10_000)


class WaitFor(_Action):
    """Wait for an element (`selector`, in `state`) or for a fixed number of `milliseconds`."""

    action: Literal["wait_for"] = "wait_for"
    selector: Selector | None = None
    milliseconds: int | None = Field(None, ge=0, le=600_000)
    state: Literal["visible", "attached", "hidden", "detached"] = "visible"

    @model_validator(mode="after")
    def _one_of(self) -> WaitFor:
        if (self.selector is None) == (self.milliseconds is None):
            raise ValueError("wait_for needs exactly one of selector or milliseconds")
        return self


class ExtractText(_Named):
    """Keep the visible text of the first match (or, with `all`, of every match) under `name`."""

    action: Literal["extract_text"] = "extract_text"
    selector: Selector
    all: bool = False


class ExtractLinks(_Named):
    """Keep the absolute URLs of the page's links (or those inside `selector`) under `name`."""

    action: Literal["extract_links"] = "extract_links"
    selector: Selector | None = None


class Screenshot(_Named):
    """Save a PNG of the viewport (or the whole page with `full_page`) as `<name>.png`."""

    action: Literal["screenshot"] = "screenshot"
    full_page: bool = False


class Pdf(_Named):
    """Save the page as `<name>.pdf`."""

    action: Literal["pdf"] = "pdf"


Action = Annotated[
    Goto | Click | Fill | Press | Select | WaitFor | ExtractText | ExtractLinks | Screenshot | Pdf,
    Field(discriminator="action"),
]
_ACTIONS = TypeAdapter(list[Action])


class BrowserRequest(BaseModel):
    """One browser run: open `url`, carry out `actions` in order, save results in `case`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Start page (http or https).")
    actions: list[Action] = Field(default_factory=list, max_length=MAX_ACTIONS)
    case: str = Field(description="Case folder that receives browser/<execution_id>/.")
    save_screenshots: bool = Field(True, description="Also save final.png, the page as the run left it.")
    network: str | None = Field(None, description="bridge, none, or a Docker network name; None = default.")
    timeout: float | None = Field(None, gt=0, le=3600, description="Seconds before the run is killed.")
    requested_by: str | None = Field(None, max_length=200)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_url(value)

    @model_validator(mode="after")
    def _unique_names(self) -> BrowserRequest:
        seen: dict[str, int] = {}
        for index, action in enumerate(self.actions):
            if isinstance(action, (Screenshot, Pdf)):
                key = f"{action.name}.{'png' if isinstance(action, Screenshot) else 'pdf'}"
                if action.name in _RESERVED_NAMES:
                    raise ValueError(f"action {index}: the file name {action.name!r} is reserved; pick another")
            elif isinstance(action, (ExtractText, ExtractLinks)):
                key = f"extracted:{action.name}"
            else:
                continue
            if key in seen:
                raise ValueError(f"actions {seen[key]} and {index} both use the name {action.name!r}; "
                                 f"give each its own")
            seen[key] = index
        return self


class BrowserResult(BaseModel):
    """What a browser run produced; `execution` is the ordinary, audited run result."""

    execution: ExecutionResult
    final_url: str | None = None
    title: str | None = None
    extracted: dict[str, str | list[str]] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list, description="Saved files, relative to the case.")
    failed_action: int | None = Field(None, description="Index of the action that failed or was cut off.")
    error: str | None = None

    @property
    def success(self) -> bool:
        """True when every action was carried out."""
        return self.execution.status is Status.SUCCEEDED


class _RunnerResult(BaseModel):
    """result.json as the runner writes it; read defensively (the container wrote it)."""

    final_url: str | None = None
    title: str | None = None
    extracted: dict[str, str | list[str]] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    failed_action: int | None = None
    error: str | None = None
    completed_actions: int = 0
    running_action: int | None = None


def _problems(exc: ValidationError, *, top_level_is_action: bool = False) -> list[str]:
    """One readable line per validation error: `action 2 (click) field selector: ...`."""
    out = []
    for e in exc.errors():
        loc = list(e["loc"])
        if loc[:1] == ["actions"]:
            loc, top_level_is_action_here = loc[1:], True
        else:
            top_level_is_action_here = top_level_is_action
        if top_level_is_action_here and loc and isinstance(loc[0], int):
            where = f"action {loc[0]}"
            if len(loc) > 1:
                where += f" ({loc[1]})"
            if len(loc) > 2:
                where += f" field {'.'.join(map(str, loc[2:]))}"
        else:
            where = ".".join(map(str, loc))
        msg = str(e["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if where else msg)
    return out


def parse_actions(actions: list[dict[str, Any]] | list[Action]) -> list[Action]:
    """Validate raw actions (dicts, e.g. from JSON) into typed ones; raise BrowserActionError."""
    if not isinstance(actions, list):
        raise BrowserActionError("actions must be a list of action objects", problems=["actions: not a list"])
    try:
        return _ACTIONS.validate_python([a.model_dump() if isinstance(a, BaseModel) else a for a in actions])
    except ValidationError as exc:
        problems = _problems(exc, top_level_is_action=True)
        raise BrowserActionError("invalid browser actions: " + "; ".join(problems), problems=problems) from None


def make_request(**fields: Any) -> BrowserRequest:
    """Build a BrowserRequest, turning validation errors into one clear BrowserActionError."""
    try:
        return BrowserRequest(**fields)
    except ValidationError as exc:
        problems = _problems(exc)
        raise BrowserActionError("invalid browser request: " + "; ".join(problems), problems=problems) from None


def _spec(request: BrowserRequest, output_dir: str) -> dict[str, Any]:
    """The data the fixed runner reads: nothing here is ever evaluated."""
    return {
        "version": 1,
        "url": request.url,
        "actions": [a.model_dump(exclude_none=True) for a in request.actions],
        "output_dir": output_dir,
        "save_screenshots": request.save_screenshots,
        "action_timeout_ms": ACTION_TIMEOUT_MS,
        "viewport": VIEWPORT,
    }


def _read_runner_result(case_dir: Path, execution_id: str) -> _RunnerResult | None:
    """result.json of this run, or None. The container wrote it: no symlinks, bounded size."""
    out_dir = case_dir / OUTPUT_FOLDER / execution_id
    # A run could have swapped a folder for a symlink that points anywhere on the host.
    if os.path.realpath(out_dir) != str(out_dir.resolve(strict=False)) or out_dir.is_symlink() \
            or (case_dir / OUTPUT_FOLDER).is_symlink() or not out_dir.is_dir():
        return None
    try:
        fd = os.open(out_dir / "result.json", os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(_RESULT_CAP + 1)
        if len(data) > _RESULT_CAP:
            return None
        return _RunnerResult.model_validate_json(data)
    except (OSError, ValueError):
        return None


def _saved_files(case_dir: Path, execution_id: str, names: list[str]) -> list[str]:
    """Keep only regular files the runner may have made: browser/<id>/<safe name>.png|pdf."""
    prefix = f"{OUTPUT_FOLDER}/{execution_id}/"
    kept: list[str] = []
    for name in names:
        stem, dot, suffix = name.removeprefix(prefix).rpartition(".")
        if not name.startswith(prefix) or not dot or suffix not in ("png", "pdf") or not _NAME_RE.match(stem):
            continue
        path = case_dir / name
        if path.is_file() and not path.is_symlink() and name not in kept:
            kept.append(name)
    return kept


def _describe_step(request: BrowserRequest, index: int | None) -> str:
    if index is None:
        return ""
    if index < 0:
        return " while opening the start URL"
    kind = request.actions[index].action if index < len(request.actions) else "?"
    return f" during action {index} ({kind})"


def run_browser(executor: Executor, request: BrowserRequest) -> BrowserResult:
    """Run `request` in the browser image through `executor` (scoped, limited, audited)."""
    settings = executor.settings
    workspace = executor.workspace
    execution_id = new_execution_id()
    output_dir = f"{OUTPUT_FOLDER}/{execution_id}"
    data = json.dumps(_spec(request, output_dir), ensure_ascii=False, indent=2)
    # Kept beside the agent's scripts: the audit trail of exactly what this run was asked to do.
    spec_rel = workspace.write_temp_script(f"{execution_id}_browser.json", data)

    def case_dir() -> Path:
        return workspace.case_dir(request.case)

    def explain(outcome: RunOutcome) -> str | None:
        found = _read_runner_result(case_dir(), execution_id)
        if found is not None and found.error:
            return found.error
        tail = outcome.stderr.capture().text.strip().splitlines()
        return f"the browser runner failed (exit {outcome.exit_code}): {tail[-1]}" if tail else None

    program = FixedProgram(
        image=settings.browser_image,
        command=("python", RUNNER_PATH),
        mounts=(BindMount(workspace.root / spec_rel, SPEC_TARGET, read_only=True),),
        env={"SCOPERUN_BROWSER_SPEC": SPEC_TARGET},
        data_sha256=hashlib.sha256(data.encode("utf-8")).hexdigest(),
        memory=settings.browser_memory,
        cpus=settings.browser_cpus,
        pids_limit=settings.browser_pids_limit,
        tmp_size=settings.browser_tmp_size,
        shm_size=settings.browser_shm_size,
        explain_failure=explain,
    )
    run_request = ExecutionRequest(
        script=f"browser:{spec_rel}", case=request.case, limits=Limits(timeout=request.timeout),
        network=request.network, requested_by=request.requested_by,
        # The fixed runner writes only browser/<execution_id>/; keep what a failed run saved.
        apply="always",
    )
    execution = executor.run_program(run_request, program, execution_id=execution_id)
    if execution.status in (Status.REJECTED, Status.ERROR):
        return BrowserResult(execution=execution, error=execution.message)

    found = _read_runner_result(case_dir(), execution_id) or _RunnerResult()
    redactor = redactor_for(settings.secret_env)  # a page can echo a secret the run was given
    result = BrowserResult(
        execution=execution,
        final_url=redactor.redact(found.final_url) if found.final_url else found.final_url,
        title=redactor.redact(found.title) if found.title else found.title,
        extracted=redactor.redact_data(found.extracted),
        files=_saved_files(case_dir(), execution_id, found.files),
        failed_action=found.failed_action,
        error=found.error,
    )
    if execution.status is Status.SUCCEEDED:
        result.error = None
    elif execution.status in (Status.TIMED_OUT, Status.OOM_KILLED):
        # Killed from outside: the runner could not record a failure, but it recorded its step.
        step = found.running_action
        result.failed_action = step if step is not None and step >= 0 else None
        result.error = execution.message + _describe_step(request, step)
    elif result.error is None:
        result.error = execution.message
    return result


def execute_browser_automation(
    url: str,
    actions: list[dict[str, Any]] | list[Action],
    case_name: str,
    save_screenshots: bool = True,
    *,
    executor: Executor | None = None,
) -> BrowserResult:
    """The plan's entry point, made safe: open `url`, carry out `actions` (data), save to the case.

    Raises BrowserActionError (nothing runs) for a refused URL or an invalid action.
    """
    request = make_request(url=url, actions=parse_actions(actions), case=case_name,
                           save_screenshots=save_screenshots)
    if executor is not None:
        return run_browser(executor, request)
    with Executor() as own:
        return run_browser(own, request)
