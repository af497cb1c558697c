"""The page with 100,000 audit records (the index of benchmarks/stats.py): overview and runs table.

Generates the records (one JSON file each, spread over 30 days) in a temporary folder, builds the
index, starts the page on uvicorn on loopback, logs in, and times full HTTP requests (server-side
queries, templates and transfer) for the overview (24 h and 30 d windows), the runs table (first
page, a filtered page, a deep page, an id search) and a run's detail page. Reports medians and p95
per request and the ratio to the 300 ms goal; measured, never asserted.

    .venv/bin/python benchmarks/page.py [-n 100000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from scoperun.audit.index import AuditIndex
from scoperun.config import Settings
from scoperun.testing import fake_records

GOAL = 0.300


def main() -> None:
    import httpx
    import uvicorn

    from scoperun.audit.state import index_path
    from scoperun.service.page.app import PageContext, create_page_app
    from scoperun.service.page.session import StaticTokens

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="records to generate")
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page (>= 5)")
    opts = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="scoperun-bench-page-"))
    try:
        workspace = root / "ws"
        audit = workspace / "Database" / "script_executions"
        audit.mkdir(parents=True)
        now = time.time()
        records = fake_records(opts.n, seed=1, now=now)
        for record in records:
            (audit / f"{record['execution_id']}.json").write_text(json.dumps(record))
        settings = Settings(workspace=workspace, state_dir=root / "state", alert_verify=False)
        t = time.perf_counter()
        AuditIndex(index_path(settings, audit.resolve()), audit.resolve()).reindex()
        print(f"{opts.n} records indexed in {time.perf_counter() - t:.1f} s")

        tokens = StaticTokens({"bench": ("bench", "read")})
        # Every overview computed afresh: what the first viewer of a window waits for (the page
        # caches a window's figures for max(5 s, 5x their cost) for the viewers after).
        app = create_page_app(PageContext(settings=settings, lookup=tokens.by_hash, overview_cache=False))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        some_id = records[len(records) // 2]["execution_id"]
        pages = {
            "overview 24h": "/",
            "overview 30d": "/?window=30d",
            "overview live fragment": "/?fragment=1",
            "runs table, page 1": "/runs",
            "runs table, failed in 7d": "/runs?status=failed&since=7d",
            "runs table, page 1000": "/runs?page=1000",
            "runs table, id search": f"/runs?q={some_id[:-3]}",
            "run detail": f"/runs/{some_id}",
        }
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/login", data={"token": "bench", "next": "/"})
            for path in pages.values():  # warm: first query plans, template compilation
                assert client.get(path).status_code == 200, path
            times: dict[str, list[float]] = {name: [] for name in pages}
            for _ in range(max(5, opts.repeat)):
                for name, path in pages.items():  # interleaved
                    t = time.perf_counter()
                    response = client.get(path)
                    times[name].append(time.perf_counter() - t)
                    assert response.status_code == 200
        server.should_exit = True
        thread.join(timeout=30)
        print(f"\nscoperun page, {opts.n} records, {max(5, opts.repeat)} requests each, "
              f"{platform.node()} ({platform.processor() or platform.machine()}), Python {platform.python_version()}")
        print(f"{'request':<28} {'median ms':>10} {'p95 ms':>8} {'median / 300 ms goal':>22}")
        for name, samples in times.items():
            samples.sort()
            median = statistics.median(samples)
            p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))]
            print(f"{name:<28} {median * 1000:>10.1f} {p95 * 1000:>8.1f} {median / GOAL:>22.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
