"""`scoperun serve`: a run-code through the server vs the raw `docker run --rm` CLI, and requests/s.

Starts `scoperun serve` on a loopback port with a throw-away workspace, then, interleaved N times:
  - `docker run --rm IMAGE python3 -c 'print(1)'` (the CLI a user would otherwise type),
  - `scoperun run-code` with SCOPERUN_URL set (the CLI process talking to the server),
  - `Client.run_code` in this process (one HTTP round trip plus the event stream).
Prints median and p95 of each and their ratios to `docker run`, side by side (goal: run-code via
the server at most 0.5x of docker run). Then sends M small runs from 4 threads at once and
reports requests/s. Medians and ratios only; nothing is asserted.

    .venv/bin/python benchmarks/serve.py [-n 20] [-m 40] [--image scoperun-runner:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from benchcase import bench_workspace

from scoperun import Client, Status
from scoperun.config import Settings
from scoperun.service.tokens import TokenStore

SCOPERUN = str(Path(sys.executable).parent / "scoperun")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="runs of each kind, interleaved")
    parser.add_argument("-m", type=int, default=40, help="small runs for the requests/s figure")
    parser.add_argument("--port", type=int, default=18737)
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    opts = parser.parse_args()

    root, env = bench_workspace(opts.image, "scoperun-bench-serve-")
    token = TokenStore.from_settings(Settings(workspace=root, state_dir=root / ".state")).create("bench", "run")
    url = f"http://127.0.0.1:{opts.port}"
    server = subprocess.Popen([SCOPERUN, "serve", "--port", str(opts.port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        client = Client(url, token)
        cli_env = {**env, "SCOPERUN_URL": url, "SCOPERUN_TOKEN": token}
        docker = ["docker", "run", "--rm", "--network", "none", opts.image, "python3", "-c", "print(1)"]
        run_code = [SCOPERUN, "run-code", "-", "--case", "Bench-Case", "--read-only"]

        def via_cli() -> None:
            proc = subprocess.run(run_code, input="print(1)\n", env=cli_env, capture_output=True, text=True)
            assert proc.returncode == 0 and proc.stdout == "1\n", proc.stderr

        def via_client() -> None:
            result = client.run_code("print(1)\n", case="Bench-Case", read_only=True)
            assert result.status is Status.SUCCEEDED and result.stdout.text == "1\n", result.message

        def via_docker() -> None:
            subprocess.run(docker, check=True, capture_output=True)

        kinds = {"docker run --rm (CLI)": via_docker, "scoperun run-code via serve (CLI)": via_cli,
                 "Client.run_code via serve": via_client}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for fn in kinds.values():
            fn()  # warm up
        for i in range(opts.n):
            order = list(kinds.items())
            for name, fn in order[i % 3:] + order[: i % 3]:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        base = statistics.median(times["docker run --rm (CLI)"])
        print(f"print(1), N={opts.n} each, interleaved; image {opts.image}")
        print(f"{'':36} {'median':>9} {'p95':>9} {'vs docker run':>14}")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"{name:36} {med * 1000:7.0f}ms {p95(values) * 1000:7.0f}ms {med / base:13.2f}x")

        done = [0]
        lock = threading.Lock()

        def worker(count: int) -> None:
            with Client(url, token) as own:
                for _ in range(count):
                    result = own.run_code("print(1)\n", case="Bench-Case", read_only=True)
                    assert result.status is Status.SUCCEEDED, result.message
                    with lock:
                        done[0] += 1

        per = max(1, opts.m // 4)
        threads = [threading.Thread(target=worker, args=(per,)) for _ in range(4)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        print(f"concurrency 4: {done[0]} runs in {elapsed:.1f} s = {done[0] / elapsed:.2f} runs/s "
              f"(server max_concurrent {Settings(workspace=root).max_concurrent})")
        client.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
