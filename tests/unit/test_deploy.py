"""The systemd units in deploy/ are valid (systemd-analyze verify) and run scoperun gc, never a prune."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALLED = "/opt/scoperun/venv/bin/scoperun"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: run `make tools` (installs Debian's systemd package as root)"
    return found


def copy_units(tmp_path: Path, *, exec_start: str | None = None) -> list[Path]:
    """The units as shipped, with ExecStart pointed at this environment's scoperun (the install path differs)."""
    scoperun = exec_start or str(Path(sys.executable).with_name("scoperun"))
    paths = []
    for name in ("scoperun-gc.service", "scoperun-gc.timer", "scoperun-metrics.service",
                 "scoperun-alerts.service", "scoperun-alerts.timer"):
        text = (DEPLOY / name).read_text().replace(INSTALLED, scoperun)
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    return paths


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the gc, metrics and alerts units without a single warning."""
    service = (DEPLOY / "scoperun-gc.service").read_text()
    assert f"ExecStart={INSTALLED} gc" in service
    assert not [line for line in service.splitlines() if "prune" in line and not line.startswith("#")]
    proc = subprocess.run([systemd_analyze(), "verify", *map(str, copy_units(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check is real: a service whose ExecStart is not executable fails verification."""
    units = copy_units(tmp_path, exec_start="/nonexistent/scoperun")
    proc = subprocess.run([systemd_analyze(), "verify", *map(str, units)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "/nonexistent/scoperun" in proc.stderr


def test_serve_unit_runs_scoperun_serve_on_loopback() -> None:
    """deploy/scoperun.service starts `scoperun serve` on 127.0.0.1:8737 with host-local state."""
    unit = (DEPLOY / "scoperun.service").read_text()
    assert f"ExecStart={INSTALLED} serve --host 127.0.0.1 --port 8737" in unit
    assert "Environment=SCOPERUN_STATE_DIR=/var/lib/scoperun" in unit
