"""A real two-node Docker Swarm on one machine, made of two private engines (tests, benchmarks).

Each engine is its own `dockerd` with its own data root, exec root, pid file, socket and
config file, started inside its own network namespace (entered with `nsenter --net`, which keeps
the host's /sys and its cgroup mounts) so its bridge, iptables rules and swarm ports never
touch the machine's main engine. A veth pair joins the two namespaces on a private /30.
Everything is removed by `stop()`, also after a failed start. Needs root, `ip`, `nsenter`
and `dockerd`; talks to the engines with the `docker` CLI only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scoperun.mounts import mount_points_under

__all__ = ["LocalSwarm", "SwarmNode", "local_swarm"]

# Private ranges chosen far from Docker's defaults (172.17+/16 bridges, 10.0.0.0/8 overlay pool
# base 10.0.0.0/24): nothing here can overlap the main engine's docker0 or its networks.
_LINK = ("10.231.0.1", "10.231.0.2")  # the veth pair between the two namespaces (/30)
_BIP = ("10.231.1.1/24", "10.231.2.1/24")  # each engine's default bridge
_ADDR_POOL = "10.232.0.0/16"  # each engine's own networks (size /24)
_SWARM_POOL = "10.233.0.0/16"  # swarm overlay networks


@dataclass
class SwarmNode:
    """One private engine: its socket, network namespace and address on the test link."""

    name: str
    role: str
    host: str  # unix:// address for DOCKER_HOST / docker -H
    netns: str
    address: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    def docker(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None) -> str:
        """Run the docker CLI against this engine; return stdout."""
        done = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, timeout=timeout,
                              input=input, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker -H {self.host} {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def start(self) -> None:
        """Start dockerd in this node's namespace and wait until it answers."""
        config = self.root / "daemon.json"
        config.write_text(json.dumps({}))  # never the machine's /etc/docker/daemon.json
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - kept open for the daemon's life
        index = 0 if self.role == "manager" else 1
        cmd = ["nsenter", f"--net=/var/run/netns/{self.netns}", "dockerd",
               "--config-file", str(config), "--data-root", str(self.root / "data"),
               "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
               "-H", self.host, "--bip", _BIP[index], "--default-address-pool", f"base={_ADDR_POOL},size=24",
               "--storage-driver", "overlay2", "--iptables=true", "--ip-masq=false", "--userland-proxy=false",
               "--log-level", "warn"]
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll `docker info` until the engine answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited: {self.log_tail()}")
            if subprocess.run(["docker", "-H", self.host, "info"], capture_output=True, timeout=20, check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"dockerd of {self.name} did not answer within {timeout:g} s: {self.log_tail()}")

    def kill(self, sig: int = signal.SIGTERM, wait: float = 30) -> None:
        """Stop this node's engine (SIGTERM: stops its containers; SIGKILL: a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, n: int = 20) -> str:
        """The last lines of this engine's log, for error messages."""
        try:
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class LocalSwarm:
    """A manager and a worker on private engines, the worker labelled as having the workspace."""

    base: Path
    manager: SwarmNode = field(init=False)
    worker: SwarmNode = field(init=False)
    prefix: str = "scoperun-test"

    def __post_init__(self) -> None:
        self.manager = SwarmNode("manager", "manager", f"unix:///run/{self.prefix}-1.sock", f"{self.prefix}-m",
                                 _LINK[0], self.base / "manager")
        self.worker = SwarmNode("worker", "worker", f"unix:///run/{self.prefix}-2.sock", f"{self.prefix}-w",
                                _LINK[1], self.base / "worker")

    @property
    def nodes(self) -> tuple[SwarmNode, SwarmNode]:
        return self.manager, self.worker

    def start(self, images: tuple[str, ...] = ()) -> None:
        """Make the namespaces and link, start both engines, form the swarm, label, load images."""
        try:
            self._network()
            for node in self.nodes:
                node.root.mkdir(parents=True, exist_ok=True)
                node.start()
            m, w = self.manager, self.worker
            m.docker("swarm", "init", "--advertise-addr", m.address, "--listen-addr", f"{m.address}:2377",
                     "--default-addr-pool", _SWARM_POOL, "--task-history-limit", "1")
            token = m.docker("swarm", "join-token", "-q", "worker").strip()
            w.docker("swarm", "join", "--advertise-addr", w.address, "--listen-addr", f"{w.address}:2377",
                     "--token", token, f"{m.address}:2377")
            m.node_id = m.docker("info", "--format", "{{.Swarm.NodeID}}").strip()
            w.node_id = w.docker("info", "--format", "{{.Swarm.NodeID}}").strip()
            for node in self.nodes:
                # Both nodes see this machine's workspace and staging folder at the same paths.
                m.docker("node", "update", "--label-add", "scoperun.workspace=true",
                         "--label-add", "scoperun.staging=true", node.node_id)
            for image in images:
                self.load_image(image)
            self.wait_nodes_ready()
        except BaseException:
            self.stop()
            raise

    def wait_nodes_ready(self, timeout: float = 90) -> None:
        """Wait until the manager sees both nodes ready (a fresh worker is `unknown` for a moment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.manager.docker("node", "ls", "--format", "{{.Status}}/{{.Availability}}").split()
            if len(states) == 2 and all(s == "Ready/Active" for s in states):
                return
            time.sleep(0.5)
        raise RuntimeError(f"swarm nodes not ready within {timeout:g} s: {states}")

    def load_image(self, image: str) -> None:
        """Copy an image of the machine's main engine into both nodes (docker save | docker load)."""
        saved = self.base / "image.tar"
        subprocess.run(["docker", "save", "-o", str(saved), image], check=True, capture_output=True, timeout=600)
        try:
            for node in self.nodes:
                node.docker("load", "-i", str(saved), timeout=600)
        finally:
            saved.unlink(missing_ok=True)

    def _network(self) -> None:
        m, w = self.manager, self.worker
        for node in self.nodes:
            _ip("netns", "add", node.netns)
            _ip("-n", node.netns, "link", "set", "lo", "up")
        # Interface names live inside the namespaces, so they cannot clash with the host's.
        _ip("link", "add", "swarm-m0", "netns", m.netns, "type", "veth", "peer", "name", "swarm-w0", "netns", w.netns)
        for node, dev in ((m, "swarm-m0"), (w, "swarm-w0")):
            _ip("-n", node.netns, "addr", "add", f"{node.address}/30", "dev", dev)
            _ip("-n", node.netns, "link", "set", dev, "up")

    def stop(self) -> None:
        """Stop both engines, unmount what they left, delete namespaces, link and data roots."""
        for node in reversed(self.nodes):
            node.kill(signal.SIGTERM)
        for node in self.nodes:
            _unmount_below(node.root)
        for node in self.nodes:
            # Deleting a namespace deletes the veth pair inside it (both ends).
            subprocess.run(["ip", "netns", "delete", node.netns], capture_output=True, check=False)
        for node in self.nodes:
            sock = node.host.removeprefix("unix://")
            with contextlib.suppress(OSError):
                os.unlink(sock)
        shutil.rmtree(self.base, ignore_errors=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")


def _unmount_below(root: Path) -> None:
    """Lazily unmount every mount under `root` (the engine's overlays, netns files, shm), deepest first."""
    for point in mount_points_under(root):
        if point != root:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def leftovers(prefix: str) -> list[str]:
    """Namespaces or sockets of the local swarm named `prefix` that still exist (none after stop)."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    found += [line.split()[0] for line in netns.splitlines() if line.startswith(prefix + "-")]
    found += [str(p) for p in Path("/run").glob(f"{prefix}-*.sock")]
    return found


@contextlib.contextmanager
def local_swarm(images: tuple[str, ...] = (), prefix: str = "scoperun-test") -> Iterator[LocalSwarm]:
    """A started two-node swarm, stopped and removed on exit whatever happens.

    Names (namespaces, sockets) get a random suffix: several test sessions may run at once on one
    machine, and each must only ever create and delete its own."""
    prefix = f"{prefix}-{secrets.token_hex(3)}"
    swarm = LocalSwarm(Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/var/tmp")), prefix=prefix)
    swarm.start(images)
    try:
        yield swarm
    finally:
        swarm.stop()
