"""Where scoperun's own milliseconds go in a warm pooled run of print(1) on a case of 300 files.

One executor per write mode (pool on), warmed and settled; then N rounds, round-robin over the
modes, each run timed whole and by stage (context, prepare, begin, start, wait, finish) with
`ex.settle()` between runs so no run is timed with another's clean-up. "own" is the run minus
the container part (start + wait). `--profile MODE` also prints a cProfile of that mode's runs,
`--detail` the steps inside the stages.

`--compare SRC` times two versions side by side under the same load: this checkout and the
scoperun package in folder SRC (e.g. an older commit's `src`, from `git archive <commit> src`),
each in its own process, taking turns run by run (order alternating), with epicbox in the
rounds too (`--epicbox`) for the ratio the goal is stated in.

    .venv/bin/python benchmarks/hostwork.py [-n 20] [--profile direct] [--detail] [--image scoperun-runner:latest]
    .venv/bin/python benchmarks/hostwork.py --compare /tmp/base/src [-n 20] [--epicbox | --fake]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from peers import CASE, workspace  # noqa: E402

from scoperun import ExecutionRequest, Executor, Settings, Status, pipeline  # noqa: E402
from scoperun.pipeline import context  # noqa: E402

STAGES = ("prepare", "begin", "start", "wait", "finish")
spans: dict[str, float] = {}


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spans[name] = spans.get(name, 0.0) + time.perf_counter() - t
    return wrapper


def detail() -> None:
    """Time the steps inside the stages too (helper threads' spans overlap the caller's)."""
    import importlib

    targets = {
        "scoperun.changes.tracker": ["scan", "read_upper", "save_state", "remove_tree", "diff_listings"],
        "scoperun.changes.tracker._Direct": ["start", "finish"],
        "scoperun.changes.tracker._Staged": ["start", "finish", "_wait_unmounted", "__post_init__"],
        "scoperun.changes.safefs.CaseRoot": ["__init__"],
        "scoperun.pipeline.endings": ["_scan_hazards", "_keep_outputs", "_settle_changes"],
        "scoperun.pipeline.records": ["write_record"],
        "scoperun.pipeline.running": ["write_record"],
        "scoperun.audit.log.AuditLog": ["write", "_atomic"],
        "scoperun.audit.index.AuditIndex": ["upsert"],
        "scoperun.ops": ["read_stop_marker"],
        "scoperun.changes.overlay.StagingArea": ["create"],
    }
    for where, names in targets.items():
        try:
            owner: Any = importlib.import_module(where)
            label = ""
        except ImportError:
            mod_name, _, cls_name = where.rpartition(".")
            owner, label = getattr(importlib.import_module(mod_name), cls_name), cls_name + "."
        for name in names:
            raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            span = label + name if label else f"{name}@{where.rsplit('.', 1)[-1]}"
            if isinstance(raw, classmethod):
                setattr(owner, name, classmethod(timed(span, raw.__func__)))
            else:
                setattr(owner, name, timed(span, raw))


def cleanup(root: Path) -> None:
    """Remove the benchmark's workspace, state and staging folders (never a folder holding a mount)."""
    from scoperun.fswalk import remove_tree
    from scoperun.mounts import mount_points_under

    for folder in (root, root.parent / (root.name + "-state"), root.parent / (root.name + "-staging")):
        if folder.exists() and not mount_points_under(folder):
            remove_tree(folder, ignore_errors=True)


