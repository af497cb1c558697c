"""Host firewall rules that keep containers away from addresses they must never reach.

On a cloud VM a container on `bridge` can reach the metadata server (169.254.169.254) and
take the VM's own credentials, which can read every case in the bucket. Docker sends all
traffic it forwards for containers through the `DOCKER-USER` chain before its own rules, so a
DROP rule there blocks every container, on every Docker network, whatever the run asked for.

Each rule carries the comment `scoperun-block` so `status` and `remove` touch scoperun's rules
and nothing else. Rules live in the kernel: they are gone after a reboot; re-run
`scoperun firewall install` at boot (after Docker started) and let `scoperun doctor` check it.
There is no Python library for iptables worth depending on, so this module runs the
`iptables`/`ip6tables` binaries.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from scoperun.errors import FirewallError

__all__ = ["CHAIN", "COMMENT", "FirewallStatus", "Iptables", "install", "normalise_cidrs", "remove", "status"]

CHAIN = "DOCKER-USER"
COMMENT = "scoperun-block"

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@dataclass
class FirewallStatus:
    """Which of the wanted CIDRs are blocked, and every scoperun rule present in the chain."""

    wanted: list[str]
    blocked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # every CIDR a scoperun rule drops

    @property
    def ok(self) -> bool:
        """True when every wanted CIDR is blocked."""
        return not self.missing


class Iptables:
    """A thin wrapper around the iptables binaries (injectable runner for tests)."""

    def __init__(self, runner: Runner = _run) -> None:
        self._runner = runner

    @staticmethod
    def binary_for(cidr: str) -> str:
        """`iptables` for IPv4 CIDRs, `ip6tables` for IPv6 ones."""
        return "ip6tables" if ipaddress.ip_network(cidr, strict=False).version == 6 else "iptables"

    @staticmethod
    def rule(cidr: str) -> list[str]:
        """The rule body (without chain and action flag) that drops traffic to `cidr`."""
        return ["-d", cidr, "-m", "comment", "--comment", COMMENT, "-j", "DROP"]

    def call(self, binary: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one iptables command; raise FirewallError when it cannot run at all."""
        if self._runner is _run and shutil.which(binary) is None:
            raise FirewallError(f"{binary} is not installed; install it (`apt-get install iptables`) and retry")
        try:
            return self._runner([binary, "-w", "5", *args])
        except (OSError, subprocess.SubprocessError) as exc:
            raise FirewallError(f"cannot run {binary}: {exc}") from None

    def check_chain(self, binary: str) -> None:
        """Raise FirewallError unless the DOCKER-USER chain exists (Docker creates it at start)."""
        done = self.call(binary, "-S", CHAIN)
        if done.returncode != 0:
            detail = done.stderr.strip() or f"exit {done.returncode}"
            hint = ("run it as root" if "denied" in detail.lower() or "permission" in detail.lower()
                    else "start Docker first (it creates the chain), or check Docker runs with iptables enabled")
            raise FirewallError(f"cannot read the {CHAIN} chain with {binary} ({detail}); {hint}")

    def has(self, cidr: str) -> bool:
        """Whether the drop rule for `cidr` is in the chain."""
        return self.call(self.binary_for(cidr), "-C", CHAIN, *self.rule(cidr)).returncode == 0

    def listed(self, binary: str) -> list[list[str]]:
        """The scoperun rules of the chain, each as `-A DOCKER-USER ...` arguments."""
        done = self.call(binary, "-S", CHAIN)
        if done.returncode != 0:
            return []
        return [shlex.split(line) for line in done.stdout.splitlines() if COMMENT in line]


def normalise_cidrs(cidrs: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in cidrs:
        try:
            net = str(ipaddress.ip_network(raw.strip(), strict=False))
        except ValueError:
            raise FirewallError(f"{raw!r} is not an IP address or CIDR (e.g. 169.254.169.254/32)") from None
        if net not in out:
            out.append(net)
    return out


def _dest(args: list[str]) -> str | None:
    return args[args.index("-d") + 1] if "-d" in args and args.index("-d") + 1 < len(args) else None


def status(cidrs: Iterable[str], *, iptables: Iptables | None = None) -> FirewallStatus:
    """Report which of `cidrs` are blocked; raise FirewallError when iptables cannot be read."""
    ipt = iptables or Iptables()
    wanted = normalise_cidrs(cidrs)
    result = FirewallStatus(wanted=wanted)
    for binary in sorted({Iptables.binary_for(c) for c in wanted} | {"iptables"}):
        ipt.check_chain(binary)
        result.present += [d for d in (_dest(r) for r in ipt.listed(binary)) if d]
    for cidr in wanted:
        (result.blocked if ipt.has(cidr) else result.missing).append(cidr)
    return result


def install(cidrs: Iterable[str], *, iptables: Iptables | None = None) -> list[str]:
    """Insert a DROP rule at the top of DOCKER-USER for each CIDR not yet blocked; return those added."""
    ipt = iptables or Iptables()
    added: list[str] = []
    for cidr in normalise_cidrs(cidrs):
        binary = Iptables.binary_for(cidr)
        ipt.check_chain(binary)
        if ipt.has(cidr):
            continue
        # -I 1: before Docker's own RETURN and before anything that could accept the packet.
        done = ipt.call(binary, "-I", CHAIN, "1", *Iptables.rule(cidr))
        if done.returncode != 0:
            raise FirewallError(f"{binary} refused the rule for {cidr}: {done.stderr.strip()}; run as root")
        added.append(cidr)
    return added


def remove(cidrs: Iterable[str] | None = None, *, iptables: Iptables | None = None) -> list[str]:
    """Delete scoperun's rules for `cidrs` (None: every scoperun rule); return the CIDRs removed."""
    ipt = iptables or Iptables()
    removed: list[str] = []
    if cidrs is None:
        for binary in ("iptables", "ip6tables"):
            try:
                rules = ipt.listed(binary)
            except FirewallError:
                continue  # no ip6tables: nothing of ours there either
            for args in rules:
                if args[:2] == ["-A", CHAIN] and ipt.call(binary, "-D", *args[1:]).returncode == 0:
                    removed.append(_dest(args) or "?")
        return removed
    for cidr in normalise_cidrs(cidrs):
        binary = Iptables.binary_for(cidr)
        while ipt.has(cidr):  # a rule inserted twice by hand is removed twice
            done = ipt.call(binary, "-D", CHAIN, *Iptables.rule(cidr))
            if done.returncode != 0:
                raise FirewallError(f"{binary} could not delete the rule for {cidr}: {done.stderr.strip()}")
            removed.append(cidr)
    return removed
