"""The server's alert loop and the Prometheus gauges deploy/alerts.yml reads beside the audit metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from scoperun.alerts.deliver import AlertReport, evaluate_alerts
from scoperun.alerts.rules import Measurements, measure
from scoperun.config import Settings

__all__ = ["VERIFY_EVERY", "AlertLoop", "HealthCollector"]

log = logging.getLogger(__name__)
VERIFY_EVERY = 10  # the server verifies the audit trail every 10th evaluation (it reads every record)


class AlertLoop:
    """Evaluates the alerts every `alert_interval` seconds in a daemon thread (the server's)."""

    def __init__(self, settings: Settings, *, external_url: str = "") -> None:
        self.settings = settings
        self.external_url = external_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: AlertReport | None = None

    def start(self) -> None:
        """Start evaluating (the first evaluation happens at once)."""
        self._thread = threading.Thread(target=self._loop, name="scoperun-alerts", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            try:
                self.last = evaluate_alerts(self.settings, measurements=self._measure(rounds),
                                            external_url=self.external_url)
            except Exception:  # one failed evaluation must not end the loop
                log.exception("alert evaluation failed")
            rounds += 1
            self._stop.wait(self.settings.alert_interval)

    def _measure(self, rounds: int) -> Measurements:
        # Verifying reads every record: do it every VERIFY_EVERY rounds and carry the verdict between.
        fresh = rounds % VERIFY_EVERY == 0 or self.last is None
        m = measure(self.settings, verify=self.settings.alert_verify and fresh)
        if not fresh and self.last is not None:
            m.verify_ok, m.verify_detail = self.last.measurements.verify_ok, self.last.measurements.verify_detail
        return m

    def stop(self) -> None:
        """Stop after the current evaluation."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class HealthCollector:
    """Prometheus gauges of what the audit index cannot tell: engine, disk, audit verify, hazards.

    Measured at most every `refresh` seconds (verify every VERIFY_EVERY-th time), so scrapes stay
    cheap; deploy/alerts.yml's rules read these gauges.
    """

    def __init__(self, settings: Settings, *, refresh: float = 30.0) -> None:
        self.settings = settings
        self.refresh = refresh
        self._last: Measurements | None = None
        self._rounds = 0
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        """No up-front description: gauges are measured at scrape time."""
        return []

    def _measurements(self) -> Measurements:
        with self._lock:
            if self._last is None or time.time() - self._last.at >= self.refresh:
                fresh = self._rounds % VERIFY_EVERY == 0
                m = measure(self.settings, verify=self.settings.alert_verify and fresh)
                if not fresh and self._last is not None:
                    m.verify_ok, m.verify_detail = self._last.verify_ok, self._last.verify_detail
                self._last, self._rounds = m, self._rounds + 1
            return self._last

    def collect(self) -> Iterator[Any]:
        """Yield the health gauges."""
        from prometheus_client.core import GaugeMetricFamily

        m = self._measurements()
        if m.engine_up is not None:
            yield GaugeMetricFamily("scoperun_engine_up", "1 when the Docker engine answers a ping.",
                                    value=1 if m.engine_up else 0)
        if m.verify_ok is not None:
            yield GaugeMetricFamily("scoperun_audit_verify_ok",
                                    "1 when `scoperun audit verify` finds no failing problem.",
                                    value=1 if m.verify_ok else 0)
        disk = GaugeMetricFamily("scoperun_disk_free_ratio", "Fraction of the disk free.", labels=["volume"])
        for volume, ratio in sorted(m.disk_free.items()):
            disk.add_metric([volume], ratio)
        yield disk
        yield GaugeMetricFamily("scoperun_window_hazard_runs",
                                "Runs of the alert window that left hazards in their case.", value=m.hazard_runs)