def serve(opts: argparse.Namespace) -> None:
    """Child of `--compare`: warm executors, then time one run per line read ("MODE"), settled before and after."""
    import json

    root = workspace()
    modes = opts.modes.split(",")
    backend = None
    if opts.fake:  # no container at all: what is left is scoperun's own work
        from scoperun.testing import FakeBackend, FakeRun

        backend = FakeBackend(script=lambda spec: FakeRun(stdout=b"1\n"))
    executors = {mode: Executor(Settings(workspace=root, image=opts.image, network="none", write_mode=mode, pool=True,
                                         pool_size=2, state_dir=root.parent / (root.name + "-state"),
                                         staging_dir=root.parent / (root.name + "-staging")), backend=backend)
                 for mode in modes}
    request = ExecutionRequest(script="Tools/noop.py", case=CASE)
    for ex in executors.values():
        for _ in range(2):
            ex.run(request)
            ex.settle(120)
    print(json.dumps({"ready": os.path.dirname(sys.modules["scoperun"].__file__)}), flush=True)
    for line in sys.stdin:
        mode = line.strip()
        ex = executors[mode]
        ex.settle(120)
        spans.clear()
        t = time.perf_counter()
        result = ex.run(request)
        elapsed = time.perf_counter() - t
        ex.settle(120)  # its background work must not overlap the other side's run
        ok = result.status is Status.SUCCEEDED and result.stdout.text == "1\n"
        own = elapsed - spans.get("start", 0) - spans.get("wait", 0)
        print(json.dumps({"ms": elapsed * 1000, "own": own * 1000, "ok": ok, "pooled": bool(result.pooled or opts.fake),
                          "message": result.message}), flush=True)
    for ex in executors.values():
        ex.close()
    cleanup(root)


