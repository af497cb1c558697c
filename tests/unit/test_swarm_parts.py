"""Pure parts of the swarm backend: service names, the in-task guard, log reading with the OOM marker."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scoperun.engine.base import RunOutcome
from scoperun.engine.capture import BoundedBuffer
from scoperun.engine.swarm import _GUARD, service_name, take_logs


def test_service_name_is_a_valid_swarm_name() -> None:
    """Execution ids (with underscores) become lower-case, hyphenated service names under 64 characters."""
    name = service_name("exec_20261129_204015_abcdef12")
    assert name == "scoperun-exec-20261129-204015-abcdef12" and len(name) < 64 and "_" not in name


def _guard(*cmd: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return subprocess.run(["setpriv", "--no-new-privs", "--", "sh", "-c", _GUARD, "g", "tok", *cmd],
                          capture_output=True, timeout=30, check=False)


def test_guard_passes_streams_and_exit_code_and_sets_no_new_privileges() -> None:
    """The guard runs the command with its own stdout/stderr and exit code, under no-new-privileges."""
    done = _guard("sh", "-c", "grep NoNewPrivs /proc/self/status; echo err >&2; exit 7")
    assert done.returncode == 7
    assert done.stdout.split() == [b"NoNewPrivs:", b"1"]
    assert done.stderr == b"err\n"


def test_guard_keeps_the_shells_killed_notice_out_of_stderr() -> None:
    """A script killed by SIGKILL outside an OOM gives exit 137 and no shell notice and no OOM marker."""
    done = _guard("sh", "-c", "echo before >&2; kill -9 $$")
    assert done.returncode == 137
    assert done.stderr == b"before\n"


def _read(frames: dict[str, list[bytes]], cap: int = 1024) -> RunOutcome:
    outcome = RunOutcome(stdout=BoundedBuffer(cap), stderr=BoundedBuffer(cap))
    take_logs(iter(frames["stdout"]), iter(frames["stderr"]), outcome, "tok")
    return outcome


def test_logs_strip_the_oom_marker_and_report_oom() -> None:
    """The guard's OOM line (with this run's token) is removed from stderr and sets oom_killed."""
    outcome = _read({"stdout": [b"a\n", b"b"], "stderr": [b"partial", b"scoperun-oom-tok\n"]})
    assert outcome.oom_killed and outcome.stderr.capture().text == "partial"
    assert outcome.stdout.capture().text == "a\nb"


def test_logs_keep_a_forged_marker_with_another_token_and_stay_capped() -> None:
    """A marker with another token is ordinary output; a flood is capped but counted in full."""
    outcome = _read({"stdout": [b"x" * 1000] * 200, "stderr": [b"scoperun-oom-other\n"]})
    assert not outcome.oom_killed and outcome.stderr.capture().text == "scoperun-oom-other\n"
    assert outcome.stdout.total == 200_000 and outcome.stdout.truncated
