"""Alert rules over the audit index: fire once, resolve once, delivered to a real HTTP receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scoperun.alerts import RULES, Measurements, alert_payload, deliver, evaluate_alerts, load_alert_state, measure
from scoperun.audit.log import AuditLog
from scoperun.config import Settings
from tests.webhook import Receiver

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {"workspace": tmp_path / "ws", "state_dir": tmp_path / "state", "alert_verify": False}
    return Settings(**{**fields, **overrides})


def write_runs(settings: Settings, statuses: list[str], *, duration: float = 1.0, start: float = 0.3,
               hazards: list[Any] | None = None) -> None:
    audit = AuditLog.from_settings(settings, Path(settings.workspace).resolve())
    audit.chain = None
    now = datetime.now(UTC)
    for i, status in enumerate(statuses):
        eid = f"exec_{time.time_ns()}_{i}"
        audit.write({"execution_id": eid, "status": status, "success": status == "succeeded",
                     "started_at": now.isoformat(), "finished_at": now.isoformat(), "duration": duration,
                     "durations": {"total": duration, "container_start": start, "run": duration - start},
                     "case_name": "c", "script_path": "Tools/x.py", "hazards": hazards or []})


def test_success_rate_fires_once_and_resolves_once(tmp_path: Path, receiver: Receiver) -> None:
    """A success rate below the target is delivered once, not again while it lasts, and once when it recovers."""
    settings = make_settings(tmp_path, alert_webhook_url=receiver.url, alert_success_rate=0.8)
    write_runs(settings, ["succeeded"] * 5)
    assert evaluate_alerts(settings, engine=False).active == []
    write_runs(settings, ["failed"] * 5)
    report = evaluate_alerts(settings, engine=False)
    assert report.fired == ["ScoperunSuccessRateLow"] and report.delivered == 1
    evaluate_alerts(settings, engine=False)
    evaluate_alerts(settings, engine=False)
    assert [b["status"] for b in receiver.bodies] == ["firing"]
    body = receiver.bodies[0]
    assert body["alerts"][0]["labels"] == {"alertname": "ScoperunSuccessRateLow", "severity": "critical",
                                           "service": "scoperun"}
    assert "50.0 %" in body["text"] and body["alerts"][0]["fingerprint"]
    write_runs(settings, ["succeeded"] * 40)
    report = evaluate_alerts(settings, engine=False)
    assert report.resolved == ["ScoperunSuccessRateLow"] and report.active == []
    evaluate_alerts(settings, engine=False)
    assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
    assert receiver.bodies[1]["alerts"][0]["endsAt"] > receiver.bodies[1]["alerts"][0]["startsAt"]
    assert load_alert_state(settings).history[0].name == "ScoperunSuccessRateLow"


def test_too_few_runs_do_not_judge(tmp_path: Path) -> None:
    """Two failures among two runs stay below alert_min_runs: no success-rate alert."""
    settings = make_settings(tmp_path)
    write_runs(settings, ["failed", "failed"])
    m = measure(settings, engine=False)
    assert m.executed == 2 and m.success_rate == 0.0
    assert evaluate_alerts(settings, measurements=m).active == []


def test_failed_delivery_is_retried_with_backoff_and_at_the_next_check(tmp_path: Path) -> None:
    """Non-2xx replies are retried with growing waits; an alert never delivered is tried again next time."""
    receiver = Receiver(codes=[500, 503, 502])
    try:
        waits: list[float] = []
        settings = make_settings(tmp_path, alert_webhook_url=receiver.url, alert_webhook_retries=2)
        write_runs(settings, ["failed"] * 5)
        report = evaluate_alerts(settings, engine=False, sleep=waits.append)
        assert report.undelivered == 1 and receiver.bodies == [] and waits == [1.0]
        assert load_alert_state(settings).active["ScoperunSuccessRateLow"].last_error == "HTTP 503"
        report = evaluate_alerts(settings, engine=False, sleep=waits.append)
        assert report.delivered == 1 and [b["status"] for b in receiver.bodies] == ["firing"]
    finally:
        receiver.close()


def test_every_rule_judges_its_measurement(tmp_path: Path) -> None:
    """Each rule fires on a measurement past its threshold and stays quiet within it."""
    settings = make_settings(tmp_path)
    bad = Measurements(at=time.time(), window=3600, executed=10, succeeded=5, success_rate=0.5, mean_duration=90,
                       p95_duration=500, p95_container_start=7, abandoned=1, hazard_runs=2, engine_up=False,
                       engine_detail="no socket", verify_ok=False, verify_detail="1 problem",
                       disk_free={"workspace": 0.05, "state": 0.5})
    good = Measurements(at=time.time(), window=3600, executed=10, succeeded=10, success_rate=1.0, mean_duration=2,
                        p95_duration=3, p95_container_start=0.4, engine_up=True, verify_ok=True,
                        disk_free={"workspace": 0.5})
    for rule in RULES:
        assert rule.check(bad, settings), rule.name
        assert rule.check(good, settings) is None, rule.name
    assert "workspace disk has 5.0 % free" in next(r for r in RULES if r.name == "ScoperunDiskLow").check(bad, settings)


def test_measure_reads_durations_starts_and_hazards(tmp_path: Path) -> None:
    """Measurements come from the index (durations, container start) and the records (hazards)."""
    settings = make_settings(tmp_path)
    write_runs(settings, ["succeeded"] * 3, duration=10, start=6)
    write_runs(settings, ["failed"], duration=2, start=0.5, hazards=[{"kind": "symlink-out", "path": "x"}])
    m = measure(settings, engine=False)
    assert m.executed == 4 and m.p95_duration == 10 and m.p95_container_start == 6 and m.hazard_runs == 1
    assert 0 <= m.disk_free["workspace"] <= 1
    report = evaluate_alerts(settings, measurements=m)
    assert {a.name for a in report.active} == {"ScoperunContainerStartSlow", "ScoperunHazardsFound"}


def test_deliver_refuses_other_schemes() -> None:
    """Only http(s) webhooks: a file:// URL is a configuration error, not a read of a local file."""
    from scoperun.errors import ConfigError

    with pytest.raises(ConfigError):
        deliver("file:///etc/passwd", {})


