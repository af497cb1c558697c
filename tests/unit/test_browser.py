"""Browser actions as data: the models, URL refusal, the run spec, and result collection (no engine)."""

from __future__ import annotations

import ast
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from scoperun.browser import (
    RUNNER_PATH,
    SPEC_TARGET,
    BrowserRequest,
    Click,
    ExtractText,
    Fill,
    Screenshot,
    WaitFor,
    execute_browser_automation,
    parse_actions,
)
from scoperun.config import Settings
from scoperun.engine.base import OverlayMount, RunSpec
from scoperun.engine.images import _build_context, build_image, dockerfile_dir
from scoperun.errors import BrowserActionError
from scoperun.executor import Executor
from scoperun.testing import FakeBackend, FakeRun
from tests.conftest import CASE

REPO = Path(__file__).resolve().parents[2]


def audit_records(workspace: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (workspace / "Database" / "script_executions").glob("*.json")]


# --- the action models ---------------------------------------------------------------------------


def test_actions_are_discriminated_on_action() -> None:
    """Raw dicts become the typed action their `action` names, with documented defaults."""
    parsed = parse_actions([
        {"action": "click", "selector": "#go"},
        {"action": "fill", "selector": "#q", "value": "x"},
        {"action": "wait_for", "milliseconds": 250},
        {"action": "extract_text", "selector": "h1", "name": "heading", "all": True},
        {"action": "screenshot", "name": "page"},
    ])
    assert [type(a) for a in parsed] == [Click, Fill, WaitFor, ExtractText, Screenshot]
    assert parsed[2].state == "visible" and parsed[3].all and parsed[4].full_page is False


def test_hostile_text_is_kept_verbatim_as_data() -> None:
    """Quotes, newlines and code in a value validate unchanged: they are text, never escaped or run."""
    value = "a\"b'c\n</textarea><script>alert(1)</script>\n\"); os.system('x') #"
    (fill,) = parse_actions([{"action": "fill", "selector": "textarea[name='note']", "value": value}])
    assert fill.value == value and fill.selector == "textarea[name='note']"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({"action": "nope"}, "does not match any of the expected tags"),
        ({"action": "click"}, "action 0 (click) field selector: Field required"),
        ({"action": "click", "selector": "#a", "script": "x"}, "Extra inputs are not permitted"),
        ({"action": "wait_for"}, "exactly one of selector or milliseconds"),
        ({"action": "wait_for", "selector": "#a", "milliseconds": 5}, "exactly one of selector or milliseconds"),
        ({"action": "screenshot", "name": "../../etc/x"}, "not a safe file stem"),
        ({"action": "pdf", "name": "a b"}, "not a safe file stem"),
        ({"action": "fill", "selector": "#a", "value": "x\x00y"}, "NUL"),
        ({"action": "click", "selector": ""}, "at least 1 character"),
    ],
)
def test_invalid_actions_are_refused_with_a_clear_message(action: dict[str, Any], expected: str) -> None:
    """Each malformed action raises BrowserActionError naming the action and the problem."""
    with pytest.raises(BrowserActionError) as err:
        parse_actions([action])
    assert expected in str(err.value) and err.value.problems


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///etc/passwd", "file: URLs are refused"),
        ("javascript:alert(document.cookie)", "javascript: URLs are refused"),
        ("JavaScript:alert(1)", "javascript: URLs are refused"),
        ("data:text/html,<script>alert(1)</script>", "data: URLs are refused"),
        ("ftp://files.example.org/x", "ftp: URLs are refused"),
        ("example.org/page", "without a scheme"),
        ("http:///path-only", "has no host"),
        (" http://example.org", "surrounding spaces"),
    ],
)
def test_only_http_and_https_urls_are_accepted(url: str, expected: str) -> None:
    """Start URLs and goto actions accept http(s) only, and say why anything else is refused."""
    with pytest.raises(ValidationError, match=expected):
        BrowserRequest(url=url, case=CASE)
    with pytest.raises(BrowserActionError, match=expected):
        parse_actions([{"action": "goto", "url": url}])
    assert BrowserRequest(url="https://example.org/a?b=1", case=CASE).url == "https://example.org/a?b=1"


def test_file_names_are_unique_and_final_is_reserved() -> None:
    """Two files or two extractions with one name, or a screenshot named `final`, are refused."""
    with pytest.raises(ValidationError, match="both use the name 'p'"):
        BrowserRequest(url="http://h", case=CASE, actions=[{"action": "pdf", "name": "p"}, {"action": "pdf", "name": "p"}])
    with pytest.raises(ValidationError, match="reserved"):
        BrowserRequest(url="http://h", case=CASE, actions=[{"action": "screenshot", "name": "final"}])
    ok = BrowserRequest(url="http://h", case=CASE,
                        actions=[{"action": "pdf", "name": "p"}, {"action": "screenshot", "name": "p"}])
    assert len(ok.actions) == 2  # p.pdf and p.png do not collide


