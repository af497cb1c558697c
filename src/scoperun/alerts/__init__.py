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

from scoperun.alerts.deliver import (
    Alert,
    AlertReport,
    AlertState,
    alert_payload,
    deliver,
    evaluate_alerts,
    load_alert_state,
)
from scoperun.alerts.loop import AlertLoop, HealthCollector
from scoperun.alerts.rules import RULES, Measurements, Rule, measure

__all__ = [
    "RULES",
    "Alert",
    "AlertLoop",
    "AlertReport",
    "AlertState",
    "HealthCollector",
    "Measurements",
    "Rule",
    "alert_payload",
    "deliver",
    "evaluate_alerts",
    "load_alert_state",
    "measure",
]
