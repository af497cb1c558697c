"""Settings: defaults, environment variables, scoperun.toml, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoperun.config import Settings, load_settings, parse_memory, shares_a_network
from scoperun.errors import ConfigError


def test_defaults_match_the_plan() -> None:
    """Defaults: 300 s timeout, 1g memory, 0.5 CPU, bridge network, Tools and temp_scripts allowed."""
    s = Settings()
    assert (s.timeout, s.memory, s.cpus, s.network) == (300, "1g", 0.5, "bridge")
    assert s.allowed_script_dirs == ["Tools", "Database/temp_scripts"]
    assert s.secret_env == ["TAVILY_API_KEY", "OPENAI_API_KEY"]


def test_environment_and_toml(monkeypatch, tmp_path: Path) -> None:
    """SCOPERUN_* variables win over scoperun.toml, which wins over defaults."""
    toml = tmp_path / "scoperun.toml"
    toml.write_text('memory = "2g"\ntimeout = 120\nnetwork = "none"\n')
    monkeypatch.setenv("SCOPERUN_CONFIG", str(toml))
    monkeypatch.setenv("SCOPERUN_TIMEOUT", "30")
    s = load_settings()
    assert (s.memory, s.timeout, s.network) == ("2g", 30, "none")


@pytest.mark.parametrize("bad", [{"memory": "lots"}, {"container_user": "0:0"}, {"network": "host"}, {"cpus": 0}])
def test_invalid_settings_raise_config_error(bad: dict) -> None:
    """Bad sizes, a root container user, host networking and zero CPUs are refused clearly."""
    with pytest.raises(ConfigError, match="SCOPERUN_"):
        load_settings(**bad)


@pytest.mark.parametrize(("text", "size"), [("512m", 512 * 1024**2), ("1g", 1024**3), ("1.5GiB", int(1.5 * 1024**3))])
def test_parse_memory(text: str, size: int) -> None:
    """Docker-style sizes parse to bytes."""
    assert parse_memory(text) == size


@pytest.mark.parametrize(("network", "shared"), [("host", True), ("container:abc", True), ("bridge", False),
                                                  ("none", False), ("case-net", False), ("hostile", False)])
def test_the_one_network_rule(network: str, shared: bool) -> None:
    """Only host and container: networks count as sharing another network namespace."""
    assert shares_a_network(network) is shared