# --- the run, above the engine -------------------------------------------------------------------


def test_refused_url_starts_no_container_and_writes_nothing(settings: Settings, workspace: Path) -> None:
    """A file:// or javascript: URL raises before anything runs: no container, no audit record, no file."""
    backend = FakeBackend()
    ex = Executor(settings, backend=backend)
    for url in ("file:///workspace/projects", "javascript:fetch('http://x')"):
        with pytest.raises(BrowserActionError, match="refused"):
            execute_browser_automation(url, [], CASE, executor=ex)
    with pytest.raises(BrowserActionError, match="action 1 \\(goto\\)"):
        execute_browser_automation("http://h", [{"action": "click", "selector": "a"},
                                                {"action": "goto", "url": "file:///etc/passwd"}], CASE, executor=ex)
    assert backend.specs == [] and audit_records(workspace) == []
    assert list((workspace / "Database" / "temp_scripts").iterdir()) == []


def _runner_writes(result: dict[str, Any], *, exit_code: int = 0, timed_out: bool = False,
                   files: tuple[str, ...] = ()) -> Any:
    """A fake backend script that plays the runner: writes result.json (and files) into the case."""

    def play(spec: RunSpec) -> FakeRun:
        case = next(m for m in spec.mounts if m.target == spec.working_dir)
        case_dir = case.upper if isinstance(case, OverlayMount) else case.source  # staged runs write to upper
        out = case_dir / "browser" / spec.execution_id
        out.mkdir(parents=True)
        for name in files:
            (out / name).write_bytes(b"x")
        (out / "result.json").write_text(json.dumps(result))
        return FakeRun(exit_code=exit_code, timed_out=timed_out, stdout=b"[0] goto: ok\n")

    return play


def test_run_spec_uses_the_browser_image_fixed_program_and_data_mount(settings: Settings, workspace: Path) -> None:
    """The container runs the image's fixed runner with the actions as a read-only JSON file and browser limits."""
    value = "it's \"quoted\"\nand {code}"
    backend = FakeBackend(script=_runner_writes({"final_url": "http://h/", "title": "T", "extracted": {"v": value}}))
    ex = Executor(settings, backend=backend)
    result = execute_browser_automation("http://h/", [{"action": "fill", "selector": "#q", "value": value}],
                                        CASE, executor=ex)
    spec = backend.specs[0]
    assert spec.image == "scoperun-browser:latest" and spec.command == ("python", RUNNER_PATH)
    assert spec.env["SCOPERUN_BROWSER_SPEC"] == SPEC_TARGET
    data_mount = next(m for m in spec.mounts if m.target == SPEC_TARGET)
    assert data_mount.read_only and data_mount.source.parent == workspace / "Database" / "temp_scripts"
    sent = json.loads(data_mount.source.read_text())
    assert sent["url"] == "http://h/" and sent["actions"] == [{"action": "fill", "selector": "#q", "value": value}]
    assert sent["output_dir"] == f"browser/{spec.execution_id}" and sent["save_screenshots"] is True
    assert spec.memory_bytes == 2 * 1024**3 and spec.shm_size_bytes == 512 * 1024**2
    assert spec.pids_limit == 1024 and spec.tmp_size_bytes == 256 * 1024**2 and spec.cpus == 1.0
    assert spec.user == "1000:1000" and spec.working_dir == f"/workspace/projects/{CASE}"

    assert result.success and result.extracted == {"v": value} and result.title == "T" and result.error is None
    (record,) = audit_records(workspace)
    assert record["status"] == "succeeded" and record["script_path"].startswith("browser:Database/temp_scripts/")


def test_script_runs_keep_the_default_image_and_no_shm(settings: Settings) -> None:
    """Ordinary script runs are unchanged by the browser hook: runner image, engine-default /dev/shm."""
    backend = FakeBackend()
    Executor(settings, backend=backend).run_code("print(1)", case=CASE)
    assert backend.specs[0].image == settings.image and backend.specs[0].shm_size_bytes is None


def test_failed_action_becomes_the_run_message_and_keeps_extractions(settings: Settings, workspace: Path) -> None:
    """Exit 1 with the runner's error: status failed, message = the error, earlier extractions kept."""
    error = "action 1 (click) failed: timed out after 2 s waiting for '#x' to be ready"
    backend = FakeBackend(script=_runner_writes(
        {"extracted": {"h": "Heading"}, "failed_action": 1, "error": error}, exit_code=1))
    result = execute_browser_automation("http://h/", [{"action": "extract_text", "selector": "h1", "name": "h"},
                                                      {"action": "click", "selector": "#x"}], CASE,
                                        executor=Executor(settings, backend=backend))
    assert result.execution.status.value == "failed" and result.execution.message == error
    assert result.failed_action == 1 and result.error == error and result.extracted == {"h": "Heading"}
    assert audit_records(workspace)[0]["status"] == "failed"


