"""Firewall rule handling against a simulated iptables (no root, no kernel)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from scoperun.errors import FirewallError
from scoperun.safety.firewall import CHAIN, COMMENT, Iptables, install, remove, status


class FakeIptables:
    """Holds one DOCKER-USER chain in memory and answers -S, -C, -I and -D like iptables."""

    def __init__(self, chain_exists: bool = True) -> None:
        self.rules: list[list[str]] = [["-j", "RETURN"]] if chain_exists else []
        self.exists = chain_exists
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        args = argv[3:]  # drop binary, -w, 5
        op, chain, rest = args[0], args[1], args[2:]
        assert chain == CHAIN
        if not self.exists:
            return subprocess.CompletedProcess(argv, 1, "", "iptables: No chain/target/match by that name.")
        if op == "-S":
            lines = [f"-N {CHAIN}"] + [f"-A {CHAIN} " + " ".join(r) for r in self.rules]
            return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")
        if op == "-C":
            return subprocess.CompletedProcess(argv, 0 if rest in self.rules else 1, "", "")
        if op == "-I":
            self.rules.insert(int(rest[0]) - 1, rest[1:])
            return subprocess.CompletedProcess(argv, 0, "", "")
        if op == "-D":
            if rest in self.rules:
                self.rules.remove(rest)
                return subprocess.CompletedProcess(argv, 0, "", "")
            return subprocess.CompletedProcess(argv, 1, "", "Bad rule")
        raise AssertionError(argv)


def test_install_inserts_drop_rules_first_and_is_idempotent() -> None:
    """install puts one commented DROP rule per CIDR before Docker's RETURN, once."""
    fake = FakeIptables()
    ipt = Iptables(fake)
    assert install(["169.254.169.254", "10.9.0.0/16"], iptables=ipt) == ["169.254.169.254/32", "10.9.0.0/16"]
    assert install(["169.254.169.254/32"], iptables=ipt) == []
    assert fake.rules[-1] == ["-j", "RETURN"]
    assert ["-d", "169.254.169.254/32", "-m", "comment", "--comment", COMMENT, "-j", "DROP"] in fake.rules
    assert len(fake.rules) == 3


def test_status_reports_blocked_missing_and_present() -> None:
    """status says which wanted CIDRs are blocked and which scoperun rules exist at all."""
    ipt = Iptables(FakeIptables())
    install(["10.9.0.0/16"], iptables=ipt)
    state = status(["169.254.169.254/32", "10.9.0.0/16"], iptables=ipt)
    assert not state.ok
    assert state.blocked == ["10.9.0.0/16"] and state.missing == ["169.254.169.254/32"]
    assert state.present == ["10.9.0.0/16"]


def test_remove_touches_only_scoperun_rules() -> None:
    """remove deletes the named CIDR's rule, or with None every scoperun rule, and never others."""
    fake = FakeIptables()
    fake.rules.insert(0, ["-s", "10.0.0.0/8", "-j", "ACCEPT"])
    ipt = Iptables(fake)
    install(["169.254.169.254/32", "10.9.0.0/16"], iptables=ipt)
    assert remove(["10.9.0.0/16"], iptables=ipt) == ["10.9.0.0/16"]
    assert remove(None, iptables=ipt) == ["169.254.169.254/32"]
    assert fake.rules == [["-s", "10.0.0.0/8", "-j", "ACCEPT"], ["-j", "RETURN"]]


def test_missing_chain_and_bad_cidr_raise_firewall_error() -> None:
    """Without Docker's chain, or with a malformed CIDR, the error says what to do."""
    with pytest.raises(FirewallError, match="start Docker first"):
        install(["169.254.169.254/32"], iptables=Iptables(FakeIptables(chain_exists=False)))
    with pytest.raises(FirewallError, match="not an IP address"):
        install(["metadata.google.internal"], iptables=Iptables(FakeIptables()))


def test_blocked_cidrs_setting_is_normalised_and_validated(tmp_path) -> None:
    """blocked_cidrs accepts bare addresses (as /32) and refuses names that are not addresses."""
    from scoperun.config import Settings, load_settings
    from scoperun.errors import ConfigError

    assert Settings(workspace=tmp_path, blocked_cidrs=["169.254.169.254", "10.1.2.0/24"]).blocked_cidrs == [
        "169.254.169.254/32", "10.1.2.0/24"]
    with pytest.raises(ConfigError, match="blocked_cidrs"):
        load_settings(workspace=tmp_path, blocked_cidrs=["metadata.google.internal"])
