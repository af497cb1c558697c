"""Alerts from real runs: the success rate drops, one webhook delivery; it recovers, one resolution."""

from __future__ import annotations

from scoperun.alerts import evaluate_alerts
from scoperun.config import Settings
from scoperun.executor import Executor
from tests.conftest import CASE
from tests.webhook import Receiver


def test_real_failures_fire_once_and_recovery_resolves_once(settings: Settings, executor: Executor) -> None:
    """Failing real runs push the success rate below the target: exactly one firing POST, then one resolved."""
    receiver = Receiver()
    try:
        settings = settings.model_copy(update={"alert_webhook_url": receiver.url, "alert_min_runs": 2,
                                               "alert_success_rate": 0.5, "alert_verify": True})
        for _ in range(2):
            assert executor.run_code("import sys; sys.exit(3)\n", case=CASE).status.value == "failed"
        first = evaluate_alerts(settings)
        again = evaluate_alerts(settings)
        assert first.fired == ["ScoperunSuccessRateLow"] and again.fired == []
        assert first.measurements.engine_up is True and first.measurements.verify_ok is True
        assert [b["status"] for b in receiver.bodies] == ["firing"]
        for _ in range(2):
            assert executor.run_code("print('ok')\n", case=CASE).status.value == "succeeded"
        resolved = evaluate_alerts(settings)
        evaluate_alerts(settings)
        assert resolved.resolved == ["ScoperunSuccessRateLow"] and resolved.active == []
        assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
        assert {b["alerts"][0]["labels"]["alertname"] for b in receiver.bodies} == {"ScoperunSuccessRateLow"}
    finally:
        receiver.close()
