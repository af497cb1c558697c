"""Docker Swarm backend: each run is a one-shot swarm task on a node that has the workspace.

A run is a replicated service of one replica with restart condition `none`, constrained to
nodes labelled `scoperun.workspace=true` (every such node mounts the workspace at the same
path). Not a `replicated-job`: a job's task container outlives `service rm` on its node, while
a service's task containers are removed by the node's own agent when the service goes.

What the swarm API of engine 20.10 cannot express is enforced inside the task: the command is
wrapped so that `setpriv --no-new-privs` applies to everything the run starts, a node with swap
refuses to run (memory = memory+swap is not settable on a service; without swap it holds), and
an OOM kill is read from the task's own memory cgroup and reported with a per-run token.
`network none` is a per-run `--internal` overlay network with no other member (a service
cannot join the local `none` network). Output comes from `service logs` (stdout and stderr
read apart), kept by the engine in a size-capped json-file log.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoperun.engine.base import MANAGED_LABEL, BindMount, OverlayMount, RunOutcome, RunSpec
from scoperun.engine.capture import BoundedBuffer
from scoperun.engine.dockerops import scale_to_zero as _scale_to_zero
from scoperun.engine.dockerops import short
from scoperun.errors import EngineError, ImageError

if TYPE_CHECKING:
    import docker

__all__ = ["NODE_LABEL", "STAGING_LABEL", "SwarmBackend", "service_name"]

NODE_LABEL = "scoperun.workspace"  # =true on nodes that mount the workspace at the same path
STAGING_LABEL = "scoperun.staging"  # =true on nodes that share scoperun's host staging_dir (see deploy/SWARM.md)
_TERMINAL = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
_SCHEDULE_PATIENCE = 60.0  # seconds a task may wait for a node before the run is an error
_NODE_CHECK = 1.0  # seconds between checks that the task's node is still up
_POLL = 0.1

# Runs as PID 1 of the task, already under no-new-privileges (setpriv execs it). Not `exec`ing
# the script lets it read the memory cgroup's OOM counter once the script ended. The script runs
# as a background job with the real stderr on fd 3, so the shell's own "Killed" notice about a
# killed child goes to /dev/null instead of the run's stderr.
_GUARD = r"""t=$1; shift
m=/sys/fs/cgroup/memory
if ! grep -q '^SwapTotal: *0 ' /proc/meminfo && [ -r $m/memory.memsw.limit_in_bytes ] \
   && [ "$(cat $m/memory.memsw.limit_in_bytes)" != "$(cat $m/memory.limit_in_bytes)" ]; then
  echo "scoperun: this swarm node has swap and a service cannot set memory-swap equal to memory; \
turn swap off on the node (swapoff -a) or run with the docker backend" >&2
  exit 125
fi
exec 3>&2 2>/dev/null
( "$@" 2>&3 3>&- ) &
wait $!
s=$?
if [ $s -eq 137 ] && grep -q '^oom_kill [1-9]' $m/memory.oom_control; then
  printf 'scoperun-oom-%s\n' "$t" >&3
