"""Statistics over 100,000 audit records: scoperun's SQLite index vs the plan's read-every-file method.

Generates the records (the plan's JSON format, one file each) in a temporary folder, builds the
index once (timed and reported apart: it happens incrementally as runs are written), then times
`compute_stats` through the index and `compute_stats_from_files` (what the plan's
`get_execution_stats` does: read and parse every record) interleaved in one process, checks they
agree, and prints medians and the ratio. Goal: indexed stats under 0.5 s median for 100k records.

    .venv/bin/python benchmarks/stats.py [-n 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from scoperun.audit.index import AuditIndex
from scoperun.audit.stats import compute_stats, compute_stats_from_files
from scoperun.testing import fake_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="records to generate")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions of each method (>= 3)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    opts = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="scoperun-bench-stats-"))
    audit = root / "Database" / "script_executions"
    audit.mkdir(parents=True)
    now = time.time()
    t = time.perf_counter()
    for record in fake_records(opts.n, seed=1, now=now):
        (audit / f"{record['execution_id']}.json").write_text(json.dumps(record, indent=2))
    generated = time.perf_counter() - t

    index = AuditIndex(root / "index.sqlite3", audit)
    t = time.perf_counter()
    built = index.reindex()
    build = time.perf_counter() - t
    t = time.perf_counter()
    catch_up = index.reindex()
    noop_reindex = time.perf_counter() - t

    indexed: list[float] = []
    files: list[float] = []
    for _ in range(max(3, opts.repeat)):
        t = time.perf_counter()
        fast = compute_stats(index, now=now)
        indexed.append(time.perf_counter() - t)
        t = time.perf_counter()
        slow = compute_stats_from_files(audit, now=now)
        files.append(time.perf_counter() - t)
    agree = fast.by_status == slow.by_status and fast.total == slow.total == opts.n and (
        round(fast.duration.p95 or 0, 6) == round(slow.duration.p95 or 0, 6))

    m_fast, m_slow = statistics.median(indexed), statistics.median(files)
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.platform()}")
    print(f"{opts.n} records generated in {generated:.1f} s; index built in {build:.2f} s "
          f"({built.added} added); incremental reindex with nothing new: {noop_reindex:.2f} s "
          f"({catch_up.scanned} files checked)")
    print(f"repetitions: {len(indexed)} each, interleaved; results agree: {agree}")
    print(f"{'method':<34}{'median s':>10}{'min s':>9}{'max s':>9}")
    print(f"{'stats via SQLite index':<34}{m_fast:>10.3f}{min(indexed):>9.3f}{max(indexed):>9.3f}")
    print(f"{'stats reading every file (plan)':<34}{m_slow:>10.3f}{min(files):>9.3f}{max(files):>9.3f}")
    print(f"ratio files/index (median): {m_slow / m_fast:.1f}x  -> goal indexed < 0.5 s: "
          f"{'met' if m_fast < 0.5 else 'NOT met'}")
    if opts.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
