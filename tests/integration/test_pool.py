"""Warm one-run containers on the real engine: each serves one run, hardened like a fresh one, isolated."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from scoperun import Limits, Settings, Status
from scoperun.audit.state import state_dir
from scoperun.engine import slots
from scoperun.engine.pool import POOL_LABEL, clean_leftover_slots
from scoperun.executor import Executor
from tests.conftest import CASE, OTHER_CASE
from tests.integration._adversarial import wait_until
from tests.integration.conftest import assert_no_containers_left, unavailable

HARDENING = ("CapAdd", "CapDrop", "SecurityOpt", "ReadonlyRootfs", "Privileged", "Memory", "MemorySwap", "NanoCpus",
             "PidsLimit", "Ulimits", "Tmpfs", "NetworkMode", "IpcMode", "PidMode", "UsernsMode", "Devices",
             "LogConfig", "Runtime", "ShmSize", "CgroupnsMode", "OomKillDisable", "Init")


@pytest.fixture
def pooled(settings: Settings, workspace: Path, docker_client) -> Executor:
    """An executor with a warm pool (root controller, launcher image); removes what it made."""
    if os.geteuid() != 0:
        unavailable("pooled slots need root (host mounts)")
    image = docker_client.images.get(settings.image)
    if not (image.labels or {}).get("org.scoperun.launcher"):
        unavailable(f"{settings.image} has no launcher; rebuild it (`scoperun image build`)")
    ex = Executor(settings.model_copy(update={"pool": True, "pool_size": 1}))
    yield ex
    ex.close()
    assert not _pool_containers(docker_client, ex), "idle pool containers left after close()"
    assert_no_containers_left(docker_client, workspace)


def assert_hardened_like_fresh(docker_client, container_id: str, fresh_kwargs: dict) -> tuple[dict, dict]:
    """A waiting container's hardening equals a fresh one's made from `fresh_kwargs`, field by field from
    `docker inspect` (and both run as the run's user); returns both inspects (waiting, fresh)."""
    fresh_id = docker_client.api.create_container(**fresh_kwargs)["Id"]
    try:
        a = docker_client.api.inspect_container(container_id)
        b = docker_client.api.inspect_container(fresh_id)
    finally:
        docker_client.api.remove_container(fresh_id, force=True)
    for name in HARDENING:
        assert a["HostConfig"].get(name) == b["HostConfig"].get(name), name
    assert a["Config"]["User"] == b["Config"]["User"] == "1000:1000"
    return a, b


def _pool_containers(docker_client, ex: Executor) -> list[dict]:
    owner = ex.backend.pool.options.owner if ex._backend is not None and ex.backend.pool else None
    found = docker_client.api.containers(all=True, filters={"label": POOL_LABEL})
    return [c for c in found if owner is None or c["Labels"].get(POOL_LABEL) == owner]


def _warm_run(ex: Executor, code: str, case: str = CASE, **fields) -> object:
    """Run `code` once the pool holds a warm container for it (the first run of a kind starts fresh)."""
    pool = ex.backend.pool
    if pool.idle_count() == 0:
        ex.run_code("pass", case=case, **fields)
        assert wait_until(lambda: pool.idle_count() > 0, timeout=60), "the pool made no warm container"
    result = ex.run_code(code, case=case, **fields)
    assert result.pooled, result.message
    return result


def test_pooled_run_succeeds_with_exit_code_from_the_launcher(pooled: Executor, workspace: Path,
                                                             docker_client) -> None:
    """A pooled run prints, exits with its own code (reported by the launcher) and is audited as pooled,
    naming the image its warm container was made from."""
    result = _warm_run(pooled, "import sys\nprint('hi from', __import__('os').getcwd())\nsys.exit(3)")
    assert result.status is Status.FAILED and result.exit_code == 3
    assert result.image_id == docker_client.images.get(pooled.settings.image).id
    assert result.stdout.text == f"hi from /workspace/projects/{CASE}\n"
    record = json.loads((workspace / result.audit_record).read_text())
    assert record["exit_code_source"] == "launcher" and record["pooled"] is True


def test_nothing_passes_from_one_pooled_run_to_the_next(pooled: Executor) -> None:
    """Markers left in /tmp, /dev/shm, a background process and the environment are gone for the next run."""
    plant = ("import os, subprocess\nopen('/tmp/marker', 'w').write('x')\nopen('/dev/shm/marker', 'w').write('x')\n"
             "subprocess.Popen(['sleep', '300'], start_new_session=True)\nos.environ['MARKER'] = '1'\nprint('planted')")
    first = _warm_run(pooled, plant)
    assert first.status is Status.SUCCEEDED and first.stdout.text == "planted\n"
    probe = ("import os, subprocess\nprint(os.path.exists('/tmp/marker'), os.path.exists('/dev/shm/marker'), "
             "'MARKER' in os.environ, b'sleep' in subprocess.run(['ps', '-eo', 'comm'], capture_output=True).stdout"
             " if os.path.exists('/bin/ps') else any(open(f'/proc/{p}/comm').read().strip() == 'sleep' "
             "for p in os.listdir('/proc') if p.isdigit()))")
    second = _warm_run(pooled, probe)
    assert second.status is Status.SUCCEEDED and second.stdout.text == "False False False False\n", second.stdout.text


def test_a_pooled_run_sees_only_its_own_case_and_tools_read_only(pooled: Executor) -> None:
    """/workspace/projects holds only the run's case; writing into Tools fails; another case is never there."""
    probe = ("import os\nprint(sorted(os.listdir('/workspace/projects')))\ntry:\n"
             "    open('/workspace/Tools/x', 'w')\n    print('tools writable')\nexcept OSError as e:\n"
             "    print('tools', e.errno)\n")
    first = _warm_run(pooled, probe, case=CASE)
    assert first.stdout.text == f"['{CASE}']\ntools 30\n"  # EROFS
    second = _warm_run(pooled, probe, case=OTHER_CASE)
    assert second.stdout.text == f"['{OTHER_CASE}']\ntools 30\n"


def test_the_script_cannot_forge_the_end_line_or_reach_the_launcher(pooled: Executor) -> None:
    """A fake end line is plain output; /proc/1's environment, fds and memory, ptrace and signals to PID 1 all fail."""
    code = r"""
import ctypes, os, signal, sys
print('\x1escoperun-end-' + 'ab' * 16 + ':{"code": 0, "how": "exited", "oom_known": true}')
for path in ('/proc/1/environ', '/proc/1/mem', '/proc/1/fd/0'):
    try:
        open(path, 'rb').read(16)
        print('read', path)
    except OSError as e:
        print('denied', path)
libc = ctypes.CDLL(None, use_errno=True)
print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
    os.kill(1, sig)
print('alive')
sys.exit(5)
"""
    result = _warm_run(pooled, code)
    lines = result.stdout.text.split("\n")
    assert result.exit_code == 5 and result.exit_code_source == "launcher"
    assert lines[0].startswith("\x1escoperun-end-abab")  # kept as output, not taken as the end
    assert lines[1:4] == ["denied /proc/1/environ", "denied /proc/1/mem", "denied /proc/1/fd/0"]
    assert lines[4].startswith("ptrace -1 ") and lines[5] == "alive"


def test_secrets_never_appear_in_the_containers_configuration(settings: Settings, workspace: Path, docker_client,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the pool on and off, a secret reaches the script but no `docker inspect` of its container shows it."""
    if not (docker_client.images.get(settings.image).labels or {}).get("org.scoperun.launcher"):
        unavailable(f"{settings.image} has no launcher; rebuild it (`scoperun image build`)")
    secret = "sk-" + os.urandom(12).hex()
    monkeypatch.setenv("SCOPERUN_TEST_SECRET", secret)
    go = workspace / "Tools" / "go"
    code = (f"import os, time\nprint(os.environ['SCOPERUN_TEST_SECRET'] == {secret!r})\n"
            "while not os.path.exists('/workspace/Tools/go'):\n    time.sleep(0.05)\n")
    for pool in (False, True):
        if pool and os.geteuid() != 0:
            continue
        go.unlink(missing_ok=True)
        ex = Executor(settings.model_copy(update={"secret_env": ["SCOPERUN_TEST_SECRET"], "pool": pool,
                                                  "pool_size": 1}))
        try:
            if pool:
                ex.run_code("pass", case=CASE)
                wait_until(lambda ex=ex: ex.backend.pool.idle_count() > 0, timeout=60)
            holder: dict = {}
            thread = threading.Thread(target=lambda ex=ex, holder=holder: holder.update(
                result=ex.run_code(code, case=CASE)))
            thread.start()
            seen = []
            deadline = time.monotonic() + 30
            while thread.is_alive() and time.monotonic() < deadline and len(seen) < 3:
                for c in docker_client.api.containers(filters={"label": "org.scoperun.managed=1"}):
                    try:
                        seen.append(json.dumps(docker_client.api.inspect_container(c["Id"])))
                    except docker.errors.NotFound:
                        pass  # another run's container, just removed
                time.sleep(0.1)
            go.touch()
            thread.join(60)
            result = holder["result"]
            assert result.status is Status.SUCCEEDED and result.stdout.text == "True\n"
            assert result.pooled is pool
            assert seen and not any(secret in s for s in seen)
        finally:
            ex.close()


def test_a_pooled_container_is_hardened_like_a_fresh_one(pooled: Executor, docker_client) -> None:
    """Field by field from `docker inspect`: a warm container and a fresh one for the same run agree."""
    _warm_run(pooled, "pass")
    assert wait_until(lambda: pooled.backend.pool.idle_count() > 0, timeout=60)
    warm = next(w for ws in pooled.backend.pool._idle.values() for w in ws)
    spec = next(iter(pooled.backend.pool._wanted.values()))
    a, _ = assert_hardened_like_fresh(docker_client, warm.container_id,
                                      pooled.backend._create_kwargs(replace(spec, mounts=())))
    assert a["Config"]["Env"] == [e for e in a["Config"]["Env"] if not e.startswith(("EXECUTION_ID", "CASE_NAME"))]
    slot = next(m for m in a["HostConfig"]["Mounts"] if m["Target"] == "/workspace")
    assert slot["ReadOnly"] and slot["BindOptions"]["Propagation"] == "rslave"


def test_limits_differing_from_the_warm_container_are_set_exactly(pooled: Executor) -> None:
    """A run asking for other memory, CPUs and pids gets a pooled container updated to exactly those."""
    _warm_run(pooled, "pass")
    code = ("def read(p):\n    try:\n        return open(p).read().split()[0]\n    except OSError:\n        return '?'\n"
            "print(read('/sys/fs/cgroup/memory/memory.limit_in_bytes'), read('/sys/fs/cgroup/memory/memory.memsw."
            "limit_in_bytes'), read('/sys/fs/cgroup/pids/pids.max'), read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'))")
    result = _warm_run(pooled, code, limits=Limits(memory="300m", cpus=0.25, pids_limit=77))
    mem, swap, pids, quota = result.stdout.text.split()
    assert (mem, pids) == (str(300 * 1024**2), "77")
    assert swap in (mem, "?") and quota in ("25000", "?")


def test_pooled_timeout_oom_and_staged_changes_behave_as_fresh(pooled: Executor, workspace: Path) -> None:
    """Timeout kills the run (timed_out), an allocation past the limit is oom_killed, a staged write is applied."""
    slow = _warm_run(pooled, "import time\ntime.sleep(60)", limits=Limits(timeout=2))
    assert slow.status is Status.TIMED_OUT and slow.exit_code == 137
    hog = _warm_run(pooled, "b = bytearray(400 * 1024 * 1024)\nprint(len(b))", limits=Limits(memory="128m"))
    assert hog.status is Status.OOM_KILLED, hog.message
    wrote = _warm_run(pooled, "open('pooled.txt', 'w').write('hello')", write_mode="staged")
    assert wrote.status is Status.SUCCEEDED and wrote.changes is not None
    assert (workspace / "projects" / CASE / "pooled.txt").read_text() == "hello"


def test_gc_unmounts_slots_a_dead_process_left(tmp_path: Path) -> None:
    """A slot still holding a case bind after its owner died is unmounted and removed; the case is untouched."""
    if os.geteuid() != 0:
        unavailable("slot mounts need root")
    case = tmp_path / "case"
    case.mkdir()
    (case / "keep.txt").write_text("precious")
    root = tmp_path / "pool" / "999999999-dead"  # no such pid
    point = root / "slot-x" / "projects" / "case"
    point.mkdir(parents=True)
    slots.bind(case, point, read_only=False)
    try:
        done = clean_leftover_slots(tmp_path / "pool")
    finally:
        slots.unmount(point)
    assert str(point) in done and not root.exists()
    assert (case / "keep.txt").read_text() == "precious"


def test_the_replacement_is_prepared_after_the_result_not_during_the_run(pooled: Executor) -> None:
    """While a pooled run runs no replacement is being made; once its result is back the pool refills."""
    _warm_run(pooled, "pass")
    assert pooled.settle(60) and pooled.backend.pool.idle_count() == 1
    pool = pooled.backend.pool
    made_before = pool.made
    seen: list[tuple[int, int]] = []

    def during(stream: str, text: str) -> None:
        if "running" in text:
            seen.append((pool.made, pool.idle_count()))

    # Printed after 2 s: time enough for a replacement started with the run to be ready by then.
    result = pooled.run_code("import time\ntime.sleep(2)\nprint('running', flush=True)\ntime.sleep(0.5)",
                             case=CASE, on_output=during)
    assert result.pooled and result.status is Status.SUCCEEDED, result.message
    time.sleep(0.2)  # the listener runs on the reader thread; it has long run by now
    assert seen == [(made_before, 0)], "a replacement was made while the pooled run was running"
    assert pooled.settle(60), "the replacement was not made within 60 s"
    assert pool.made == made_before + 1 and pool.idle_count() == 1


def _container_of(docker_client, execution_id: str) -> dict | None:
    found = docker_client.api.containers(all=True, filters={"name": f"scoperun-{execution_id}"})
    return found[0] if found else None


def test_a_used_container_waits_for_a_lull_holding_nothing_of_its_run(pooled: Executor, docker_client) -> None:
    """While another run is in flight, a used pooled container is kept (ended later, with others): only
    its launcher is left in it, nothing of the case is mounted; once no run is in flight it is removed."""
    _warm_run(pooled, "pass")
    assert pooled.settle(60)
    backend = pooled.backend
    backend.lull.begin()  # another run in flight (as in a burst)
    try:
        result = pooled.run_code("import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\n"
                                 "open('/tmp/left', 'w').write('x')\nprint('ok')", case=CASE)
        assert result.pooled and result.status is Status.SUCCEEDED, result.message
        assert wait_until(lambda: _container_of(docker_client, result.execution_id) is not None, timeout=10)
        container = _container_of(docker_client, result.execution_id)
        assert container["State"] == "running" and backend.used.held() == 1
        processes = docker_client.api.top(container["Id"])["Processes"]
        assert len(processes) == 1 and "launcher.py" in " ".join(processes[0]), processes

        def case_mounted() -> bool:
            out = docker_client.api.exec_start(docker_client.api.exec_create(
                container["Id"], ["cat", "/proc/self/mountinfo"], user="root")["Id"])
            return b"/workspace/projects" in out

        assert wait_until(lambda: not case_mounted(), timeout=10), "the case is still mounted in the used container"
    finally:
        backend.lull.end()
    assert wait_until(lambda: _container_of(docker_client, result.execution_id) is None, timeout=20), \
        "the used container was not removed once no run was in flight"
    assert backend.used.held() == 0


def test_close_ends_used_containers_at_once(pooled: Executor, docker_client) -> None:
    """Executor.close() ends used pooled containers still waiting for a lull, and nothing is left."""
    _warm_run(pooled, "pass")
    assert pooled.settle(60)
    pooled.backend.lull.begin()  # never ended: only close() can end the used container now
    result = pooled.run_code("print(1)", case=CASE)
    assert result.pooled and pooled.backend.used.held() == 1
    pooled.close()
    assert _container_of(docker_client, result.execution_id) is None


def test_pool_containers_end_when_their_process_dies(settings: Settings, workspace: Path, docker_client,
                                                     tmp_path: Path) -> None:
    """A process killed with warm containers idle: their launchers read EOF on stdin and they go at once
    (not after the pool's idle lifetime)."""
    if os.geteuid() != 0:
        unavailable("pooled slots need root (host mounts)")
    import signal
    import subprocess
    import sys

    script = tmp_path / "pool_owner.py"
    script.write_text(
        "import sys, time\nfrom scoperun import Settings\nfrom scoperun.executor import Executor\n"
        f"ex = Executor(Settings(workspace={str(workspace)!r}, image={settings.image!r}, network='none', pool=True, "
        "pool_size=2))\n"
        f"ex.run_code('pass', case={CASE!r})\n"
        "assert ex.settle(120)\nprint(ex.backend.pool.options.owner, flush=True)\ntime.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        owner = proc.stdout.readline().strip()
        assert owner, "the pool owner did not start"
        mine = lambda: docker_client.api.containers(all=True, filters={"label": f"{POOL_LABEL}={owner}"})  # noqa: E731
        assert len(mine()) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not mine(), timeout=20), mine()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        clean_leftover_slots(state_dir(settings) / "pool")


def test_replacements_wait_for_a_lull_unless_nothing_of_the_kind_is_warm(settings: Settings, workspace: Path,
                                                                           docker_client, monkeypatch) -> None:
    """With a run in flight, a replacement waits while a warm container of the kind is left, and is made
    at once when none is (the next such run would start fresh)."""
    if os.geteuid() != 0:
        unavailable("pooled slots need root (host mounts)")
    import scoperun.engine.afterwork as afterwork

    monkeypatch.setattr(afterwork, "MOST", 300.0)  # only the rule under test can let a replacement through
    ex = Executor(settings.model_copy(update={"pool": True, "pool_size": 2}))
    try:
        ex.run_code("pass", case=CASE)
        pool = ex.backend.pool
        assert wait_until(lambda: pool.idle_count() == 2, timeout=120), "the pool did not fill"
        made = pool.made
        ex.backend.lull.begin()  # a run in flight that never ends
        try:
            assert ex.run_code("pass", case=CASE).pooled
            time.sleep(2)
            assert pool.made == made and pool.idle_count() == 1, "a replacement was made while runs were in flight"
            assert ex.run_code("pass", case=CASE).pooled
            assert wait_until(lambda: pool.made >= made + 1, timeout=60), "no replacement although none was warm"
        finally:
            ex.backend.lull.end()
    finally:
        ex.close()
    assert_no_containers_left(docker_client, workspace)