fi
exit $s
"""


def service_name(execution_id: str) -> str:
    """A valid service name for a run (no underscores in swarm names)."""
    return "scoperun-" + execution_id.replace("_", "-").lower()


class SwarmBackend:
    """Runs each spec as a one-shot task on a swarm, through a manager's engine API."""

    name = "swarm"

    def __init__(self, base_url: str | None = None, *, node_label: str = NODE_LABEL) -> None:
        self._base_url = base_url
        self._node_label = node_label
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoperun-swarm-reaper")
        self._nodes: dict[str, str] = {}  # node id -> hostname
        # Isolated networks (network none) whose last run has ended: reused one run at a time, since
        # creating an overlay network costs more than the run itself.
        self._idle_networks: list[str] = []

    @property
    def client(self) -> docker.DockerClient:
        """The manager's engine client, made on first use."""
        with self._lock:
            if self._client is None:
                from scoperun.engine.docker import connect

                self._client = connect(self._base_url)
            return self._client

    def node_name(self, node_id: str) -> str:
        """`hostname (id)` of a node, for messages."""
        if node_id not in self._nodes:
            from docker.errors import DockerException

            try:
                self._nodes[node_id] = self.client.api.inspect_node(node_id)["Description"]["Hostname"]
            except (DockerException, KeyError):
                return node_id
        return f"{self._nodes[node_id]} ({node_id[:12]})"

    # -- the contract -------------------------------------------------------------------------

    def start(self, spec: RunSpec) -> _SwarmRun:
        """Create the run's service (its task then starts on a node); EngineError if nothing was created."""
        from docker.errors import DockerException, ImageNotFound, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        if spec.runtime:
            raise EngineError(f"the swarm backend cannot choose the OCI runtime {spec.runtime!r} per run (engine 20.10): "
                              f"make it the nodes' default runtime and unset `runtime`, or use the docker backend")
        api = self.client.api
        outcome = RunOutcome(stdout=BoundedBuffer(spec.output_cap, spill_limit=spec.spill_limit),
                             stderr=BoundedBuffer(spec.output_cap, spill_limit=spec.spill_limit))
        try:
            outcome.image_id = api.inspect_image(spec.image)["Id"]
        except ImageNotFound:
            raise ImageError(f"image {spec.image} is not on the swarm manager. Build it (`scoperun image build`) and "
                             f"copy it to every node with `scoperun image push-nodes`.") from None
        except (DockerException, RequestsConnectionError) as exc:
            raise EngineError(f"the swarm manager failed to inspect image {spec.image}: {short(exc)}") from None

        t0 = time.monotonic()
        token = secrets.token_hex(8)
        staged = [m for m in spec.mounts if isinstance(m, OverlayMount)]
        merged = _mount_overlays(staged)  # on this host: staged runs go to nodes sharing its staging_dir
        network = None
        try:
            network = self._network(spec)
            try:
                service_id = self._create(spec, token, merged, network)
            except NotFound:
                if network == spec.network:
                    raise
                network = self._network(spec, pooled=False)  # a pooled network removed meanwhile (gc)
                service_id = self._create(spec, token, merged, network)
        except (DockerException, RequestsConnectionError) as exc:
            self._release(spec, merged, network)
            raise EngineError(f"the swarm manager refused the run's service: {short(exc)}") from None
        except BaseException:
            self._release(spec, merged, network)
            raise
        return _SwarmRun(self, spec, outcome, service_id, token, merged, network, t0)

    def run(self, spec: RunSpec) -> RunOutcome:
        """`start(spec).wait()`: the task to its end (or deadline), its logs, then nothing left."""
        return self.start(spec).wait()

    def _release(self, spec: RunSpec, merged: dict[str, Path], network: str | None, *, reuse: bool = False) -> None:
        _unmount_overlays(merged)
        if network is not None and network != spec.network:
            if reuse:
                with self._lock:
                    self._idle_networks.append(network)
            else:
                self._reaper.submit(self._remove_network, network)

    def close(self) -> None:
        """Finish background removals (idle isolated networks included) and drop the client."""
        with self._lock:
            idle, self._idle_networks = self._idle_networks, []
        for name in idle:
            self._reaper.submit(self._remove_network, name)
        self._reaper.shutdown(wait=True)
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoperun-swarm-reaper")
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    # -- steps --------------------------------------------------------------------------------

    def _network(self, spec: RunSpec, *, pooled: bool = True) -> str:
        """The run's network: `none` is an isolated network that no other live task is attached to."""
        if spec.network != "none":
            return spec.network  # bridge (each node's own) or a named swarm overlay network
        with self._lock:
            if pooled and self._idle_networks:
                return self._idle_networks.pop()
        name = f"scoperun-none-{secrets.token_hex(6)}"
        # Internal (no gateway, no route out) and given to one run at a time: its only interface leads nowhere.
        self.client.api.create_network(name, driver="overlay", internal=True, labels={MANAGED_LABEL: "1"})
        return name

    def _create(self, spec: RunSpec, token: str, merged: dict[str, Path], network: str) -> str:
        from docker.types import ContainerSpec, Mount, Placement, Resources, RestartPolicy, ServiceMode, TaskTemplate

        mounts = [Mount(target="/tmp", source=None, type="tmpfs", tmpfs_size=spec.tmp_size_bytes, tmpfs_mode=0o1777)]
        if spec.shm_size_bytes:
            mounts.append(Mount(target="/dev/shm", source=None, type="tmpfs", tmpfs_size=spec.shm_size_bytes,
                                tmpfs_mode=0o1777))
        for m in spec.mounts:
            if isinstance(m, OverlayMount):
                mounts.append(Mount(target=m.target, source=str(merged[m.target]), type="bind", read_only=m.read_only))
            elif isinstance(m, BindMount):
                mounts.append(Mount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only))
        labels = {MANAGED_LABEL: "1", "org.scoperun.execution-id": spec.execution_id,
                  "org.scoperun.deadline": str(int(time.time() + spec.timeout + _SCHEDULE_PATIENCE)), **spec.labels}
        container = ContainerSpec(
            image=spec.image,
            command=["setpriv", "--no-new-privs", "--", "sh", "-c", _GUARD, "scoperun-guard", token, *spec.command],
            workdir=spec.working_dir, env=spec.env, user=spec.user, hostname="scoperun", labels=labels,
            mounts=mounts, read_only=True, cap_drop=["ALL"], stop_grace_period=0, stop_signal="SIGKILL")
        container["Ulimits"] = [{"Name": "nofile", "Soft": spec.nofile, "Hard": spec.nofile},
                                *([{"Name": "fsize", "Soft": spec.fsize, "Hard": spec.fsize}] if spec.fsize else [])]
        resources = Resources(cpu_limit=int(spec.cpus * 1e9), mem_limit=spec.memory_bytes)
        resources["Limits"]["Pids"] = spec.pids_limit
        constraints = [f"node.labels.{self._node_label}==true"]
        if merged:
            constraints.append(f"node.labels.{STAGING_LABEL}==true")
        cap = max(spec.output_cap, spec.spill_limit)
        template = TaskTemplate(
            container, resources=resources, restart_policy=RestartPolicy(condition="none", max_attempts=0),
            placement=Placement(constraints=constraints), networks=[{"Target": network}],
            # Both streams share one file: room for each stream's kept bytes, and never more.
            log_driver={"Name": "json-file", "Options": {"max-size": str(2 * cap + 65536), "max-file": "2"}})
        service_id: str = self.client.api.create_service(template, name=service_name(spec.execution_id),
                                                         labels=labels, mode=ServiceMode("replicated", replicas=1))["ID"]
        return service_id

    def _follow(self, service_id: str, spec: RunSpec, outcome: RunOutcome, t0: float,
                cancelled: threading.Event) -> bool:
        """Poll the task until it ends; enforce the deadline; notice a node going down or a kill.

        True when the task's end was seen (nothing of it runs any more)."""
        api = self.client.api
        started: float | None = None
        killed_at: float | None = None
        next_node_check = 0.0
        while True:
            task = _task(api, service_id)
            now = time.monotonic()
            status = (task or {}).get("Status", {})
            state = status.get("State", "new")
            node_id = (task or {}).get("NodeID") or None
            if node_id:
                outcome.node = node_id
            if state == "running" and started is None:
                started = now
                outcome.container_start = started - t0
            if state in _TERMINAL:
                break
            if started is None and state not in ("running", "complete") and now - t0 > _SCHEDULE_PATIENCE:
                outcome.error = (f"no swarm node took the run within {_SCHEDULE_PATIENCE:g} s "
                                 f"({status.get('Err') or status.get('Message') or state}). Label a node that mounts "
                                 f"the workspace: `docker node update --label-add {self._node_label}=true NODE`.")
                return False
            if started is not None and killed_at is None and now - started >= spec.timeout:
                outcome.timed_out = True
                killed_at = now
                _scale_to_zero(api, service_id)
            if cancelled.is_set() and killed_at is None:
                killed_at = now  # `kill()` scaled the service to zero
                if started is None:
                    break  # never started: nothing to wait for
            if killed_at is not None and now - killed_at > 30:
                break  # the node never confirmed the kill; the service removal below ends it
            if node_id and now >= next_node_check:
                next_node_check = now + _NODE_CHECK
                if api.inspect_node(node_id)["Status"]["State"] == "down":
                    outcome.error = (f"swarm node {self.node_name(node_id)} went down during the run; the script may "
                                     f"not have finished. Check the node (`docker node ls`) and run it again.")
                    return False
            time.sleep(_POLL)
        ended_at = time.monotonic()
        if started is None:  # ended between two polls: it ran, but its start was not seen
            started = ended_at
            outcome.container_start = ended_at - t0
        outcome.run = ended_at - started
        if state == "rejected" or (state == "failed" and "non-zero exit" not in (status.get("Err") or "")):
            err = status.get("Err") or state
            hint = " Copy the image to every node: `scoperun image push-nodes`." if "image" in err.lower() else ""
            outcome.error = f"swarm node {self.node_name(node_id or '?')} could not start the run: {err}.{hint}"
            return True  # as before the rename of `ended_at` (a float, so always true here)
        if state == "orphaned":
            outcome.error = f"swarm node {self.node_name(node_id or '?')} lost the run's task; run it again."
            return False
        code = status.get("ContainerStatus", {}).get("ExitCode")
        # `shutdown`: killed by us (deadline, kill) or an operator's stop, never a clean end.
        outcome.exit_code = 137 if (killed_at is not None or state == "shutdown") and not code else code
        return True  # as before the rename of `ended_at` (a float, so always true here)

    def _read_logs(self, service_id: str, outcome: RunOutcome, token: str) -> None:
        api = self.client.api

        def frames(stream: str) -> Iterator[bytes]:  # lazy: stderr is asked for once stdout is read
            yield from api.service_logs(service_id, **{stream: True}, follow=False)

        take_logs(frames("stdout"), frames("stderr"), outcome, token)

    def _remove_service(self, service_id: str) -> bool:
        from docker.errors import DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        for _ in range(20):
            try:
                self.client.api.remove_service(service_id)
                return True
            except NotFound:
                return True
            except (DockerException, RequestsConnectionError):
                time.sleep(0.5)
        return False

    def _remove_network(self, name: str) -> None:
        from docker.errors import DockerException, NotFound

        for _ in range(60):  # in use until the node has detached the task's endpoint
            try:
                self.client.api.remove_network(name)
                return
            except NotFound:
                return
            except DockerException:
                time.sleep(0.5)