def test_payload_is_alertmanager_shaped_with_slack_text(tmp_path: Path) -> None:
    """The body has Alertmanager's v4 fields and a Slack-compatible `text`."""
    from scoperun.alerts import Alert

    alert = Alert(name="ScoperunEngineDown", severity="critical", summary="s", description="engine gone",
                  starts_at=datetime.now(UTC), fingerprint="abc")
    body = alert_payload(alert, external_url="http://127.0.0.1:1/")
    assert body["version"] == "4" and body["status"] == "firing" and body["alerts"][0]["endsAt"].startswith("0001")
    assert body["text"].startswith(":rotating_light: [FIRING] ScoperunEngineDown: engine gone")
    assert body["alerts"][0]["generatorURL"] == "http://127.0.0.1:1/alerts"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run `make tools` (installs Debian's prometheus package as root)"
    return found


def test_prometheus_rules_are_the_same_rules() -> None:
    """deploy/alerts.yml has one Prometheus rule per in-process rule, same names and severities."""
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {name: r["labels"]["severity"] for name, r in rules.items()} == {r.name: r.severity for r in RULES}
    for rule in RULES:
        annotations = rules[rule.name]["annotations"]
        assert annotations["summary"] == rule.summary and annotations["description"] and annotations["runbook_url"]


def test_promtool_checks_and_tests_the_rules() -> None:
    """promtool check rules accepts deploy/alerts.yml and promtool test rules passes its unit tests."""
    check = subprocess.run([promtool(), "check", "rules", str(DEPLOY / "alerts.yml")], check=False, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0 and "SUCCESS: 9 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool(), "test", "rules", str(DEPLOY / "alerts.test.yml")], check=False,
                          capture_output=True,
                          text=True, timeout=120)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_metrics_export_what_the_prometheus_rules_read(tmp_path: Path) -> None:
    """`scoperun metrics` exposes every series deploy/alerts.yml reads, container start and health included."""
    import prometheus_client

    from scoperun.alerts import HealthCollector
    from scoperun.audit.metrics import make_registry

    settings = make_settings(tmp_path, docker_host="unix:///nonexistent.sock", alert_verify=True, audit_chain=False)
    write_runs(settings, ["succeeded", "failed"], duration=3, start=0.4)
    text = prometheus_client.generate_latest(make_registry(settings, extra=[HealthCollector(settings)])).decode()
    for series in ('scoperun_runs_total{status="succeeded"} 1.0',
                   'scoperun_container_start_seconds_bucket{le="0.5"} 2.0',
                   "scoperun_run_duration_seconds_count 2.0", "scoperun_engine_up 0.0", "scoperun_audit_verify_ok 1.0",
                   'scoperun_disk_free_ratio{volume="workspace"}', "scoperun_window_hazard_runs 0.0"):
        assert series in text, series


def test_cli_check_and_list(tmp_path: Path, receiver: Receiver) -> None:
    """`scoperun alerts check` evaluates and delivers; `alerts list --json` shows what fires."""
    from typer.testing import CliRunner

    from scoperun.cli.main import app

    settings = make_settings(tmp_path)
    write_runs(settings, ["failed"] * 6)
    env = {"SCOPERUN_WORKSPACE": str(settings.workspace), "SCOPERUN_STATE_DIR": str(settings.state_dir),
           "SCOPERUN_ALERT_WEBHOOK_URL": receiver.url, "SCOPERUN_ALERT_VERIFY": "false",
           "SCOPERUN_DOCKER_HOST": "unix:///nonexistent.sock"}
    result = CliRunner().invoke(app, ["alerts", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert "FIRING new ScoperunSuccessRateLow" in result.output and "ScoperunEngineDown" in result.output
    assert sorted(b["alerts"][0]["labels"]["alertname"] for b in receiver.bodies) == [
        "ScoperunEngineDown", "ScoperunSuccessRateLow"]
    listed = CliRunner().invoke(app, ["alerts", "list", "--json"], env=env)
    assert set(json.loads(listed.output)["active"]) == {"ScoperunEngineDown", "ScoperunSuccessRateLow"}


def test_unchained_records_fail_verify_when_chaining_is_on(tmp_path: Path) -> None:
    """With audit_chain on, a finished record without a chain link makes ScoperunAuditVerifyFailing fire."""
    settings = make_settings(tmp_path, alert_verify=True)
    write_runs(settings, ["succeeded"])
    report = evaluate_alerts(settings, engine=False)
    assert [a.name for a in report.active] == ["ScoperunAuditVerifyFailing"]
    assert "unchained" in report.active[0].description
