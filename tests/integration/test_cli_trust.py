"""The command line on the real engine: exact piped output, up-front refusals, stop's own exit code,
Ctrl-C, and the views read in a real terminal (tmux) at 80 and 160 columns with no id cut."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import CASE
from tests.integration.conftest import IMAGE, leftover_containers, unavailable
from tests.integration.test_ops import wait_for

FLOOD = ("import sys\nfor i in range(30000):\n"
         "    sys.stdout.write('{\"line\": %d, \"pad\": \"%s\"},\\n' % (i, 'x' * 20))\n"
         "sys.stdout.write('THE END')\n")


def _env(workspace: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none",
            **extra}


def scoperun(workspace: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "scoperun", *args], capture_output=True, timeout=300,
                          env=_env(workspace, **env))


def test_piped_stdout_is_byte_exact_and_stderr_says_what_was_cut(workspace: Path, docker_client) -> None:
    """Over the 64 KB cap, piped stdout is the script's stdout byte for byte; past full_output_limit it is an
    exact prefix, and stderr says what was cut and where the full copy is."""
    (workspace / "Tools" / "flood.py").write_text(FLOOD)
    expected = subprocess.run([sys.executable, str(workspace / "Tools" / "flood.py")], capture_output=True).stdout
    assert len(expected) > 64 * 1024
    whole = scoperun(workspace, "run", "Tools/flood.py", "--case", CASE)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == expected and b"omitted by scoperun" not in whole.stdout
    assert b"result keeps only the head and tail" in whole.stderr and b".stdout" in whole.stderr
    cut = scoperun(workspace, "run", "Tools/flood.py", "--case", CASE, SCOPERUN_FULL_OUTPUT_LIMIT="100000")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == expected[:100000]
    note = cut.stderr.decode()
    assert f"stdout cut: {len(expected)} bytes in all; the first 100000 written" in note and "full copy:" in note


def test_unknown_network_and_limits_beyond_the_engine_are_bad_usage(workspace: Path, docker_client) -> None:
    """A missing network, more CPUs or memory than the engine has: exit 2 before anything runs, no record."""
    info = docker_client.info()
    cases = {
        ("--network", f"nonet-{uuid.uuid4().hex[:6]}"): "does not exist",
        ("--cpus", str(int(info["NCPU"]) + 1)): "CPU",
        ("--memory", f"{int(info['MemTotal']) // 1024**3 + 8}g"): "GiB",
    }
    for (option, value), words in cases.items():
        proc = scoperun(workspace, "run", "Tools/hello.py", "--case", CASE, option, value)
        assert proc.returncode == 2, (option, proc.stderr)
        assert words in proc.stderr.decode() and b"Traceback" not in proc.stderr
    assert not list((workspace / "Database" / "script_executions").glob("*.json"))


def test_a_run_stopped_by_scoperun_stop_has_its_own_exit_code(workspace: Path, docker_client) -> None:
    """`scoperun stop` ends a `scoperun run` with 143 (not 137, out of memory) and status `cancelled`."""
    (workspace / "Tools" / "sleepy.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "scoperun", "run", "Tools/sleepy.py", "--case", CASE],
                            env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ids = wait_for(lambda: scoperun(workspace, "-q", "ps").stdout.split(), what="the run in `ps`")
        stopped = scoperun(workspace, "stop", ids[0].decode(), "--reason", "test stop")
        assert stopped.returncode == 0, stopped.stderr
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert b"cancelled" in err and b"test stop" in err
    record = json.loads((workspace / "Database" / "script_executions" / f"{ids[0].decode()}.json").read_text())
    assert record["status"] == "cancelled"


def test_ctrl_c_says_the_run_was_stopped_and_removed(workspace: Path, docker_client) -> None:
    """Ctrl-C (SIGINT) exits 130 saying the run was stopped, its container removed, and naming the run."""
    (workspace / "Tools" / "long.py").write_text("import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "scoperun", "run", "Tools/long.py", "--case", CASE],
                            env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: docker_client.containers.list(
        sparse=True, filters={"label": f"org.scoperun.workspace={workspace.resolve()}"}), what="the container")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    [record] = [json.loads(p.read_text()) for p in (workspace / "Database" / "script_executions").glob("*.json")]
    assert proc.returncode == 130, err
    text = " ".join(err.split())
    assert "the run was stopped and its container removed" in text and record["execution_id"] in text
    assert "Traceback" not in err
    assert leftover_containers(docker_client, {record["execution_id"]}) == []


# -- a real terminal ------------------------------------------------------------------------------


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30, check=True).stdout


def _screen(socket: str, workspace: Path, width: int, command: str) -> str:
    """Run `command` in a fresh tmux window `width` columns wide; return its output, wrapped lines joined."""
    token = uuid.uuid4().hex[:6]
    env = " ".join(f"{k}={v}" for k, v in {
        "SCOPERUN_WORKSPACE": workspace, "SCOPERUN_IMAGE": IMAGE, "SCOPERUN_NETWORK": "none",
        "SCOPERUN_STATE_DIR": os.environ["SCOPERUN_STATE_DIR"],
        "SCOPERUN_STAGING_DIR": os.environ["SCOPERUN_STAGING_DIR"],
        "TERM": "xterm-256color"}.items())
    session = f"w{width}-{token}"
    _tmux(socket, "new-session", "-d", "-x", str(width), "-y", "200", "-s", session,
          f"env -u COLUMNS -u LINES {env} bash --norc --noprofile")
    try:
        # The typed line holds "__done_""TOKEN__"; only the echo prints __done_TOKEN__ in one piece.
        typed = f"{sys.executable} -m scoperun {command}"
        _tmux(socket, "send-keys", "-t", session, f'{typed}; echo "__done_""{token}__"', "Enter")
        deadline = time.monotonic() + 180  # a loaded machine starts Python slowly
        while time.monotonic() < deadline:
            screen = _tmux(socket, "capture-pane", "-p", "-J", "-S", "-", "-t", session)
            if f"__done_{token}__" in screen:
                before = screen.split(f"__done_{token}__", 1)[0]
                return before[before.rindex(typed) + len(typed):].split("\n", 1)[1]
            time.sleep(0.3)
        raise AssertionError(f"`scoperun {command}` did not finish in tmux")
    finally:
        _tmux(socket, "kill-session", "-t", session)


@pytest.fixture
def tmux_socket():
    """A private tmux server for the test (removed afterwards)."""
    if shutil.which("tmux") is None:
        unavailable("tmux is not installed; run `make tools`")
    socket = f"scoperun-test-{uuid.uuid4().hex[:8]}"
    # A session kept open for the whole test: killing the last one ends the server, and a session
    # made right then can meet the exiting server and fail.
    _tmux(socket, "new-session", "-d", "-s", "keep", "sleep 3600")
    yield socket
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def test_views_in_a_real_terminal_never_cut_an_id(workspace: Path, docker_client, tmux_socket) -> None:
    """At 80 and 160 columns, `ps`, `audit list`, `audit show`, `stats` and `changes` show every id whole."""
    long_case = "Sample-Client-With-A-Rather-Long-Name-MVA-1-15-2025"
    (workspace / "projects" / long_case).mkdir()
    os.chown(workspace / "projects" / long_case, 1000, 1000) if os.geteuid() == 0 else None
    (workspace / "Tools" / "make_a_summary_of_the_case_files.py").write_text(
        "open('summary.txt', 'w').write('a summary\\n')\nprint('done')\n")
    (workspace / "Tools" / "sleepy.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    ids = []
    for case in (CASE, long_case):
        proc = scoperun(workspace, "run", "--json", "Tools/make_a_summary_of_the_case_files.py", "--case", case)
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)["execution_id"])
    sleeper = subprocess.Popen([sys.executable, "-m", "scoperun", "run", "Tools/sleepy.py", "--case", long_case],
                               env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        running = wait_for(lambda: scoperun(workspace, "-q", "ps").stdout.split(), what="the run in `ps`")
        running_id = running[0].decode()
        for width in (80, 160):
            views = {
                "ps": ("ps", [running_id]),
                "audit list": ("audit list", ids),
                "audit show": (f"audit show {ids[1]}", [ids[1]]),
                "stats": ("stats", ids),
                "changes": (f"changes {ids[1]}", [ids[1]]),
            }
            for name, (command, must_show) in views.items():
                screen = _screen(tmux_socket, workspace, width, command)
                for execution_id in must_show:
                    assert execution_id in screen, f"{name} at {width} columns cut {execution_id}:\n{screen}"
                # No id shortened anywhere: every exec_ token on the screen is a whole id.
                for token in re.findall(r"exec_[0-9A-Za-z_…]*", screen):
                    assert re.fullmatch(r"exec_\d{8}_\d{6}_[0-9a-f]{8}", token), f"{name} at {width}: {token!r}"
                if width == 160 and name == "audit list":
                    assert long_case in screen and "Tools/make_a_summary_of_the_case_files.py" in screen
    finally:
        scoperun(workspace, "stop", "--all")
        sleeper.communicate(timeout=120)


def test_gc_applies_retention(workspace: Path, docker_client) -> None:
    """`scoperun gc` removes agent scripts past their age (0 on success), logs their hashes, keeps new ones."""
    scripts = workspace / "Database" / "temp_scripts"
    old, new = scripts / "exec_20200101_000000_0badc0de_old.py", scripts / "exec_20261129_000000_00c0ffee_new.py"
    for path in (old, new):
        path.write_text("print('hi')\n")
    os.utime(old, (time.time() - 400 * 86400,) * 2)
    proc = scoperun(workspace, "gc", SCOPERUN_TEMP_SCRIPTS_MAX_AGE_DAYS="365")
    assert proc.returncode == 0, proc.stderr
    assert b"retention: removed Database/temp_scripts/exec_20200101_000000_0badc0de_old.py" in proc.stdout
    assert not old.exists() and new.exists()
    log = (workspace / "Database" / "script_executions" / "retention.jsonl").read_text()
    assert "exec_20200101_000000_0badc0de" in log and '"sha256"' in log


def test_quiet_run_prints_only_the_scripts_output(workspace: Path, docker_client) -> None:
    """`scoperun -q run` of a succeeding script prints its stdout and stderr and nothing of scoperun's."""
    proc = scoperun(workspace, "-q", "run", "Tools/hello.py", "--case", CASE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"hello from {CASE}\n".encode() and proc.stderr == b"to stderr\n"
