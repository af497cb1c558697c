"""The lean remote path of `scoperun run-code` (SCOPERUN_URL set) against the full typer path, through a real
`scoperun serve` process: the same bytes on stdout and stderr (ids and timings aside), the same exit codes."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CASE
from tests.integration.conftest import assert_no_containers_left
from tests.integration.test_service_process import (
    SCOPERUN,
    env_for,
    interrupt_and_check_cancelled,
    start_server,
    stop_server,
)
from tests.service_helpers import free_port

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client) -> Iterator[tuple[str, str, Path]]:
    """A `scoperun serve` that needs a token (made before it starts); yields its URL, the token, the workspace."""
    from tests.conftest import make_workspace

    workspace = make_workspace(tmp_path_factory.mktemp("remote") / "ws")
    tokens = {"SCOPERUN_TOKENS_FILE": str(workspace.parent / "tokens.json")}  # this server's alone
    made = subprocess.run([SCOPERUN, "token", "create", "lean-test", "--role", "run"], env=env_for(workspace, **tokens),
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    port = free_port()
    proc = start_server(workspace, port, **tokens)
    try:
        yield f"http://127.0.0.1:{port}", made.stdout.strip(), workspace
    finally:
        stop_server(proc)
        assert_no_containers_left(docker_client, workspace)


def cli(args: list[str], env: dict[str, str], code: str, *, full: bool) -> subprocess.CompletedProcess[str]:
    """The full path (SCOPERUN_FULL_CLI), or the lean one, checked to be it: no typer imported."""
    if full:
        return subprocess.run([SCOPERUN, *args], input=code, env={**env, "SCOPERUN_FULL_CLI": "1"},
                              capture_output=True, text=True, timeout=180)
    proc = subprocess.run([sys.executable, "-X", "importtime", SCOPERUN, *args], input=code, env=env,
                          capture_output=True, text=True, timeout=180)
    lines = proc.stderr.splitlines(keepends=True)
    loaded = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert "scoperun.cli.remote" in loaded and "typer" not in loaded, args
    proc.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return proc


def normalised(text: str) -> str:
    """Ids, timestamps and timings (what differs between two runs of the same code) replaced by placeholders."""
    for execution_id in set(re.findall(r"\bexec_\d{8}_\d{6}_[0-9a-f]+", text)):
        text = text.replace(execution_id, "<ID>")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", "<TIME>", text)
    text = re.sub(r"\b\d+\.\d+(e-?\d+)?\b", "<N>", text)
    # Whether a warm container was ready depends on when the pool's replacement finished, not on the path.
    text = re.sub(r'"pooled": (true|false)', '"pooled": <B>', text)
    return re.sub(r'"(container_id|container_name|hostname)": "[^"]*"', r'"\1": "<X>"', text)


def same(args: list[str], env: dict[str, str], code: str = "print('hi')\n") -> subprocess.CompletedProcess[str]:
    lean, full = cli(args, env, code, full=False), cli(args, env, code, full=True)
    assert (lean.returncode, normalised(lean.stdout), normalised(lean.stderr)) == (
        full.returncode, normalised(full.stdout), normalised(full.stderr))
    return lean


def test_success_failure_json_and_rejection_print_the_same_as_the_full_path(server) -> None:
    """Success, a script exiting 3, --json and a rejected run (unknown case): same bytes, same exit codes."""
    url, token, workspace = server
    env = env_for(workspace, SCOPERUN_URL=url, SCOPERUN_TOKEN=token)
    ok = same(["run-code", "-", "--case", CASE], env, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n")
    assert ok.returncode == 0 and ok.stdout == "out\n" and "err\n" in ok.stderr and "audit record: " in ok.stderr
    failing = same(["run-code", "-", "--case", CASE, "--requested-by", "lean-test"], env, "raise SystemExit(3)\n")
    assert failing.returncode == 3 and "exit 3" in failing.stderr
    as_json = same(["run-code", "-", "--json", "--case", CASE], env, "print(2)\n")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["stdout"]["text"] == "2\n"
    rejected = same(["run-code", "-", "--case", "No-Such-Case-:smile:"], env)  # shown as is, never an emoji
    assert rejected.returncode == 2 and "nothing ran" in rejected.stderr and ":smile:" in rejected.stderr
    script = workspace.parent / "args.py"
    script.write_text("import sys\nprint(sys.argv[1:])\n")
    from_file = same(["run-code", str(script), "--case", CASE, "--working-dir", "notes", "x", "--", "-y"], env)
    assert from_file.returncode == 0 and from_file.stdout == "['x', '-y']\n"
    named = same(["run", "Tools/hello.py", "--case", CASE, "--read-only", "--", "a b"], env)
    assert named.returncode == 0 and named.stdout == f"hello from {CASE}\n"


def test_a_bad_token_and_an_unreachable_server_fail_the_same_way(server) -> None:
    """401 (a wrong token) and a server that is not there: the same messages and exit codes as the full path."""
    url, _, workspace = server
    bad = same(["run-code", "-", "--case", CASE], env_for(workspace, SCOPERUN_URL=url, SCOPERUN_TOKEN="wrong"))
    assert bad.returncode == 125 and "401" in bad.stderr
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    gone = same(["run-code", "-", "--case", CASE], env_for(workspace, SCOPERUN_URL=closed))
    assert gone.returncode == 125 and "cannot reach scoperun serve" in gone.stderr


def test_the_lean_path_imports_no_typer_pydantic_httpx_or_rich(server) -> None:
    """`scoperun run-code` through a server (lean path) runs without importing typer, pydantic, httpx or rich."""
    url, token, workspace = server
    proc = subprocess.run([sys.executable, "-X", "importtime", SCOPERUN, "run-code", "-", "--case", CASE],
                          input="print(2)\n", env=env_for(workspace, SCOPERUN_URL=url, SCOPERUN_TOKEN=token),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "2\n", proc.stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "scoperun.cli.remote" in loaded  # the imports are seen
    assert not {m.split(".")[0] for m in loaded} & {"typer", "pydantic", "httpx", "rich", "click"}, sorted(loaded)


def test_ctrl_c_cancels_on_the_server_and_says_the_same(server) -> None:
    """SIGINT mid-run, lean and full path: exit 130, the same message, the run recorded cancelled on the server."""
    url, token, workspace = server
    env = env_for(workspace, SCOPERUN_URL=url, SCOPERUN_TOKEN=token)
    script = workspace.parent / "long.py"
    script.write_text("import time\nprint('working', flush=True)\ntime.sleep(300)\n")
    said = []
    for extra in ({}, {"SCOPERUN_FULL_CLI": "1"}):
        command = [SCOPERUN, "run-code", str(script), "--case", CASE]
        said.append(normalised(interrupt_and_check_cancelled(command, {**env, **extra}, workspace)[1]))
    assert said[0] == said[1]