def compare(opts: argparse.Namespace) -> None:
    """Time this checkout against the scoperun in `opts.compare`, run by run, under the same load."""
    import json
    import subprocess

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    sides = {"before": os.path.abspath(opts.compare), "after": here}
    procs = {}
    for name, src in sides.items():
        env = {**os.environ, "PYTHONPATH": src}
        argv = [sys.executable, __file__, "--serve", "--modes", opts.modes, "--image", opts.image]
        procs[name] = subprocess.Popen(argv + (["--fake"] if opts.fake else []),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for name, proc in procs.items():
        assert proc.stdout is not None
        print(f"{name}: scoperun from {json.loads(proc.stdout.readline())['ready']}")
    epicbox: Callable[[], None] | None = None
    if opts.epicbox:
        from peers import epicbox_path

        made = epicbox_path(opts.image)
        epicbox = None if isinstance(made, str) else made
        if epicbox is not None:
            epicbox()
    modes = opts.modes.split(",")
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    owns: dict[tuple[str, str], list[float]] = defaultdict(list)
    loads = []
    for i in range(opts.n):
        for mode in modes:
            for name in (("before", "after") if (i + modes.index(mode)) % 2 == 0 else ("after", "before")):
                proc = procs[name]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(mode + "\n")
                proc.stdin.flush()
                answer = json.loads(proc.stdout.readline())
                if not answer["ok"] or not answer["pooled"]:
                    raise RuntimeError(f"{name} {mode}: pooled={answer['pooled']} {answer['message']}")
                times[name, mode].append(answer["ms"])
                owns[name, mode].append(answer["own"])
        if epicbox is not None:
            t = time.perf_counter()
            epicbox()
            times["epicbox", ""].append((time.perf_counter() - t) * 1000)
        loads.append(os.getloadavg()[0])
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    med = statistics.median
    print(f"N={opts.n} per side and mode, {'no engine (fake backend)' if opts.fake else 'pool on'}, alternating run "
          f"by run; 1-min load average over the rounds: "
          f"median {med(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f})")
    base = med(times["epicbox", ""]) if times.get(("epicbox", "")) else None
    print(f"{'mode':<10}{'before ms':>10}{'after ms':>10}{'own before':>11}{'own after':>10}"
          + (f"{'before/epicbox':>16}{'after/epicbox':>15}" if base else ""))
    for mode in modes:
        b, a = med(times["before", mode]), med(times["after", mode])
        row = (f"{mode:<10}{b:>10.1f}{a:>10.1f}{med(owns['before', mode]):>11.1f}{med(owns['after', mode]):>10.1f}")
        if base:
            row += f"{b / base:>16.3f}{a / base:>15.3f}"
        print(row)
    if base:
        print(f"epicbox median {base:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    parser.add_argument("--modes", default="staged,direct,read-only")
    parser.add_argument("--profile", default=None, help="a write mode to cProfile")
    parser.add_argument("--detail", action="store_true", help="also time the steps inside the stages")
    parser.add_argument("--compare", metavar="SRC", help="time against the scoperun package in folder SRC")
    parser.add_argument("--epicbox", action="store_true", help="with --compare: epicbox in every round")
    parser.add_argument("--fake", action="store_true",
                        help="with --compare: no engine (scoperun.testing.FakeBackend), only scoperun's own work")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.compare:
        compare(opts)
        return

    for stage in STAGES:
        setattr(pipeline, stage, timed(stage, getattr(pipeline, stage)))
    open_ = context.RunContext.open.__func__  # type: ignore[attr-defined]
    context.RunContext.open = classmethod(timed("context", open_))  # type: ignore[method-assign]

    if opts.detail:
        detail()
    if opts.serve:
        serve(opts)
        return
    root = workspace()
    modes = opts.modes.split(",")
    executors = {}
    backend = None
    if opts.fake:
        from scoperun.testing import FakeBackend, FakeRun

        backend = FakeBackend(script=lambda spec: FakeRun(stdout=b"1\n"))
    for mode in modes:
        executors[mode] = Executor(Settings(workspace=root, image=opts.image, network="none", write_mode=mode,
                                            pool=True, pool_size=2, state_dir=root.parent / (root.name + "-state"),
                                            staging_dir=root.parent / (root.name + "-staging")), backend=backend)
    request = ExecutionRequest(script="Tools/noop.py", case=CASE)
    for ex in executors.values():
        for _ in range(2):
            ex.run(request)
            ex.settle(120)
    totals: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    profiler = cProfile.Profile()
    fresh = 0
    for i in range(opts.n):
        for k in range(len(modes)):
            mode = modes[(i + k) % len(modes)]
            ex = executors[mode]
            ex.settle(120)
            spans.clear()
            prof = opts.profile == mode
            if prof:
                profiler.enable()
            t = time.perf_counter()
            result = ex.run(request)
            elapsed = time.perf_counter() - t
            if prof:
                profiler.disable()
            if result.status is not Status.SUCCEEDED or result.stdout.text != "1\n":
                raise RuntimeError(f"{mode}: {result.message}")
            fresh += not (result.pooled or opts.fake)
            totals[mode].append(elapsed)
            for name, value in spans.items():
                stages[mode][name].append(value)
            stages[mode]["own"].append(elapsed - spans.get("start", 0) - spans.get("wait", 0))
    for ex in executors.values():
        ex.close()
    cleanup(root)
    print(f"N={opts.n} per mode, pool on, round-robin; load average {os.getloadavg()}; fresh (unpooled) runs: {fresh}")
    cols = ("context", *STAGES, "own")
    print(f"{'mode':<10}{'run ms':>8}" + "".join(f"{c:>9}" for c in cols))

    for mode in modes:
        med = {c: statistics.median(v) * 1000 for c, v in stages[mode].items()}
        print(f"{mode:<10}{statistics.median(totals[mode]) * 1000:>8.1f}"
              + "".join(f"{med.get(c, 0.0):>9.1f}" for c in cols))
    if opts.detail:
        cols = tuple(sorted({c for m in modes for c in stages[m]} - set(cols)))
        for mode in modes:
            med = {c: statistics.median(v + [0.0] * (opts.n - len(v))) * 1000 for c, v in stages[mode].items()}
            print(f"{mode}: " + ", ".join(f"{c} {med[c]:.1f}" for c in cols if c in med))
    if opts.profile:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(int(os.environ.get("LINES", "45")))


if __name__ == "__main__":
    main()
