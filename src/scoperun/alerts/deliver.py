"""Alert state (what fires, what was delivered) in the host's state folder, and webhook delivery."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from scoperun.alerts.rules import RULES, Measurements, measure
from scoperun.atomicio import write_json_atomic
from scoperun.audit.state import audit_dir_key, state_dir
from scoperun.config import Settings
from scoperun.errors import ConfigError

__all__ = ["Alert", "AlertReport", "AlertState", "alert_payload", "deliver", "evaluate_alerts", "load_alert_state"]

log = logging.getLogger(__name__)
HISTORY_KEPT = 200


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
    write_json_atomic(path, state, 0o666)  # umask decides, as before


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
            with urllib.request.urlopen(request, timeout=10) as response:  # the scheme was checked above
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
            ends = alert.ends_at if phase == "resolved" else None
            shown = alert.model_copy(update={"status": phase, "ends_at": ends})
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