class _SwarmRun:
    """A created run service: `wait` follows its task to the end and removes it; `kill` ends it early."""

    def __init__(self, backend: SwarmBackend, spec: RunSpec, outcome: RunOutcome, service_id: str, token: str,
                 merged: dict[str, Path], network: str, t0: float) -> None:
        self.backend, self.spec, self.outcome = backend, spec, outcome
        self.service_id, self.token, self.merged, self.network, self.t0 = service_id, token, merged, network, t0
        self.cancelled = threading.Event()
        self.done = False

    def wait(self) -> RunOutcome:
        """Follow the task (deadline, node failure, kill), read its logs, remove service and leftovers."""
        from docker.errors import DockerException
        from requests.exceptions import ConnectionError as RequestsConnectionError

        if self.done:
            return self.outcome
        self.done = True
        backend, outcome = self.backend, self.outcome
        ended = False
        try:
            ended = backend._follow(self.service_id, self.spec, outcome, self.t0, self.cancelled)
            if outcome.error is None:
                backend._read_logs(self.service_id, outcome, self.token)
        except (DockerException, RequestsConnectionError) as exc:
            outcome.error = (f"lost the swarm manager during the run ({short(exc)}); the script may not have finished. "
                             f"Check the swarm with `scoperun doctor --backend swarm` and run it again.")
        finally:
            # Ctrl-C or a bug included: the service (and with it the task container) must go.
            removed = backend._remove_service(self.service_id)
            # The network goes back to the pool only once its task is surely over and gone.
            backend._release(self.spec, self.merged, self.network, reuse=ended and removed)
        return outcome

    def kill(self) -> None:
        """Kill the task now (service scaled to zero, SIGKILL); `wait` then returns (exit code 137)."""
        self.cancelled.set()
        _scale_to_zero(self.backend.client.api, self.service_id)


