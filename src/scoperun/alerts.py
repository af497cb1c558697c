"""Alerts when the plan's targets slip: rules over the audit index and the engine, evaluated by
`scoperun serve` every `alert_interval` seconds and by `scoperun alerts check` (for a timer).

Each rule compares one measurement with its threshold setting (`alert_*`). A rule that starts
failing fires; the webhook (`alert_webhook_url`) gets it once, and once more when it resolves.
What fired and what was delivered is kept in host-local state (`<state_dir>/alerts/`), so a
restart, or the server and a timer taking turns, never delivers an alert twice. The same rules,
written over `scoperun metrics`, are in deploy/alerts.yml for Prometheus.

    report = evaluate_alerts(settings)        # measure, update state, deliver
    for a in report.active: print(a.name, a.description)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from scoperun.audit.index import AuditIndex, read_json_file
from scoperun.audit.state import audit_dir_key, state_dir
from scoperun.config import Settings
from scoperun.errors import ConfigError

__all__ = [
    "RULES",
    "Alert",
    "AlertLoop",
    "AlertReport",
    "HealthCollector",
    "Measurements",
    "Rule",
    "alert_payload",
    "deliver",
    "evaluate_alerts",
    "load_alert_state",
    "measure",
]

log = logging.getLogger(__name__)
EXECUTED = ("succeeded", "failed", "timed_out", "oom_killed", "error", "abandoned")
TIMED = ("succeeded", "failed", "timed_out", "oom_killed", "error")
HISTORY_KEPT = 200
VERIFY_EVERY = 10  # the server verifies the audit trail every 10th evaluation
HAZARD_RECORDS_READ = 1000  # newest records of the window whose hazards are read (bounds the cost)


class Measurements(BaseModel):
    """What the rules look at, measured once per evaluation (None: not measurable now)."""

    at: float
    window: float
    executed: int = 0
    succeeded: int = 0
    success_rate: float | None = None
    mean_duration: float | None = None
    p95_duration: float | None = None
    p95_container_start: float | None = None
    abandoned: int = 0
    hazard_runs: int = 0
    engine_up: bool | None = None
    engine_detail: str = ""
    verify_ok: bool | None = None
    verify_detail: str = ""
    disk_free: dict[str, float] = Field(default_factory=dict, description="volume -> fraction free")


class Rule(BaseModel):
    """One alert rule: its name, severity, headline and how it judges the measurements."""

    name: str
    severity: Literal["critical", "warning"]
    summary: str
    check: Any = Field(exclude=True, description="(Measurements, Settings) -> description when failing, else None")


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _success(m: Measurements, s: Settings) -> str | None:
    if m.success_rate is None or m.executed < s.alert_min_runs or m.success_rate >= s.alert_success_rate:
        return None
    return (f"success rate {_pct(m.success_rate)} over the last {m.window / 60:g} min ({m.succeeded} of "
            f"{m.executed} runs) is below the target {_pct(s.alert_success_rate)}")


def _mean(m: Measurements, s: Settings) -> str | None:
    if m.mean_duration is None or m.executed < s.alert_min_runs or m.mean_duration <= s.alert_mean_duration:
        return None
    return f"mean run duration {m.mean_duration:.1f} s over the last {m.window / 60:g} min is above {s.alert_mean_duration:g} s"


def _p95(m: Measurements, s: Settings) -> str | None:
    if m.p95_duration is None or m.executed < s.alert_min_runs or m.p95_duration <= s.alert_p95_duration:
        return None
    return f"p95 run duration {m.p95_duration:.1f} s over the last {m.window / 60:g} min is above {s.alert_p95_duration:g} s"


def _start(m: Measurements, s: Settings) -> str | None:
    if m.p95_container_start is None or m.p95_container_start <= s.alert_container_start:
        return None
    return (f"p95 container start {m.p95_container_start:.2f} s over the last {m.window / 60:g} min is above "
            f"{s.alert_container_start:g} s")


def _abandoned(m: Measurements, s: Settings) -> str | None:
    if m.abandoned <= s.alert_abandoned:
        return None
    return f"{m.abandoned} run(s) abandoned in the last {m.window / 60:g} min (their process died mid-run)"


def _hazards(m: Measurements, s: Settings) -> str | None:
    if m.hazard_runs <= s.alert_hazards:
        return None
    return f"{m.hazard_runs} run(s) in the last {m.window / 60:g} min left hazards in their case (`scoperun audit show`)"


def _verify(m: Measurements, s: Settings) -> str | None:
    return None if m.verify_ok is None or m.verify_ok else f"audit verify fails: {m.verify_detail}"


def _engine(m: Measurements, s: Settings) -> str | None:
    return None if m.engine_up is None or m.engine_up else f"the Docker engine does not answer: {m.engine_detail}"


def _disk(m: Measurements, s: Settings) -> str | None:
    low = {k: v for k, v in m.disk_free.items() if v < s.alert_disk_free}
    if not low:
        return None
    return "; ".join(f"{k} disk has {_pct(v)} free (below {_pct(s.alert_disk_free)})" for k, v in sorted(low.items()))


RULES: tuple[Rule, ...] = (
    Rule(name="ScoperunSuccessRateLow", severity="critical", summary="Run success rate is below the target.",
         check=_success),
    Rule(name="ScoperunMeanDurationHigh", severity="warning", summary="Mean run duration is above the target.",
         check=_mean),
    Rule(name="ScoperunP95DurationHigh", severity="warning", summary="p95 run duration is above the target.",
         check=_p95),
    Rule(name="ScoperunContainerStartSlow", severity="warning", summary="Containers take too long to start.",
         check=_start),
    Rule(name="ScoperunRunsAbandoned", severity="warning", summary="Runs were abandoned mid-run.", check=_abandoned),
    Rule(name="ScoperunHazardsFound", severity="warning", summary="Runs left hazards in their case.", check=_hazards),
    Rule(name="ScoperunAuditVerifyFailing", severity="critical", summary="The audit trail does not verify.",
         check=_verify),
    Rule(name="ScoperunEngineDown", severity="critical", summary="The Docker engine is unreachable.", check=_engine),
    Rule(name="ScoperunDiskLow", severity="warning", summary="A disk scoperun writes to is nearly full.",
         check=_disk),
)


# -- measuring ----------------------------------------------------------------------------------


def _index(settings: Settings) -> AuditIndex:
    from scoperun.audit.log import AuditLog

    audit = AuditLog.from_settings(settings, Path(settings.workspace).expanduser().resolve())
    assert audit.index is not None
    return audit.index


def _percentile(conn: Any, column: str, cond: str, params: list[Any], count: int, p: float) -> float | None:
    if not count:
        return None
    offset = max(0, math.ceil(p * count) - 1)
    row = conn.execute(f"SELECT {column} FROM records {cond} ORDER BY {column} LIMIT 1 OFFSET ?",
                       [*params, offset]).fetchone()
    return None if row is None else row[0]


def _measure_runs(m: Measurements, index: AuditIndex) -> None:
    conn = index.connect()
    since = m.at - m.window
    counts = dict(conn.execute("SELECT status, COUNT(*) FROM records WHERE started >= ? GROUP BY status", [since]))
    m.executed = sum(counts.get(s, 0) for s in EXECUTED)
    m.succeeded = counts.get("succeeded", 0)
    m.abandoned = counts.get("abandoned", 0)
    m.success_rate = m.succeeded / m.executed if m.executed else None
    marks = ", ".join("?" * len(TIMED))
    cond = f"WHERE started >= ? AND status IN ({marks}) AND duration IS NOT NULL"
    params = [since, *TIMED]
    n, mean = conn.execute(f"SELECT COUNT(duration), AVG(duration) FROM records {cond}", params).fetchone()
    m.mean_duration = mean
    m.p95_duration = _percentile(conn, "duration", cond, params, n, 0.95)
    cond_s = f"WHERE started >= ? AND status IN ({marks}) AND container_start > 0"
    (ns,) = conn.execute(f"SELECT COUNT(container_start) FROM records {cond_s}", params).fetchone()
    m.p95_container_start = _percentile(conn, "container_start", cond_s, params, ns, 0.95)
    # Hazards are not indexed: read the newest records of the window (finished ones only).
    ids = [r[0] for r in conn.execute(
        f"SELECT execution_id FROM records WHERE started >= ? AND status IN ({marks}) ORDER BY started DESC LIMIT ?",
        [since, *TIMED, HAZARD_RECORDS_READ])]
    m.hazard_runs = sum(1 for i in ids if (r := read_json_file(index.audit_dir / f"{i}.json")) and r.get("hazards"))


def _measure_engine(m: Measurements, settings: Settings) -> None:
    from scoperun.engine.docker import connect
    from scoperun.errors import EngineError

    try:
        client = connect(settings.docker_host, timeout=5)
        client.close()
        m.engine_up = True
    except EngineError as exc:
        m.engine_up, m.engine_detail = False, str(exc).split(". ")[0]


def _measure_verify(m: Measurements, settings: Settings, index: AuditIndex) -> None:
    from scoperun.audit.chain import FAILING_KINDS, HostChain, verify_records

    directory = index.audit_dir
    try:
        stems = sorted(p.name[:-5] for p in directory.glob("*.json") if not p.name.startswith("."))
        loaded = [(stem, read_json_file(directory / f"{stem}.json")) for stem in stems]
        head = HostChain(state_dir(settings), directory).head()
    except Exception as exc:  # a verify that cannot run is a failing verify
        m.verify_ok, m.verify_detail = False, f"cannot verify ({exc})"
        return
    # Unchained records are expected only when chaining is off (as `audit verify --allow-unchained`).
    allow_unchained = not settings.audit_chain
    report = verify_records(loaded, heads=[head] if head else [], grace=settings.gc_grace,
                            default_timeout=settings.timeout, now=m.at, allow_unchained=allow_unchained)
    kinds_failing = FAILING_KINDS - ({"unchained"} if allow_unchained else set())
    failing = [f for f in report.findings if f.kind in kinds_failing]
    m.verify_ok = report.ok and not failing
    if failing:
        kinds = sorted({f.kind for f in failing})
        m.verify_detail = (f"{len(failing)} problem(s) ({', '.join(kinds)}), first: {failing[0].execution_id}: "
                           f"{failing[0].detail} (`scoperun audit verify`)")


def _measure_disk(m: Measurements, settings: Settings) -> None:
    for name, path in (("workspace", Path(settings.workspace).expanduser()), ("state", state_dir(settings))):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            continue
        if usage.total:
            m.disk_free[name] = usage.free / usage.total


def measure(settings: Settings, *, now: float | None = None, engine: bool = True, verify: bool | None = None,
            index: AuditIndex | None = None) -> Measurements:
    """Measure everything the rules look at; the index first catches up with the records."""
    m = Measurements(at=time.time() if now is None else now, window=settings.alert_window)
    index = index or _index(settings)
    index.reindex_if_stale(5.0)
    _measure_runs(m, index)
    if engine:
        _measure_engine(m, settings)
    if settings.alert_verify if verify is None else verify:
        _measure_verify(m, settings, index)
    _measure_disk(m, settings)
    return m


# -- state and delivery -------------------------------------------------------------------------


class Alert(BaseModel):
    """One alert, firing or resolved, with what was delivered of it."""

    name: str
    severity: str
    summary: str
    description: str
    status: Literal["firing", "resolved"] = "firing"
    starts_at: datetime
    ends_at: datetime | None = None
    fingerprint: str
    delivered_firing: bool = False
    delivered_resolved: bool = False
    attempts: int = 0
    last_error: str = ""


class AlertState(BaseModel):
    """Alerts firing now and the recent past, kept in the state folder."""

    active: dict[str, Alert] = Field(default_factory=dict)
    history: list[Alert] = Field(default_factory=list)
    evaluated_at: datetime | None = None
    measurements: Measurements | None = None


class AlertReport(BaseModel):
    """The outcome of one evaluation."""

    measurements: Measurements
    active: list[Alert]
    fired: list[str] = Field(default_factory=list)
    resolved: list[str] = Field(default_factory=list)
    delivered: int = 0
    undelivered: int = 0
    history: list[Alert] = Field(default_factory=list)


def _state_path(settings: Settings) -> Path:
    audit_dir = Path(settings.workspace).expanduser().resolve() / settings.audit_dir
    return state_dir(settings) / "alerts" / f"{audit_dir_key(audit_dir)}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # The server and a timer may evaluate at once: one at a time, or both would deliver.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_alert_state(settings: Settings) -> AlertState:
    """The alerts firing now and the past ones (empty when never evaluated)."""
    path = _state_path(settings)
    try:
        return AlertState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return AlertState()
    except (OSError, ValueError) as exc:
        log.warning("alert state %s unreadable (%s); starting afresh", path, exc)
        return AlertState()


def _save(path: Path, state: AlertState) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(state.model_dump_json(indent=1))
    os.replace(tmp, path)


def _iso(moment: datetime | None) -> str:
    return (moment or datetime(1, 1, 1, tzinfo=UTC)).isoformat().replace("+00:00", "Z")


def alert_payload(alert: Alert, *, external_url: str = "") -> dict[str, Any]:
    """An Alertmanager-v4-shaped webhook body for one alert, with a Slack-compatible `text`."""
    labels = {"alertname": alert.name, "severity": alert.severity, "service": "scoperun"}
    annotations = {"summary": alert.summary, "description": alert.description}
    icon = ":rotating_light:" if alert.status == "firing" else ":white_check_mark:"
    text = f"{icon} [{alert.status.upper()}] {alert.name}: {alert.description}"
    return {
        "version": "4", "groupKey": f"scoperun:{alert.name}", "status": alert.status, "receiver": "scoperun",
        "groupLabels": {"alertname": alert.name}, "commonLabels": labels, "commonAnnotations": annotations,
        "externalURL": external_url, "truncatedAlerts": 0, "text": text,
        "alerts": [{"status": alert.status, "labels": labels, "annotations": annotations,
                    "startsAt": _iso(alert.starts_at), "endsAt": _iso(alert.ends_at),
                    "generatorURL": f"{external_url.rstrip('/')}/alerts" if external_url else "",
                    "fingerprint": alert.fingerprint}],
    }


def deliver(url: str, payload: dict[str, Any], *, attempts: int = 5, backoff: float = 1.0,
            sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST `payload` as JSON, retrying non-2xx and network errors with backoff; None when delivered, else why not."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"alert_webhook_url {url!r} must be an http:// or https:// URL")
    body = json.dumps(payload).encode()
    error = ""
    for attempt in range(attempts):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "scoperun-alerts"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (scheme checked above)
                if 200 <= response.status < 300:
                    return None
                error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
    return error


def _fingerprint(name: str, settings: Settings) -> str:
    return hashlib.sha256(f"{name}\0{Path(settings.workspace).expanduser().resolve()}".encode()).hexdigest()[:16]


def evaluate_alerts(settings: Settings, *, measurements: Measurements | None = None, external_url: str = "",
                    sleep: Callable[[float], None] = time.sleep, **measure_options: Any) -> AlertReport:
    """Measure, fire new alerts, resolve recovered ones, deliver what was not delivered yet; persist."""
    path = _state_path(settings)
    m = measurements or measure(settings, **measure_options)
    now = datetime.fromtimestamp(m.at, UTC)
    with _locked(path):
        state = load_alert_state(settings)
        report = AlertReport(measurements=m, active=[])
        for rule in RULES:
            description = rule.check(m, settings)
            current = state.active.get(rule.name)
            if description and current is None:
                state.active[rule.name] = Alert(name=rule.name, severity=rule.severity, summary=rule.summary,
                                                description=description, starts_at=now,
                                                fingerprint=_fingerprint(rule.name, settings))
                report.fired.append(rule.name)
            elif description and current is not None:
                current.description = description
            elif not description and current is not None:
                current.status, current.ends_at = "resolved", now
                state.history.insert(0, current)
                del state.active[rule.name]
                report.resolved.append(rule.name)
        # Deliver every transition not delivered yet (a failed delivery is retried next time).
        pending = [(a, "firing") for a in state.active.values() if not a.delivered_firing]
        pending += [(a, "resolved") for a in state.history if not a.delivered_resolved]
        for alert, phase in pending:
            if not settings.alert_webhook_url:
                break
            if phase == "resolved" and not alert.delivered_firing:
                alert.delivered_firing = alert.delivered_resolved = True  # never announced: nothing to resolve
                continue
            shown = alert.model_copy(update={"status": phase, "ends_at": alert.ends_at if phase == "resolved" else None})
            error = deliver(settings.alert_webhook_url, alert_payload(shown, external_url=external_url),
                            attempts=settings.alert_webhook_retries, sleep=sleep)
            alert.attempts += 1
            if error is None:
                setattr(alert, f"delivered_{phase}", True)
                alert.last_error = ""
                report.delivered += 1
            else:
                alert.last_error = error
                report.undelivered += 1
                log.warning("alert %s (%s) not delivered to the webhook: %s", alert.name, phase, error)
        del state.history[HISTORY_KEPT:]
        state.evaluated_at, state.measurements = now, m
        _save(path, state)
    report.active = list(state.active.values())
    report.history = list(state.history)
    return report


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
            yield GaugeMetricFamily("scoperun_audit_verify_ok", "1 when `scoperun audit verify` finds no failing problem.",
                                    value=1 if m.verify_ok else 0)
        disk = GaugeMetricFamily("scoperun_disk_free_ratio", "Fraction of the disk free.", labels=["volume"])
        for volume, ratio in sorted(m.disk_free.items()):
            disk.add_metric([volume], ratio)
        yield disk
        yield GaugeMetricFamily("scoperun_window_hazard_runs",
                                "Runs of the alert window that left hazards in their case.", value=m.hazard_runs)