def test_timeout_names_the_action_under_way(settings: Settings) -> None:
    """A run killed at its timeout reports the action the runner had started."""
    backend = FakeBackend(script=_runner_writes({"completed_actions": 1, "running_action": 1}, timed_out=True))
    result = execute_browser_automation("http://h/", [{"action": "click", "selector": "#a"},
                                                      {"action": "wait_for", "selector": "#slow"}], CASE,
                                        executor=Executor(settings, backend=backend))
    assert result.execution.status.value == "timed_out" and result.failed_action == 1
    assert result.error is not None and result.error.endswith("during action 1 (wait_for)")


def test_only_the_runs_own_regular_files_are_reported(settings: Settings, workspace: Path) -> None:
    """Paths in result.json outside browser/<id>/, with odd names, missing, or symlinks are dropped."""

    def play(spec: RunSpec) -> FakeRun:
        own = f"browser/{spec.execution_id}"
        case = next(m for m in spec.mounts if m.target == spec.working_dir)
        case_dir = case.upper if isinstance(case, OverlayMount) else case.source  # the run's writable layer
        _runner_writes({"files": [f"{own}/ok.png", f"{own}/missing.pdf", "../../../etc/passwd",
                                  f"{own}/../../notes/intake.txt", f"{own}/link.png", f"{own}/x.sh"]},
                       files=("ok.png", "x.sh"))(spec)
        (case_dir / own / "link.png").symlink_to("/etc/passwd")
        return FakeRun()

    result = execute_browser_automation("http://h/", [], CASE, executor=Executor(settings, backend=FakeBackend(play)))
    assert result.files == [f"browser/{result.execution.execution_id}/ok.png"]


# --- the image -----------------------------------------------------------------------------------


def test_browser_dockerfile_contract() -> None:
    """FROM the runner image, Debian chromium (no playwright install), pinned pip packages, the fixed runner, uid 1000."""
    folder = dockerfile_dir("browser")
    text = (folder / "Dockerfile").read_text()
    assert "ARG RUNNER_IMAGE=scoperun-runner:latest" in text and "FROM ${RUNNER_IMAGE}" in text
    assert "apt-get install" in text and "--no-install-recommends chromium " in text
    assert "RUN playwright install" not in text and "playwright install " not in text.replace("`playwright install`", "")
    assert '"playwright==' in text and '"selenium==' in text
    assert "COPY browser_runner.py /opt/scoperun/browser_runner.py" in text and text.rstrip().splitlines()[-2] == "USER 1000:1000"
    with tarfile.open(fileobj=_build_context(folder, None)) as tar:
        assert {"Dockerfile", "browser_runner.py"} <= set(tar.getnames())
    repo_copy = REPO / "images" / "browser" / "Dockerfile"
    if repo_copy.exists():
        assert repo_copy.is_symlink() and repo_copy.resolve() == (folder / "Dockerfile").resolve()


def test_runner_script_never_evaluates_caller_input() -> None:
    """The runner has no eval/exec/compile/subprocess and passes no caller value to page.evaluate."""
    source = (dockerfile_dir("browser") / "browser_runner.py").read_text()
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert not names & {"eval", "exec", "compile", "__import__"}
    assert not attrs & {"system", "popen", "evaluate", "add_init_script", "expose_function", "route"}
    assert not imports & {"subprocess", "pickle"}
    evaluations = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "evaluate_all"]
    assert [ast.unparse(c.args[0]) for c in evaluations] == ["LINKS_JS"]  # a constant of the runner


def test_browser_build_depends_on_the_runner_image_id() -> None:
    """The browser build passes RUNNER_IMAGE, is labelled kind=browser, and a new runner id rebuilds it."""
    from scoperun.engine.base import ImageInfo

    engine = FakeBackend(images={"scoperun-runner:latest": ImageInfo("sha256:runner1", "runner1", {})})
    kw = {"kind": "browser", "tag": "scoperun-browser:latest", "base_image": "scoperun-runner:latest"}
    first = build_image(engine, **kw)  # type: ignore[arg-type]
    assert engine.builds[0]["build_args"] == {"RUNNER_IMAGE": "scoperun-runner:latest"}
    assert engine.builds[0]["labels"]["org.scoperun.kind"] == "browser"
    assert build_image(engine, **kw).skipped  # type: ignore[arg-type]
    engine.images["scoperun-runner:latest"] = ImageInfo("sha256:runner2", "runner2", {})
    second = build_image(engine, **kw)  # type: ignore[arg-type]
    assert not second.skipped and second.inputs_hash != first.inputs_hash