def take_logs(stdout: Iterable[bytes], stderr: Iterable[bytes], outcome: RunOutcome, token: str) -> None:
    """Put a finished task's log frames into the outcome; the guard's OOM line (with this run's token) at
    the end of stderr is cut and sets `oom_killed` (unless the run timed out)."""
    for frames, buf, marker in ((stdout, outcome.stdout, None), (stderr, outcome.stderr,
                                                                  f"scoperun-oom-{token}\n".encode())):
        held = b""  # the tail is held back until the end, where the OOM marker would be
        for frame in frames:
            held += frame
            if len(held) > 65536:
                buf.write(held[:-256])
                held = held[-256:]
        if marker is not None and held.endswith(marker):
            held = held[: -len(marker)]
            outcome.oom_killed = not outcome.timed_out
        buf.write(held)


def _task(api: Any, service_id: str) -> dict[str, Any] | None:
    tasks = api.tasks(filters={"service": service_id})
    # Only one task is ever made (restart none); the newest is the one that counts.
    return max(tasks, key=lambda t: t.get("CreatedAt", "")) if tasks else None


def _mount_overlays(staged: list[OverlayMount]) -> dict[str, Path]:
    """Mount each staged overlay on this host at <staging>/<id>/merged; return target -> merged path."""
    merged: dict[str, Path] = {}
    try:
        for m in staged:
            point = m.upper.parent / "merged"
            point.mkdir(mode=0o755, exist_ok=True)
            done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", m.options["o"], str(point)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise EngineError(f"cannot mount the staging overlay ({done.stderr.strip()}). Put staging_dir on a local "
                                  f"disk (ext4 or xfs) and run scoperun as root, or use write_mode direct.")
            merged[m.target] = point
    except BaseException:
        _unmount_overlays(merged)
        raise
    return merged


def _unmount_overlays(merged: dict[str, Path]) -> None:
    for point in merged.values():
        for _ in range(20):
            if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.25)  # busy while the node removes the task container
        else:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            point.rmdir()
