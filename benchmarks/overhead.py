"""End-to-end latency of a trivial script: scoperun's Executor.run vs the raw `docker run --rm` CLI.

Both run the same image and command (`python /workspace/Tools/noop.py`), interleaved, N times in
one process; prints median and p95 of each and their ratio. Goal: scoperun's median at or below
the CLI's, with scoping, hardening and two audit writes included.

    .venv/bin/python benchmarks/overhead.py [-n 30] [--image scoperun-runner:latest]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from scoperun import ExecutionRequest, Executor, Settings, Status


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="runs of each (>= 20)")
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    parser.add_argument("--write-mode", default="staged", choices=["staged", "direct", "read-only"],
                        help="how scoperun mounts the case (default: staged, the default of runs)")
    opts = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="scoperun-bench-"))
    case = root / "projects" / "Bench-Case"
    case.mkdir(parents=True)
    (root / "Tools").mkdir()
    (root / "Tools" / "noop.py").write_text("print(1)\n")
    os.chown(case, 1000, 1000) if os.geteuid() == 0 else None

    executor = Executor(Settings(workspace=root, image=opts.image, network="none", write_mode=opts.write_mode))
    request = ExecutionRequest(script="Tools/noop.py", case="Bench-Case")
    cli = ["docker", "run", "--rm", "--network", "none", "-v", f"{root / 'Tools'}:/workspace/Tools:ro",
           opts.image, "python", "/workspace/Tools/noop.py"]

    # Warm both paths (client connection, page cache) before measuring.
    executor.run(request)
    subprocess.run(cli, check=True, capture_output=True)

    ours: list[float] = []
    raw: list[float] = []
    for i in range(opts.n):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            if which == 0:
                result = executor.run(request)
                ours.append(time.perf_counter() - t)
                assert result.status is Status.SUCCEEDED and result.stdout.text == "1\n", result.message
            else:
                proc = subprocess.run(cli, capture_output=True, text=True)
                raw.append(time.perf_counter() - t)
                assert proc.returncode == 0 and proc.stdout == "1\n", proc.stderr
    executor.close()

    m_ours, m_raw = statistics.median(ours), statistics.median(raw)
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.platform()}")
    print(f"N={opts.n} each, interleaved; image {opts.image}; scoperun write mode {opts.write_mode}")
    print(f"{'path':<28}{'median ms':>11}{'p95 ms':>10}")
    print(f"{'scoperun Executor.run':<28}{m_ours * 1000:>11.0f}{p95(ours) * 1000:>10.0f}")
    print(f"{'docker run --rm (CLI)':<28}{m_raw * 1000:>11.0f}{p95(raw) * 1000:>10.0f}")
    print(f"ratio scoperun/CLI (median): {m_ours / m_raw:.2f}  -> goal <= 1.00: {'met' if m_ours <= m_raw else 'NOT met'}")


if __name__ == "__main__":
    main()
