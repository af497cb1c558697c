"""Without slots (the non-root path): the next container of a case is pre-started with its mounts, on the real engine.

The tests run as root here and in CI: `pool_slots = false` makes the pool take the path a
controller without root takes (no host mounts at all), against the real engine and image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest

from scoperun import Limits, Settings, Status
from scoperun.engine.docker import DockerBackend
from scoperun.engine.pool import POOL_LABEL, PoolOptions
from scoperun.engine.prestart import Prestarter
from scoperun.executor import Executor
from scoperun.ops import collect_garbage, list_pool
from tests.conftest import CASE, OTHER_CASE
from tests.integration._adversarial import wait_until
from tests.integration.conftest import assert_no_containers_left, unavailable
from tests.integration.test_pool import assert_hardened_like_fresh


def _launcher_image(settings: Settings, docker_client) -> None:
    if not (docker_client.images.get(settings.image).labels or {}).get("org.scoperun.launcher"):
        unavailable(f"{settings.image} has no launcher; rebuild it (`scoperun image build`)")


def _ours(docker_client, owner: str) -> list[dict]:
    return [c for c in docker_client.api.containers(all=True, filters={"label": POOL_LABEL})
            if c["Labels"].get(POOL_LABEL) == owner]


@pytest.fixture
def prestarted(settings: Settings, workspace: Path, docker_client) -> Executor:
    """An executor whose pool takes the non-root path (direct writes); removes what it made."""
    _launcher_image(settings, docker_client)
    ex = Executor(settings.model_copy(update={"pool": True, "pool_size": 2, "pool_slots": False,
                                              "write_mode": "direct"}))
    assert isinstance(ex.backend.pool, Prestarter)
    owner = ex.backend.pool.options.owner
    yield ex
    ex.close()
    assert not _ours(docker_client, owner), "pre-started containers left after close()"
    assert not list(ex.backend.pool.options.root.glob("prestart-*")), "script copies left after close()"
    assert_no_containers_left(docker_client, workspace)


def _ready(ex: Executor, count: int = 1) -> None:
    assert ex.settle(90), "the next container was not prepared within 90 s"
    assert ex.backend.pool.idle_count() == count


def test_the_second_run_on_a_case_is_served_pre_started_and_another_case_is_not(prestarted: Executor,
                                                                              workspace: Path) -> None:
    """Run 1 on a case starts fresh, run 2 gets the container pre-started for it (audited as pooled, its
    script in place, the case mounted); a run on another case starts fresh and sees only its own case."""
    probe = "import os, sys\nprint(os.getcwd(), sorted(os.listdir('/workspace/projects')))\nsys.exit(4)"
    first = prestarted.run_code(probe, case=CASE)
    assert not first.pooled and first.exit_code == 4, first.message
    _ready(prestarted)
    second = prestarted.run_code(probe, case=CASE)
    assert second.pooled and second.exit_code == 4 and second.exit_code_source == "launcher", second.message
    assert second.stdout.text == f"/workspace/projects/{CASE} ['{CASE}']\n"
    record = json.loads((workspace / second.audit_record).read_text())
    assert record["pooled"] is True and record["exit_code_source"] == "launcher"
    _ready(prestarted)  # the next one for CASE
    other = prestarted.run_code(probe, case=OTHER_CASE)
    assert not other.pooled and other.stdout.text == f"/workspace/projects/{OTHER_CASE} ['{OTHER_CASE}']\n"
    _ready(prestarted, 2)  # one per case now
    again = prestarted.run_code("print(open('secret.txt').read(), end='')", case=OTHER_CASE)
    assert again.pooled and again.stdout.text == "other case's private file\n", again.message


def test_direct_writes_and_read_only_runs_behave_as_fresh(prestarted: Executor, workspace: Path) -> None:
    """A pre-started direct run's write lands in the case and is recorded; a read-only run cannot write
    (a read-only run is another shape: it never takes the direct run's container)."""
    prestarted.run_code("pass", case=CASE)
    _ready(prestarted)
    wrote = prestarted.run_code("open('prestarted.txt', 'w').write('hello')", case=CASE)
    assert wrote.pooled and wrote.status is Status.SUCCEEDED, wrote.message
    assert (workspace / "projects" / CASE / "prestarted.txt").read_text() == "hello"
    assert wrote.changes is not None and [e.path for e in wrote.changes.entries] == ["prestarted.txt"]
    code = "try:\n    open('ro.txt', 'w')\n    print('wrote')\nexcept OSError as e:\n    print(e.errno)"
    first = prestarted.run_code(code, case=CASE, write_mode="read-only")
    assert not first.pooled and first.stdout.text == "30\n"
    _ready(prestarted, 2)
    second = prestarted.run_code(code, case=CASE, write_mode="read-only")
    assert second.pooled and second.stdout.text == "30\n", second.message
    assert not (workspace / "projects" / CASE / "ro.txt").exists()


def test_staged_runs_and_other_shapes_start_fresh(prestarted: Executor) -> None:
    """Staged runs are never pre-started; a run on the same case with another network is not served by
    the container pre-started for `none`; other memory, CPUs and pids are fitted exactly."""
    staged = [prestarted.run_code("pass", case=CASE, write_mode="staged") for _ in range(2)]
    assert prestarted.settle(60) and prestarted.backend.pool.idle_count() == 0
    assert not any(r.pooled for r in staged)
    prestarted.run_code("pass", case=CASE)
    _ready(prestarted)
    bridged = prestarted.run_code("pass", case=CASE, network="bridge")
    assert not bridged.pooled and bridged.status is Status.SUCCEEDED, bridged.message
    _ready(prestarted, 2)
    code = ("def read(p):\n    try:\n        return open(p).read().split()[0]\n    except OSError:\n        return '?'\n"
            "print(read('/sys/fs/cgroup/memory/memory.limit_in_bytes'), read('/sys/fs/cgroup/pids/pids.max'))")
    fitted = prestarted.run_code(code, case=CASE, limits=Limits(memory="300m", cpus=0.25, pids_limit=77))
    assert fitted.pooled, fitted.message
    mem, pids = fitted.stdout.text.split()
    assert (mem, pids) in ((str(300 * 1024**2), "77"), ("?", "?"))


def test_each_pre_started_container_serves_one_run(prestarted: Executor) -> None:
    """A marker left in /tmp, /dev/shm and a background process by one pre-started run is gone for the next."""
    plant = ("import subprocess\nopen('/tmp/marker', 'w').write('x')\nopen('/dev/shm/marker', 'w').write('x')\n"
             "subprocess.Popen(['sleep', '300'], start_new_session=True)\nprint('planted')")
    probe = ("import os\nprint(os.path.exists('/tmp/marker'), os.path.exists('/dev/shm/marker'), any(open("
             "f'/proc/{p}/comm').read().strip() == 'sleep' for p in os.listdir('/proc') if p.isdigit()))")
    prestarted.run_code("pass", case=CASE)
    _ready(prestarted)
    first = prestarted.run_code(plant, case=CASE)
    assert first.pooled and first.stdout.text == "planted\n", first.message
    _ready(prestarted)
    second = prestarted.run_code(probe, case=CASE)
    assert second.pooled and second.stdout.text == "False False False\n", second.stdout.text


def test_a_pre_started_container_is_hardened_like_a_fresh_one(prestarted: Executor, docker_client,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Field by field from `docker inspect`, a pre-started container and a fresh one for the same run agree,
    mounts included (the script's folder, read-only, in place of the script); no environment in its config."""
    prestarted.run_code("pass", case=CASE)
    _ready(prestarted)
    pool = prestarted.backend.pool
    ready = next(iter(pool._idle.values()))
    spec = None

    def keep(s, *args, **kwargs):  # the spec of the next run, made by the pipeline
        nonlocal spec
        spec = s
        return original(s, *args, **kwargs)

    original = prestarted.backend.start
    monkeypatch.setattr(prestarted.backend, "start", keep)
    result = prestarted.run_code("pass", case=CASE)  # claims `ready`; its spec is the comparison's
    assert result.pooled and spec is not None
    _ready(prestarted)
    ready = next(iter(pool._idle.values()))  # prepared for the next run, like `spec`
    a, b = assert_hardened_like_fresh(docker_client, ready.container_id, prestarted.backend._create_kwargs(spec))
    assert not [e for e in a["Config"]["Env"] if e.startswith(("EXECUTION_ID", "CASE_NAME"))]
    script = next(m for m in spec.mounts if m.source.is_file())

    def mounts(info: dict) -> set[tuple]:
        return {(m["Target"], m["Source"], m.get("ReadOnly", False)) for m in info["HostConfig"]["Mounts"]}

    folder = str(Path(script.target).parent)
    assert mounts(a) - {(folder, str(ready.folders[folder]), True)} == mounts(b) - {(script.target,
                                                                                     str(script.source), True)}
    assert (folder, str(ready.folders[folder]), True) in mounts(a) and not any(ready.folders[folder].iterdir())


def test_close_and_gc_remove_an_unused_pre_started_container(settings: Settings, workspace: Path, docker_client,
                                                              tmp_path: Path) -> None:
    """An unused pre-started container is listed apart by `ps`; `close()` removes it, and `gc` removes
    one whose process is gone, with its files folder."""
    _launcher_image(settings, docker_client)
    settings = settings.model_copy(update={"write_mode": "direct", "pool_size": 1})
    for ending in ("close", "gc"):
        owner = f"{os.uname().nodename}:{os.getpid()}" if ending == "close" else f"{os.uname().nodename}:999999999"
        root = tmp_path / ending / "pool" / ("999999999-x" if ending == "gc" else f"{os.getpid()}-x")
        backend = DockerBackend(settings.docker_host, pool=PoolOptions(size=1, idle=600, root=root, owner=owner,
                                                                       slots=False))
        ex = Executor(settings, backend=backend)
        try:
            assert not ex.run_code("pass", case=CASE).pooled
            assert ex.settle(90) and backend.pool.idle_count() == 1
            idle = list_pool(settings)
            assert [r.pool for r in idle] == [owner] and idle[0].container.startswith("scoperun-pool-")
            assert len(list(root.glob("prestart-*"))) == 1
            if ending == "gc":
                report = collect_garbage(settings.model_copy(update={"state_dir": tmp_path / ending}))
                assert [c["reason"] for c in report.containers_removed] == ["its warm pool's process is gone"]
                assert not list(root.glob("prestart-*"))
                assert wait_until(lambda owner=owner: not _ours(docker_client, owner), timeout=20)
        finally:
            ex.close()
        assert not _ours(docker_client, owner) and not list(root.glob("prestart-*"))
    assert_no_containers_left(docker_client, workspace)


def test_a_replaced_case_folder_is_never_served_by_the_old_container(prestarted: Executor, workspace: Path) -> None:
    """When the case folder is replaced after its container was pre-started, the run starts fresh on the new one."""
    prestarted.run_code("pass", case=CASE)
    _ready(prestarted)
    case = workspace / "projects" / CASE
    case.rename(workspace / "projects" / "moved-away")
    case.mkdir()
    (case / "new.txt").write_text("new")
    result = prestarted.run_code("import os\nprint(sorted(os.listdir('.')))", case=CASE)
    assert not result.pooled and result.stdout.text == "['new.txt']\n", result.message



def test_secrets_reach_a_pre_started_run_only_on_stdin(settings: Settings, workspace: Path, docker_client,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret reaches the pre-started run's script, but no `docker inspect` of any container shows it,
    before or during the run; a timeout ends a pre-started run like a fresh one."""
    _launcher_image(settings, docker_client)
    secret = "sk-" + os.urandom(12).hex()
    monkeypatch.setenv("SCOPERUN_TEST_SECRET", secret)
    ex = Executor(settings.model_copy(update={"secret_env": ["SCOPERUN_TEST_SECRET"], "pool": True, "pool_size": 1,
                                              "pool_slots": False, "write_mode": "direct"}))
    go = workspace / "Tools" / "go"
    code = (f"import os, time\nprint(os.environ['SCOPERUN_TEST_SECRET'] == {secret!r}, flush=True)\n"
            "while not os.path.exists('/workspace/Tools/go'):\n    time.sleep(0.05)\n")
    seen: list[str] = []

    def inspect_all() -> None:
        for c in docker_client.api.containers(filters={"label": "org.scoperun.managed=1"}):
            try:
                seen.append(json.dumps(docker_client.api.inspect_container(c["Id"])))
            except docker.errors.NotFound:
                pass  # another run's container, just removed

    def during(stream: str, text: str) -> None:
        inspect_all()
        go.touch()

    try:
        ex.run_code("pass", case=CASE)
        _ready(ex)
        inspect_all()
        result = ex.run_code(code, case=CASE, on_output=during)
        assert result.pooled and result.status is Status.SUCCEEDED and result.stdout.text == "True\n"
        assert len(seen) >= 2 and not any(secret in s for s in seen)
        _ready(ex)
        slow = ex.run_code("import time\ntime.sleep(60)", case=CASE, limits=Limits(timeout=2))
        assert slow.pooled and slow.status is Status.TIMED_OUT and slow.exit_code == 137, slow.message
    finally:
        ex.close()
    assert_no_containers_left(docker_client, workspace)


def test_a_container_past_its_idle_lifetime_is_not_handed_out(prestarted: Executor, docker_client) -> None:
    """One that waited (nearly) `pool_idle` is removed instead of serving; the run starts fresh."""
    prestarted.run_code("pass", case=CASE)
    _ready(prestarted)
    ready = next(iter(prestarted.backend.pool._idle.values()))
    ready.made -= prestarted.settings.pool_idle  # as if it had waited that long
    result = prestarted.run_code("print(1)", case=CASE)
    assert not result.pooled and result.stdout.text == "1\n", result.message

    def gone() -> bool:
        try:
            docker_client.api.inspect_container(ready.container_id)
        except docker.errors.NotFound:
            return True
        return False

    assert wait_until(gone, timeout=20)
