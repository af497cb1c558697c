"""The `scoperun` command's own start-up and overhead, whole processes timed from outside.

Interleaved N times, medians and p95 side by side (nothing asserted):
  - `scoperun version`, `scoperun --help` with an empty cache (a fresh HOME and XDG_CACHE_HOME: fasthelp
    answers, through a pipe and on a pseudo-terminal in colour), and where fasthelp defers
    (SCOPERUN_HELP_SLOW=1): from the help cache, and with an empty cache (the app is built), next to
    `python -c pass` (the interpreter's own start-up);
  - a local `scoperun run-code` (no server) next to the same run through `Executor.run_code`, in a
    process of its own (`python -c`: imports, one run, exit) and in this already warm process: the
    differences are what the CLI adds on top of `Executor.run` (goal: under 0.15 s).
`benchmarks/serve.py` measures `scoperun run-code` through a server.

    .venv/bin/python benchmarks/cli.py [-n 20] [--image scoperun-runner:latest]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from benchcase import bench_workspace

SCOPERUN = str(Path(sys.executable).parent / "scoperun")
IN_PROCESS = """\
import sys
from scoperun import Executor, load_settings
executor = Executor(load_settings().model_copy(update={"pool": False}))
try:
    result = executor.run_code(sys.stdin.read(), case="Bench-Case", script_name="script.py", requested_by="cli")
finally:
    executor.close()
sys.stdout.write(result.stdout.text)
sys.exit(0 if result.status.value == "succeeded" else 1)
"""


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed_on_terminal(argv: list[str], env: dict[str, str], columns: int = 100) -> float:
    """A whole process with stdout on a pseudo-terminal `columns` wide (colour), read to its end."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child, stderr=subprocess.DEVNULL, env=env)
    os.close(child)
    size = 0
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed with the child
            break
        if not chunk:
            break
        size += len(chunk)
    code = proc.wait()
    elapsed = time.perf_counter() - t
    os.close(main)
    if code != 0 or not size:
        raise SystemExit(f"{argv} failed ({code}) on a terminal")
    return elapsed


def timed(argv: list[str], env: dict[str, str], stdin: str = "") -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return elapsed


def table(title: str, times: dict[str, list[float]], base: str) -> None:
    ref = statistics.median(times[base])
    print(f"\n{title}")
    print(f"{'':46} {'median':>9} {'p95':>9} {'vs ' + base[:20]:>24}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:50} {med * 1000:7.0f}ms {p95(values) * 1000:7.0f}ms {med / ref:23.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="runs of each kind, interleaved")
    parser.add_argument("--image", default=os.environ.get("SCOPERUN_IMAGE", "scoperun-runner:latest"))
    opts = parser.parse_args()

    root, env = bench_workspace(opts.image, "scoperun-bench-cli-")
    cache = root / ".cache"
    slow = {**env, "SCOPERUN_HELP_SLOW": "1"}  # fasthelp defers: the help cache, or the app builds the help
    cached_env = {**slow, "XDG_CACHE_HOME": str(cache)}

    def empty(base: dict[str, str]) -> dict[str, str]:
        """A fresh HOME and XDG_CACHE_HOME: nothing cached (first call after install, a new user)."""
        home = tempfile.mkdtemp(dir=root)
        return {**base, "HOME": home, "XDG_CACHE_HOME": str(Path(home) / ".cache")}

    start_up = {
        "python -c pass": lambda: timed([sys.executable, "-c", "pass"], env),
        "scoperun version": lambda: timed([SCOPERUN, "version"], env),
        "scoperun --help (empty cache: fasthelp)": lambda: timed([SCOPERUN, "--help"], empty(env)),
        "scoperun --help on a terminal (empty cache)": lambda: timed_on_terminal([SCOPERUN, "--help"], empty(env)),
        "scoperun --help, fasthelp off (cached)": lambda: timed([SCOPERUN, "--help"], cached_env),
        "scoperun --help, fasthelp off (empty: builds app)": lambda: timed([SCOPERUN, "--help"], empty(slow)),
    }
    from scoperun import Executor, load_settings

    os.environ.update({k: v for k, v in env.items() if k.startswith("SCOPERUN_")})
    warm = Executor(load_settings().model_copy(update={"pool": False}))

    def in_this_process() -> float:
        t = time.perf_counter()
        result = warm.run_code("print(1)\n", case="Bench-Case", script_name="script.py", requested_by="cli")
        elapsed = time.perf_counter() - t
        if result.status.value != "succeeded":
            raise SystemExit(f"in-process run failed: {result.message}")
        return elapsed

    runs = {
        "Executor.run_code in this (warm) process": in_this_process,
        "Executor.run_code in its own process": lambda: timed([sys.executable, "-c", IN_PROCESS], env, "print(1)\n"),
        "scoperun run-code (local, no server)": lambda: timed([SCOPERUN, "run-code", "-", "--case", "Bench-Case"],
                                                              env, "print(1)\n"),
    }
    for group in (start_up, runs):
        for fn in group.values():
            fn()  # warm up (the help cache, the page cache, the image)
        times: dict[str, list[float]] = {k: [] for k in group}
        for i in range(opts.n):
            order = list(group.items())
            for name, fn in order[i % len(order):] + order[: i % len(order)]:
                times[name].append(fn())
        if group is start_up:
            table(f"start-up, N={opts.n} each, interleaved", times, "python -c pass")
        else:
            table(f"print(1) on a local engine, image {opts.image}, N={opts.n} each, interleaved", times,
                  "Executor.run_code in its own process")
            added = statistics.median(times["scoperun run-code (local, no server)"]) - statistics.median(
                times["Executor.run_code in its own process"])
            whole = statistics.median(times["scoperun run-code (local, no server)"]) - statistics.median(
                times["Executor.run_code in this (warm) process"])
            print(f"the CLI adds {added * 1000:.0f} ms (median against median) to a process that imports scoperun "
                  f"and runs Executor.run_code; {whole * 1000:.0f} ms to Executor.run_code in a warm process "
                  f"(the interpreter's start-up and every import included)")
    warm.close()


if __name__ == "__main__":
    main()
