"""print(1) in a container: scoperun (pool on and off, each write mode) against its peers, side by side.

Every path runs the same image and `python3 -c print(1)` equivalent, round-robin in one process
(each round runs every path once, in a rotating order), so load drifts hit all paths alike.
Reports median, p95 and the ratio to scoperun's pooled staged run; then throughput at
concurrency 4: a burst (pools of 4 and as large as the burst; the used containers are ended in the
lull after it) and a sustained stream longer than the pool, timed until all its engine work ended. Peers come from the optional `bench` extra (`pip install -e '.[bench]'`):
epicbox 1.1 (with urllib3's `method_whitelist` renamed `allowed_methods`, a one-line shim) and
llm-sandbox; a missing peer is reported and skipped.

    .venv/bin/python benchmarks/peers.py [-n 20] [--image scoperun-runner:latest] [--burst 24] [--sustained 96]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scoperun import ExecutionRequest, Executor, Settings, Status

CASE = "Bench-Case"


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method)."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def workspace() -> Path:
    """A workspace with one case of 300 small files (change tracking has work to do) and a noop tool."""
    root = Path(tempfile.mkdtemp(prefix="scoperun-peers-"))
    case = root / "projects" / CASE
    for i in range(300):
        folder = case / f"folder-{i % 12}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc-{i}.txt").write_text(f"document {i}\n" * 20)
    (root / "Tools").mkdir()
    (root / "Tools" / "noop.py").write_text("print(1)\n")
    if os.geteuid() == 0:
        for path in [root / "projects", *(root / "projects").rglob("*")]:
            os.chown(path, 1000, 1000)
    return root


def scoperun_path(root: Path, image: str, mode: str, pool: bool, size: int = 2) -> tuple[Callable[[], None], Executor]:
    ex = Executor(Settings(workspace=root, image=image, network="none", write_mode=mode, pool=pool, pool_size=size,
                           state_dir=root.parent / (root.name + "-state"),
                           staging_dir=root.parent / (root.name + "-staging")))
    request = ExecutionRequest(script="Tools/noop.py", case=CASE)

    def run() -> None:
        result = ex.run(request)
        if result.status is not Status.SUCCEEDED or result.stdout.text != "1\n":
            raise RuntimeError(f"scoperun run failed: {result.message}")
        if pool and not result.pooled:
            run.fresh += 1  # type: ignore[attr-defined]

    run.fresh = 0  # type: ignore[attr-defined]
    return run, ex


def epicbox_path(image: str) -> Callable[[], None] | str:
    try:
        import urllib3.util.retry as retry_module

        original = retry_module.Retry.__init__

        def shim(self, *args, method_whitelist=None, **kwargs):  # epicbox 1.1 predates urllib3 2's rename
            if method_whitelist is not None:
                kwargs.setdefault("allowed_methods", method_whitelist)
            original(self, *args, **kwargs)

        retry_module.Retry.__init__ = shim
        import epicbox
    except ImportError as exc:
        return f"epicbox not installed ({exc}); pip install -e '.[bench]'"
    epicbox.configure(profiles=[epicbox.Profile("python", image, user="1000:1000", network_disabled=True)])

    def run() -> None:
        result = epicbox.run("python", "python3 main.py", files=[{"name": "main.py", "content": b"print(1)\n"}],
                             limits={"cputime": 10, "memory": 256})
        if result.get("stdout") != b"1\n":
            raise RuntimeError(f"epicbox failed: {result}")

    return run


def llm_sandbox_path(image: str) -> Callable[[], None] | str:
    try:
        from llm_sandbox import SandboxSession
    except ImportError as exc:
        return f"llm-sandbox not installed ({exc}); pip install -e '.[bench]'"

    def run() -> None:
        # Our image's CMD exits at once; llm-sandbox needs its container to stay up between execs.
        with SandboxSession(lang="python", image=image, keep_template=True, skip_environment_setup=True,
                            verbose=False, runtime_configs={"command": ["sleep", "infinity"]}) as session:
            out = session.run("print(1)")
        if out.stdout.strip() != "1":
            raise RuntimeError(f"llm-sandbox failed: {out}")

    return run


def throughput(candidates: dict[str, Callable[[], None]], executors: list[Executor], runs: int, *,
               wait_for_end: bool = False) -> dict[str, float]:
    """Runs/s of each path, `runs` runs at concurrency 4, background work settled before each path.

    `wait_for_end`: the clock stops only once scoperun's background work (ending used containers,
    replacements) is done too, so none of the stream's engine work is left outside the window.
    """
    rates = {}
    for name, fn in candidates.items():
        for ex in executors:
            ex.settle(300)
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _, fn=fn: fn(), range(runs)))
        if wait_for_end:
            for ex in executors:
                ex.settle(300)
        rates[name] = runs / (time.perf_counter() - t)
        print(f"| {name} | {rates[name]:.2f} |")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="rounds (each path once per round)")
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    parser.add_argument("--burst", type=int, default=24, help="runs in the concurrency-4 throughput test")
    parser.add_argument("--sustained", type=int, default=96,
                        help="runs in the sustained throughput test (pool of 4; 0 = skip)")
    parser.add_argument("--no-settle", action="store_true",
                        help="time each path right after the previous one's background work (removals, the "
                             "pool's replacements) instead of letting it end first")
    opts = parser.parse_args()

    import docker
    import docker.errors

    client = docker.from_env()
    root = workspace()
    paths: dict[str, Callable[[], None]] = {}
    executors = []
    for pool in (True, False):
        for mode in ("staged", "direct", "read-only"):
            run, ex = scoperun_path(root, opts.image, mode, pool)
            paths[f"scoperun {mode}, pool {'on' if pool else 'off'}"] = run
            executors.append(ex)
    for name, made in (("epicbox", epicbox_path(opts.image)), ("llm-sandbox (fresh session)",
                                                               llm_sandbox_path(opts.image))):
        if isinstance(made, str):
            print(f"skipped {name}: {made}", file=sys.stderr)
        else:
            paths[name] = made
    paths["docker-py containers.run"] = lambda: client.containers.run(
        opts.image, ["python3", "-c", "print(1)"], remove=True, network_disabled=True, user="1000:1000")
    paths["docker run --rm (CLI)"] = lambda: subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000", opts.image, "python3", "-c", "print(1)"],
        check=True, capture_output=True)
    floor = client.containers.run(opts.image, ["sleep", "infinity"], detach=True, network_disabled=True,
                                  labels={"org.scoperun.bench": "1"})

    def exec_floor() -> None:
        try:
            floor.exec_run(["python3", "-c", "print(1)"])
        except docker.errors.APIError:  # stopped by something else on a shared engine: start it, go on
            floor.start()
            floor.exec_run(["python3", "-c", "print(1)"])

    paths["docker exec (running container)"] = exec_floor
    paths["host process"] = lambda: subprocess.run([sys.executable, "-c", "print(1)"], check=True, capture_output=True)

    try:
        for fn in paths.values():  # warm-up: connections, page cache, first pool fill
            fn()
        time.sleep(3)
        times: dict[str, list[float]] = {name: [] for name in paths}
        names = list(paths)
        for i in range(opts.n):
            for name in names[i % len(names):] + names[:i % len(names)]:
                t = time.perf_counter()
                paths[name]()
                times[name].append(time.perf_counter() - t)
                if not opts.no_settle:
                    # Untimed: what a path leaves to do in the background (scoperun's container removal
                    # and its pool's replacement, ~0.3 s of engine work) ends before the next path is
                    # timed, so it is not billed to whichever path comes next. Its cost shows in the
                    # throughput test below.
                    for ex in executors:
                        ex.settle(30)
            time.sleep(0.3)  # think time between rounds
        base = statistics.median(times["scoperun staged, pool on"])
        print(f"\nN={opts.n} rounds, load average {os.getloadavg()[0]:.1f} at the end, background work "
              f"{'not ' if opts.no_settle else ''}settled between paths\n")
        print("| path | median ms | p95 ms | ratio to scoperun staged, pool on |")
        print("| --- | ---: | ---: | ---: |")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {name} | {med * 1000:.0f} | {p95(values) * 1000:.0f} | {med / base:.2f} |")
        fresh = {n: getattr(paths[n], "fresh", 0) for n in paths if "pool on" in n}
        print(f"\npooled runs that found no warm container (started fresh): {fresh}")

        print(f"\nthroughput, {opts.burst} runs at concurrency 4 (a burst):\n")
        print("| path | runs/s |")
        print("| --- | ---: |")
        burst = {"scoperun staged, pool of 4": scoperun_path(root, opts.image, "staged", True, 4),
                 **{f"scoperun {mode}, pool of {opts.burst} (the whole burst warm)": scoperun_path(
                     root, opts.image, mode, True, opts.burst) for mode in ("staged", "direct", "read-only")},
                 "scoperun staged, pool off": scoperun_path(root, opts.image, "staged", False)}
        for run, ex in burst.values():
            executors.append(ex)
            run()
            ex.settle(300)  # a full pool before the burst
            run.fresh = 0  # type: ignore[attr-defined]  # count the burst's own runs only
        candidates = {**{n: r for n, (r, _) in burst.items()},
                      **{n: paths[n] for n in ("epicbox", "docker-py containers.run") if n in paths}}
        rates = throughput(candidates, executors, opts.burst)
        print(f"\nruns of the burst that found no warm container: "
              f"{ {n: getattr(r, 'fresh', 0) for n, (r, _) in burst.items() if 'pool off' not in n} }")
        ratio_to = rates.get("docker-py containers.run")
        if ratio_to:
            print("ratios to docker-py: " + ", ".join(f"{n}: {v / ratio_to:.2f}x" for n, v in rates.items()))
        if opts.sustained:
            # A stream longer than any pool: every run's container must be made and ended within the
            # stream, so this is the engine's steady-state rate, not the pool's head start.
            print(f"\nthroughput, {opts.sustained} runs at concurrency 4 (sustained):\n")
            print("| path | runs/s |")
            print("| --- | ---: |")
            stream = {"scoperun staged, pool of 4": burst["scoperun staged, pool of 4"][0],
                      **{n: paths[n] for n in ("epicbox", "docker-py containers.run") if n in paths}}
            throughput(stream, executors, opts.sustained, wait_for_end=True)
    finally:
        floor.remove(force=True)
        for ex in executors:
            ex.close()


if __name__ == "__main__":
    main()
