"""Where the engine's time goes in a burst served by the warm pool, against docker-py's containers.run.

Each pooled run consumes a container: its replacement (create + attach + start) and the end of the
used one are engine work the pool cannot avoid without reusing containers, which it never does.
Both wait for a lull (no run in flight) so they do not take the cores from runs. This times them
(medians) for a burst at concurrency 4 through a read-only executor with a pool of 4, until all the
burst's background work is done, then the same burst through docker-py `containers.run` (create,
start, wait, remove per run).

    .venv/bin/python benchmarks/pool_engine.py [--burst 24] [--image scoperun-runner:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from peers import CASE, workspace  # type: ignore[import-not-found]

import scoperun.engine.docker as engine_docker
import scoperun.engine.pool as engine_pool
from scoperun import ExecutionRequest, Executor, Settings

TIMES: dict[str, list[float]] = {}


def timed(owner: Any, name: str) -> None:
    """Record the duration of every call of `owner.name` (any thread) in TIMES[name]."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES.setdefault(name, []).append(time.perf_counter() - t)

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=24)
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    opts = parser.parse_args()
    timed(engine_pool.WarmPool, "_create")
    timed(engine_docker.DockerBackend, "_remove")
    timed(engine_docker.DockerBackend, "_confirm_removed")
    root = workspace()
    ex = Executor(Settings(workspace=root, image=opts.image, network="none", write_mode="read-only", pool=True,
                           pool_size=4, state_dir=root.parent / (root.name + "-state"),
                           staging_dir=root.parent / (root.name + "-staging")))
    request = ExecutionRequest(script="Tools/noop.py", case=CASE)
    client = docker.from_env()
    try:
        ex.run(request)
        ex.settle(120)
        TIMES.clear()
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as threads:
            pooled = list(threads.map(lambda _: ex.run(request).pooled, range(opts.burst)))
        rate = opts.burst / (time.perf_counter() - t)
        ex.settle(120)
        whole = opts.burst / (time.perf_counter() - t)
        print(f"pool of 4, {opts.burst} runs at concurrency 4: {rate:.2f} runs/s, {sum(pooled)} served warm; "
              f"{whole:.2f} runs/s counting the background work done after the burst")
        for name, what in (("_create", "replacement create + attach + start"),
                           ("_confirm_removed", "end of a batch of used ones (their launchers exit, then gone)"),
                           ("_remove", "forced removal (fresh runs)")):
            values = TIMES.get(name, [])
            if values:
                print(f"  {what}: {len(values)} times, median {statistics.median(values) * 1000:.0f} ms")
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as threads:
            list(threads.map(lambda _: client.containers.run(opts.image, ["python3", "-c", "print(1)"], remove=True,
                                                             network_disabled=True, user="1000:1000"),
                             range(opts.burst)))
        print(f"docker-py containers.run, same burst: {opts.burst / (time.perf_counter() - t):.2f} runs/s")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        ex.close()


if __name__ == "__main__":
    main()
