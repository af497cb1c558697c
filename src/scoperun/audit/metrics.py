"""Prometheus metrics computed from the audit index on each scrape (extra `metrics`).

The serving process need not be the one running scripts: every scrape catches the index up
with the audit records (at most once per `refresh` seconds), so it sees the runs of every
scoperun process writing to the workspace, and restarts lose nothing.

    scoperun_runs_total{status=...}        runs by status (from the records; a counter as long as
                                           records are not deleted)
    scoperun_run_duration_seconds          histogram of finished runs' total durations
    scoperun_container_start_seconds       histogram of finished runs' container start times
    scoperun_runs_in_progress              runs marked running within timeout + grace

More collectors (engine, disk and audit-verify health: `scoperun.alerts.HealthCollector`) are
added by the layer that owns them through `make_registry(..., extra=[...])`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scoperun.config import Settings
from scoperun.errors import ConfigError

__all__ = ["BUCKETS", "AuditCollector", "make_registry", "serve_metrics"]

BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_TIMED = ("succeeded", "failed", "timed_out", "oom_killed", "error", "cancelled")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("Prometheus metrics need the `metrics` extra: pip install 'scoperun[metrics]'") from None
    return prometheus_client


class AuditCollector:
    """A prometheus-client collector reading the audit index of one workspace."""

    def __init__(self, settings: Settings, *, refresh: float = 5.0) -> None:
        from scoperun.audit.log import AuditLog

        audit = AuditLog.from_settings(settings, Path(settings.workspace).expanduser().resolve())
        assert audit.index is not None
        self.index = audit.index
        self.settings = settings
        self.refresh = refresh
        self._last_reindex = 0.0
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        """No up-front description: metrics are computed at scrape time."""
        return []

    def collect(self) -> Iterator[Any]:
        """Catch the index up (rate-limited), then yield the three metric families."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            if time.monotonic() - self._last_reindex >= self.refresh:
                self.index.reindex()
                self._last_reindex = time.monotonic()
            conn = self.index.connect()
            by_status = conn.execute("SELECT status, COUNT(*) FROM records GROUP BY status").fetchall()
            marks = ", ".join(f"SUM(duration <= {b})" for b in BUCKETS)
            row = conn.execute(
                f"SELECT COUNT(*), TOTAL(duration), {marks} FROM records WHERE duration IS NOT NULL "
                f"AND status IN ({', '.join('?' * len(_TIMED))})", _TIMED).fetchone()
            start_marks = ", ".join(f"SUM(container_start <= {b})" for b in START_BUCKETS)
            start_row = conn.execute(
                f"SELECT COUNT(*), TOTAL(container_start), {start_marks} FROM records WHERE container_start > 0 "
                f"AND status IN ({', '.join('?' * len(_TIMED))})", _TIMED).fetchone()
            now = time.time()
            running = conn.execute("SELECT started, timeout FROM records WHERE status = 'running'").fetchall()
        runs = CounterMetricFamily("scoperun_runs", "Runs recorded in the audit trail, by status.", labels=["status"])
        for status, n in by_status:
            runs.add_metric([status], n)
        yield runs
        count, total, *cumulative = row
        buckets = [(str(b), c or 0) for b, c in zip(BUCKETS, cumulative, strict=True)] + [("+Inf", count)]
        yield HistogramMetricFamily("scoperun_run_duration_seconds", "Total duration of finished runs.",
                                    buckets=buckets, sum_value=total or 0.0)
        count, total, *cumulative = start_row
        buckets = [(str(b), c or 0) for b, c in zip(START_BUCKETS, cumulative, strict=True)] + [("+Inf", count)]
        yield HistogramMetricFamily("scoperun_container_start_seconds", "Container start time of finished runs.",
                                    buckets=buckets, sum_value=total or 0.0)
        fresh = sum(1 for started, timeout in running
                    if started is None or started + (timeout or self.settings.timeout) + self.settings.gc_grace >= now)
        yield GaugeMetricFamily("scoperun_runs_in_progress", "Runs marked running within timeout + grace.",
                                value=fresh)


def make_registry(settings: Settings, *, refresh: float = 5.0, extra: list[Any] | None = None) -> Any:
    """A fresh CollectorRegistry holding scoperun's audit collector (and `extra` collectors)."""
    prometheus_client = _prometheus()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(AuditCollector(settings, refresh=refresh))
    for collector in extra or []:
        registry.register(collector)
    return registry


def serve_metrics(settings: Settings, *, host: str = "127.0.0.1", port: int = 9464, refresh: float = 5.0,
                  ready: Any = None, extra: list[Any] | None = None) -> None:
    """Serve /metrics over HTTP until interrupted; `ready(url)` is called once listening."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    prometheus_client = _prometheus()
    app = prometheus_client.make_wsgi_app(make_registry(settings, refresh=refresh, extra=extra))

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = make_server(host, port, app, handler_class=_Quiet)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
    with server:
        if ready is not None:
            ready(f"http://{host}:{server.server_port}/metrics")
        server.serve_forever()
