"""The second run on a case without slots (no root): pre-started container vs fresh (and slots as root), side by side.

An agent's runs on one case through `run_code` (its script copied into the pre-started container,
or bound into a fresh one), print(1), network none, on a case of 300 files. Round-robin in one
process: each round times one run through an executor whose pool takes the non-root path
(`pool_slots = false`, so it also works as root) and one through an executor with the pool off, in
direct and read-only modes (as root, also one through the slot pool); background work (the next container, removals) is settled between.

    .venv/bin/python benchmarks/prestart.py [--rounds 20] [--image scoperun-runner:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from peers import CASE, p95, workspace  # type: ignore[import-not-found]

from scoperun import Executor, Settings, Status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    opts = parser.parse_args()
    root = workspace()
    paths: dict[str, tuple[Executor, str]] = {}
    kinds = {"pre-started": (True, False), "fresh (pool off)": (False, False)}
    if os.geteuid() == 0:  # the root controller's slot pool, for comparison
        kinds["slots (root)"] = (True, True)
    for mode in ("direct", "read-only"):
        for kind, (pool, slots) in kinds.items():
            name = f"{mode}, {kind}"
            paths[name] = (Executor(Settings(
                workspace=root, image=opts.image, network="none", write_mode=mode, pool=pool, pool_size=2,
                pool_slots=slots, state_dir=root.parent / (root.name + "-state"),
                staging_dir=root.parent / (root.name + "-staging"))), mode)
    times: dict[str, list[float]] = {name: [] for name in paths}
    starts: dict[str, list[float]] = {name: [] for name in paths}
    pooled: dict[str, int] = dict.fromkeys(paths, 0)
    try:
        for ex, _ in paths.values():  # the first run on the case: fresh everywhere
            ex.run_code("print(1)", case=CASE)
            ex.settle(120)
        for _ in range(opts.rounds):
            for name, (ex, _) in paths.items():
                t = time.perf_counter()
                result = ex.run_code("print(1)", case=CASE)
                times[name].append(time.perf_counter() - t)
                if result.status is not Status.SUCCEEDED or result.stdout.text != "1\n":
                    raise RuntimeError(f"{name}: {result.message}")
                starts[name].append(result.durations.container_start)
                pooled[name] += bool(result.pooled)
                ex.settle(120)
    finally:
        for ex, _ in paths.values():
            ex.close()
    load = os.getloadavg()
    print(f"{opts.rounds} rounds, print(1) via run_code, case of 300 files, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)\n")
    print("| path | median ms | p95 ms | container start median ms | pooled runs | ratio to fresh |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        fresh = statistics.median(times[name.split(",")[0] + ", fresh (pool off)"])
        print(f"| {name} | {statistics.median(values) * 1000:.0f} | {p95(values) * 1000:.0f} | "
              f"{statistics.median(starts[name]) * 1000:.0f} | {pooled[name]}/{len(values)} | "
              f"{statistics.median(values) / fresh:.2f} |")


if __name__ == "__main__":
    main()
