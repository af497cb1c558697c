"""The shape a pre-started container must share with a run (engine.prestart), and when the pool takes that path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from scoperun.engine.base import BindMount, OverlayMount, RunSpec
from scoperun.engine.pool import PoolOptions, WarmPool
from scoperun.engine.prestart import Prestarter, _shape, clean_leftover_prestart, warm_pool


@pytest.fixture
def spec(tmp_path: Path) -> RunSpec:
    """A direct run of a temp script on a case, Tools read-only."""
    for d in ("case", "other", "Tools", "scripts"):
        (tmp_path / d).mkdir()
    (tmp_path / "scripts" / "exec_1_a.py").write_text("print(1)")
    (tmp_path / "scripts" / "exec_2_b.py").write_text("print(2)")
    return RunSpec(
        execution_id="exec_1", image="img", command=("python3", "/workspace/Database/temp_scripts/exec_1_a.py"),
        working_dir="/workspace/projects/c", env={"SECRET": "x"}, user="1000:1000", timeout=60,
        memory_bytes=512 * 1024**2, cpus=1.0, pids_limit=256, nofile=1024, tmp_size_bytes=64 * 1024**2,
        network="none", output_cap=65536,
        mounts=(BindMount(tmp_path / "case", "/workspace/projects/c", read_only=False),
                BindMount(tmp_path / "Tools", "/workspace/Tools", read_only=True),
                BindMount(tmp_path / "scripts" / "exec_1_a.py", "/workspace/Database/temp_scripts/exec_1_a.py",
                          read_only=True)),
        labels={"org.scoperun.case": "c", "org.scoperun.workspace": str(tmp_path)})


def test_the_next_run_of_a_case_has_the_same_shape_whatever_its_script_secrets_and_limits(spec: RunSpec,
                                                                                        tmp_path: Path) -> None:
    """Another script in the same folder, other secrets, memory, CPUs and pids: the same shape."""
    script = BindMount(tmp_path / "scripts" / "exec_2_b.py", "/workspace/Database/temp_scripts/exec_2_b.py", True)
    other = replace(spec, execution_id="exec_2", env={"SECRET": "y"}, memory_bytes=1, cpus=0.5, pids_limit=7,
                    mounts=(*spec.mounts[:2], script), working_dir="/workspace/projects/c/sub")
    assert _shape(spec) is not None and _shape(other) == _shape(spec)


def test_anything_else_that_differs_is_another_shape(spec: RunSpec, tmp_path: Path) -> None:
    """Another case folder, write mode, Tools writable, network, user, image, runtime or seccomp: another shape."""
    case_ro = BindMount(tmp_path / "case", "/workspace/projects/c", read_only=True)
    other_case = BindMount(tmp_path / "other", "/workspace/projects/c", read_only=False)
    tools_rw = BindMount(tmp_path / "Tools", "/workspace/Tools", read_only=False)
    variants = [replace(spec, mounts=(case_ro, *spec.mounts[1:])), replace(spec, mounts=(other_case, *spec.mounts[1:])),
                replace(spec, mounts=(spec.mounts[0], tools_rw, spec.mounts[2])),
                replace(spec, mounts=spec.mounts[:2]),  # a script in Tools: no scripts folder in the container
                replace(spec, network="bridge"), replace(spec, user="0:0"), replace(spec, image="img2"),
                replace(spec, runtime="runsc"), replace(spec, seccomp="{}"), replace(spec, nofile=10),
                replace(spec, labels={**spec.labels, "org.scoperun.case": "d"})]
    shapes = {_shape(v) for v in variants}
    assert None not in shapes and len(shapes) == len(variants) and _shape(spec) not in shapes


def test_staged_runs_and_mounts_it_cannot_keep_are_never_pre_started(spec: RunSpec, tmp_path: Path) -> None:
    """An overlay (staged), a mount outside /workspace, a writable single file, a script folder over the case:
    no shape (the run starts fresh)."""
    overlay = OverlayMount(lower=tmp_path / "case", upper=tmp_path / "u", work=tmp_path / "w",
                           target="/workspace/projects/c", options={"o": "x"})
    script_in_case = BindMount(tmp_path / "scripts" / "exec_1_a.py", "/workspace/projects/c/s/x.py", True)
    for mounts in [(overlay, *spec.mounts[1:]), (*spec.mounts, BindMount(tmp_path / "other", "/data", True)),
                   (*spec.mounts[:2], replace(spec.mounts[2], read_only=False)),
                   (*spec.mounts[:2], script_in_case), (*spec.mounts, BindMount(tmp_path / "gone", "/workspace/g", True))]:
        assert _shape(replace(spec, mounts=mounts)) is None, mounts


def test_the_pool_takes_the_pre_started_path_without_slots(tmp_path: Path) -> None:
    """slots=False (or a controller that cannot mount) gives pre-started containers, never slot mounts."""
    pool = warm_pool(object(), PoolOptions(size=1, idle=60, root=tmp_path / "p", slots=False))  # type: ignore[arg-type]
    assert isinstance(pool, Prestarter) and not isinstance(pool, WarmPool)
    pool.close()


def test_leftover_script_copies_of_a_dead_process_are_removed(tmp_path: Path) -> None:
    """gc's clean-up removes the files folders of a process that is gone, not those of a live one."""
    dead = tmp_path / "999999999-x" / "prestart-ab" / "0"
    live = tmp_path / f"{__import__('os').getpid()}-y" / "prestart-cd" / "0"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "exec_1_a.py").write_text("print(1)")
    assert clean_leftover_prestart(tmp_path) == [str(dead.parent)]
    assert not dead.parent.parent.exists() and (live / "exec_1_a.py").exists()
