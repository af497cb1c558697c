"""Cost of change sets: `staged` vs `direct` runs on a 10,000-file case, and apply / rollback times.

A case of 10,000 small files (100 folders x 100); the run appends to 10 of them. Interleaved in
one process, N times each: a `direct` run (before/after listings), a `staged` run with apply
on-success (overlay, change set, journal, apply), and a staged run kept for review, then applied
and rolled back by hand. Prints medians and the staged/direct ratio. Goal: staged < 1.20 x direct.

    .venv/bin/python benchmarks/changes.py [-n 15] [--image scoperun-runner:latest]

`--wipe 60000` measures instead the apply and the rollback of a staged run that deleted every
file of a case of that many files (600 folders of 100), N times each: the worst case for the
journal (every file saved, every file put back).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from scoperun import ExecutionRequest, Executor, Settings, Status
from scoperun.changes import apply_changes, rollback_changes
from scoperun.changes.snapshot import scan

CODE = """import os
for i in range(10):
    with open(f'd{i:03}/f{i:03}.txt', 'a') as fh:
        fh.write(os.environ['EXECUTION_ID'] + '\\n')
"""


def make_case(root: Path, files: int = 10_000, per_dir: int = 100) -> str:
    case = root / "projects" / "Bench-Case"
    for i in range(files):
        d = case / f"d{i // per_dir:03}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i % per_dir:03}.txt").write_text(f"file {i}\n")
    (root / "Tools").mkdir()
    (root / "Tools" / "touch10.py").write_text(CODE)
    (root / "Database" / "script_executions").mkdir(parents=True)
    if os.geteuid() == 0:
        for p in [case, *case.rglob("*")]:
            os.chown(p, 1000, 1000)
    return case.name


WIPE = """import os, shutil
for name in os.listdir('.'):
    shutil.rmtree(name)
"""


def wipe_bench(n: int, files: int, image: str) -> None:
    """Apply and rollback of a staged run that deleted every file of a `files`-file case."""
    root = Path(tempfile.mkdtemp(prefix="scoperun-bench-wipe-"))
    case = make_case(root, files=files)
    (root / "Tools" / "wipe.py").write_text(WIPE)
    settings = Settings(workspace=root, image=image, network="none", staging_dir=root.parent / f"{root.name}-staging",
                        changes_max_files=files * 2, post_run_budget=3600, timeout=600)
    times: dict[str, list[float]] = {"run": [], "apply": [], "rollback": []}
    with Executor(settings) as executor:
        for _ in range(n):
            t = time.perf_counter()
            result = executor.run(ExecutionRequest(script="Tools/wipe.py", case=case, apply="never"))
            times["run"].append(time.perf_counter() - t)
            assert result.changes is not None and result.changes.totals.files_deleted == files, result.message
            t = time.perf_counter()
            assert apply_changes(settings, result.execution_id).status.value == "applied"
            times["apply"].append(time.perf_counter() - t)
            t = time.perf_counter()
            assert rollback_changes(settings, result.execution_id).status.value == "rolled_back"
            times["rollback"].append(time.perf_counter() - t)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(settings.staging_dir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"scoperun change sets: staged run deleting all {files:,} files of a case, N={n} "
          f"({platform.node()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})")
    for key, label in [("run", "run (container + change set read back)"), ("apply", "apply (journal + deletions)"),
                       ("rollback", "rollback (every file put back)")]:
        print(f"  {label:<45} median {med[key]:8.2f} s   ({med[key] / files * 1e6:6.0f} us per file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=15, help="runs of each kind")
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    parser.add_argument("--wipe", type=int, default=0, metavar="FILES",
                        help="measure apply and rollback of a run that deleted all FILES files of a case instead")
    opts = parser.parse_args()
    if opts.wipe:
        wipe_bench(opts.n, opts.wipe, opts.image)
        return

    root = Path(tempfile.mkdtemp(prefix="scoperun-bench-changes-"))
    case = make_case(root)
    settings = Settings(workspace=root, image=opts.image, network="none", staging_dir=root.parent / f"{root.name}-staging")
    executor = Executor(settings)

    def run(mode: str, apply: str = "on-success") -> tuple[float, str]:
        t = time.perf_counter()
        result = executor.run(ExecutionRequest(script="Tools/touch10.py", case=case, write_mode=mode, apply=apply))
        elapsed = time.perf_counter() - t
        assert result.status is Status.SUCCEEDED, result.message
        assert result.changes is not None and result.changes.totals.files_modified == 10, result.changes
        return elapsed, result.execution_id

    run("direct"), run("staged")  # warm up: engine connection, page cache
    times: dict[str, list[float]] = {"direct": [], "staged": [], "apply": [], "rollback": [], "scan": []}
    for i in range(opts.n):
        for mode in (("direct", "staged") if i % 2 == 0 else ("staged", "direct")):
            times[mode].append(run(mode)[0])
        _, run_id = run("staged", apply="never")
        t = time.perf_counter()
        assert apply_changes(settings, run_id).status.value == "applied"
        times["apply"].append(time.perf_counter() - t)
        t = time.perf_counter()
        assert rollback_changes(settings, run_id).status.value == "rolled_back"
        times["rollback"].append(time.perf_counter() - t)
        t = time.perf_counter()
        scan(root / "projects" / case)
        times["scan"].append(time.perf_counter() - t)
    executor.close()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(settings.staging_dir, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"scoperun change sets: 10,000-file case, run changes 10 files, N={opts.n} each, interleaved "
          f"({platform.node()}, {os.cpu_count()} cpus)")
    for key, label in [("direct", "direct run (listing before + after)"),
                       ("staged", "staged run (overlay + change set + apply)"),
                       ("apply", "apply by hand (journal + 10 files)"),
                       ("rollback", "rollback (10 files)"),
                       ("scan", "one lstat listing of the case")]:
        print(f"  {label:<45} median {med[key] * 1000:8.1f} ms")
    ratio = med["staged"] / med["direct"]
    print(f"  staged / direct: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)  goal < 1.20: {'met' if ratio < 1.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
