"""The swarm backend on a local two-node swarm: one-run latency and 40 runs at concurrency 8.

Starts a real two-node swarm of private engines (scoperun.engine.localswarm; root needed; never
touches the machine's main engine beyond reading the runner image), then measures, side by side:

- latency of one trivial run (`print(1)`), interleaved: the docker backend on the main engine,
  the swarm backend pinned to one node, the swarm backend on two nodes;
- throughput of 40 runs at concurrency 8 on one node vs two nodes (and the docker backend).

On ONE machine both nodes share the same cores: the figures show the swarm's overhead (service
create, scheduling, task start, `service logs`), not a speed-up. Added machines add cores.

    sudo .venv/bin/python benchmarks/swarm.py [-n 10] [--runs 40] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scoperun import ExecutionRequest, Executor, Settings, Status
from scoperun.engine.localswarm import local_swarm
from scoperun.engine.swarm import SwarmBackend

ONE_NODE_LABEL = "scoperun.bench-one"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="scoperun-bench-swarm-"))
    case = root / "projects" / "Bench-Case"
    case.mkdir(parents=True)
    (root / "Tools").mkdir()
    (root / "Tools" / "noop.py").write_text("print(1)\n")
    (root / "Database" / "script_executions").mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(case, 1000, 1000)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10, help="latency runs of each configuration")
    parser.add_argument("--runs", type=int, default=40, help="runs in the throughput test")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    opts = parser.parse_args()

    root = workspace()
    request = ExecutionRequest(script="Tools/noop.py", case="Bench-Case", write_mode="direct")
    base = {"workspace": root, "image": opts.image, "network": "none", "max_concurrent": opts.concurrency}
    t = time.perf_counter()
    with local_swarm(images=(opts.image,), prefix="scoperun-bench") as swarm:
        print(f"local two-node swarm up in {time.perf_counter() - t:.1f} s (image copied to both nodes)")
        swarm.manager.docker("node", "update", "--label-add", f"{ONE_NODE_LABEL}=true", swarm.manager.node_id)
        swarm_settings = Settings(**base, backend="swarm", docker_host=swarm.manager.host)
        executors = {
            "docker (main engine)": Executor(Settings(**base)),
            "swarm, 1 node": Executor(swarm_settings, backend=SwarmBackend(swarm.manager.host, node_label=ONE_NODE_LABEL)),
            "swarm, 2 nodes": Executor(swarm_settings),
        }
        for ex in executors.values():  # warm: connections, page cache
            assert ex.run(request).status is Status.SUCCEEDED

        latency: dict[str, list[float]] = {name: [] for name in executors}
        names = list(executors)
        for i in range(opts.n):
            for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order
                t = time.perf_counter()
                result = executors[name].run(request)
                latency[name].append(time.perf_counter() - t)
                assert result.status is Status.SUCCEEDED, result.message

        throughput: dict[str, tuple[float, set[str | None]]] = {}
        for name, ex in executors.items():
            with ThreadPoolExecutor(opts.concurrency) as pool:
                t = time.perf_counter()
                results = list(pool.map(lambda _i, ex=ex: ex.run(request), range(opts.runs)))
                wall = time.perf_counter() - t
            assert all(r.status is Status.SUCCEEDED for r in results), [r.message for r in results]
            throughput[name] = (wall, {r.node for r in results})
        for ex in executors.values():
            ex.close()

    ref = statistics.median(latency["docker (main engine)"])
    print(f"\none run of print(1), N={opts.n} each, interleaved (seconds)")
    print(f"{'backend':<22}{'median':>9}{'p95':>9}{'x docker':>10}")
    for name, values in latency.items():
        med = statistics.median(values)
        print(f"{name:<22}{med:>9.3f}{p95(values):>9.3f}{med / ref:>10.2f}")
    ref_wall = throughput["docker (main engine)"][0]
    print(f"\n{opts.runs} runs at concurrency {opts.concurrency}")
    print(f"{'backend':<22}{'wall s':>9}{'runs/s':>9}{'x docker':>10}  nodes used")
    for name, (wall, nodes) in throughput.items():
        used = len({n for n in nodes if n}) or "-"
        print(f"{name:<22}{wall:>9.2f}{opts.runs / wall:>9.2f}{wall / ref_wall:>10.2f}  {used}")
    print(f"\nOne machine, {os.cpu_count()} cores shared by every node: these figures are the swarm's overhead, "
          f"not a speed-up. Each node added on its own machine adds its cores.")


if __name__ == "__main__":
    main()
