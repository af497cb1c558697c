"""Adversarial suite, part 2: resources, processes and concurrency.

Each case asserts the run's status; the `guard` checks that the host and the workspace outside
the case are untouched, that no container is left, and that the audit record is complete.
"""

from __future__ import annotations

import json
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scoperun import ExecutionRequest, Limits, Status
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.integration._adversarial import (
    Guard,
    host_processes_with,
    snapshot_host,
    snapshot_outside,
    wait_until,
)


def test_01_fork_bomb_hits_the_pids_limit_and_times_out(guard: Guard) -> None:
    """A fork bomb stays inside its pids limit and is killed at the timeout with everything it forked."""
    result = guard.run("""
import os
print('bombing', flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
""", limits=Limits(timeout=8, pids_limit=64))
    assert result.status is Status.TIMED_OUT, result.message
    assert result.stdout.text.startswith("bombing")


def test_02_memory_bomb_is_oom_killed(guard: Guard) -> None:
    """Allocating without end ends `oom_killed` at the memory limit (swap equal, so no swapping)."""
    result = guard.run("""
chunks = []
while True:
    chunks.append(b'x' * (8 * 1024 * 1024))
""", limits=Limits(memory="96m", timeout=60))
    assert result.status is Status.OOM_KILLED, result.message
    assert result.exit_code == 137


def test_03_500_mb_to_stdout_keeps_scoperun_memory_bounded(guard: Guard) -> None:
    """500 MB of stdout is counted in full but only the capped head and tail are kept in memory."""
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = guard.run("head -c 524288000 /dev/zero | tr '\\0' 'x'\necho done >&2\n", name="flood.sh",
                       limits=Limits(timeout=240, cpus=2))
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert result.status is Status.SUCCEEDED, result.message
    assert result.stdout.total_bytes == 524_288_000 and result.stdout.truncated
    assert len(result.stdout.text) < 2 * 64 * 1024 and result.stderr.text == "done\n"
    assert growth_mib < 100, f"scoperun's peak memory grew by {growth_mib:.0f} MiB"


def test_04_filling_tmp_stops_at_its_size(guard: Guard) -> None:
    """Writing /tmp full ends with ENOSPC at the tmpfs size; nothing reaches the host disk."""
    result = guard.run("""
import errno
written = 0
try:
    with open('/tmp/fill', 'wb') as fh:
        while True:
            fh.write(b'\\0' * 1024 * 1024); fh.flush(); written += 1
except OSError as e:
    print(errno.errorcode[e.errno], written)
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    code, mib = result.stdout.text.split()
    assert code == "ENOSPC" and int(mib) <= 64


def test_05_one_file_cannot_outgrow_the_fsize_limit(guard: Guard, settings, workspace: Path) -> None:
    """A file in the case stops at max_file_size (EFBIG). Documented limit: there is no per-run quota on
    the number of files, so a run can still fill the case's filesystem within its timeout."""
    with Executor(settings.model_copy(update={"max_file_size": "8m"})) as ex:
        result = guard.run("""
import errno
try:
    with open('big.bin', 'wb') as fh:
        while True:
            fh.write(b'\\1' * 1024 * 1024); fh.flush()
except OSError as e:
    print(errno.errorcode[e.errno])
""", executor=ex)
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.stdout.text.strip() == "EFBIG"
    assert (workspace / "projects" / CASE / "big.bin").stat().st_size == 8 * 1024 * 1024


def test_12_sigterm_ignoring_script_and_children_are_killed_at_timeout(guard: Guard) -> None:
    """A script ignoring SIGTERM with sleeping children is killed at the timeout; none of them survives."""
    result = guard.run("""
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for _ in range(3):
    subprocess.Popen(['sleep', '3131'])
print('children started', flush=True)
time.sleep(3131)
""", limits=Limits(timeout=4))
    assert result.status is Status.TIMED_OUT
    assert "children started" in result.stdout.text
    assert wait_until(lambda: not host_processes_with("3131"), 10), "a child of the run is still running"


def test_17_fifty_runs_at_once_with_limit_four_none_lost_all_audited(guard: Guard, executor: Executor,
                                                                     workspace: Path) -> None:
    """50 simultaneous runs against max_concurrent=4: all succeed, all are audited, never more than 4 run."""
    assert executor.settings.max_concurrent == 4
    script = guard.tool("stamp.py", """
import os, time
start = time.time(); time.sleep(0.3)
os.makedirs('stamps', exist_ok=True)
open(f"stamps/{os.environ['EXECUTION_ID']}", 'w').write(f'{start} {time.time()}')
""")
    before, host = snapshot_outside(workspace, CASE), snapshot_host()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: executor.run(ExecutionRequest(script=script, case=CASE)), range(50)))
    assert [r.status for r in results] == [Status.SUCCEEDED] * 50, {r.message for r in results}
    assert len({r.execution_id for r in results}) == 50
    for r in results:
        guard.verify(r, before, host)
    spans = [tuple(map(float, p.read_text().split())) for p in (workspace / "projects" / CASE / "stamps").iterdir()]
    assert len(spans) == 50
    overlap = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert overlap <= 4


def test_19_double_forked_daemon_does_not_survive_the_run(guard: Guard, workspace: Path) -> None:
    """A daemon double-forked by a script that exits 0 dies with the run: it never writes its file."""
    result = guard.run("""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp('sh', ['sh', '-c', 'sleep 3; echo alive > survived.txt; exec sleep 4141'])
    os._exit(0)
print('parent exits')
""")
    assert result.status is Status.SUCCEEDED and result.stdout.text == "parent exits\n"
    time.sleep(5)
    assert not (workspace / "projects" / CASE / "survived.txt").exists()
    assert not host_processes_with("4141")


def test_20_grandchild_holding_stdout_does_not_hold_the_run(guard: Guard) -> None:
    """A grandchild that keeps stdout open neither delays the end of the run nor outlives it."""
    result = guard.run("""
import subprocess, time
subprocess.Popen(['sh', '-c', 'echo grandchild; exec sleep 5151'], start_new_session=True)
time.sleep(0.5)
print('parent done')
""", limits=Limits(timeout=30))
    assert result.status is Status.SUCCEEDED
    assert result.stdout.text.split("\n")[:2] == ["grandchild", "parent done"]
    assert result.durations.run < 25
    assert wait_until(lambda: not host_processes_with("5151"), 10)


def test_20b_stdout_held_open_past_the_timeout_still_ends_the_run(guard: Guard) -> None:
    """When the script itself never ends while a grandchild streams output, the timeout still ends the run."""
    result = guard.run("""
import subprocess, time
subprocess.Popen(['sh', '-c', 'while :; do echo tick; sleep 0.2; done'])
time.sleep(6161)
""", limits=Limits(timeout=4))
    assert result.status is Status.TIMED_OUT
    assert result.stdout.text.startswith("tick") and result.durations.total < 30
    record = json.loads((guard.workspace / result.audit_record).read_text())
    assert record["status"] == "timed_out"
    assert wait_until(lambda: not host_processes_with("6161"), 10)
