"""Helpers for testing code built on scoperun without a container engine.

`FakeBackend` honours the backend contract with scripted outcomes; use it for unit tests of
logic above the engine (the executor's pipeline, adapters). Integration tests use the real
engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from scoperun.engine.base import (
    BindMount,
    BuildEvent,
    ContainerInfo,
    EngineVersion,
    ImageInfo,
    NetworkInfo,
    OverlayMount,
    RunOutcome,
    RunSpec,
    VolumeInfo,
    VolumeRemoval,
)
from scoperun.engine.capture import BoundedBuffer
from scoperun.errors import EngineError

__all__ = ["FakeBackend", "FakeHandle", "FakeRun", "fake_records"]


@dataclass
class FakeRun:
    """What a fake run should report."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    timed_out: bool = False
    oom_killed: bool = False
    error: str | None = None
    sleep: float = 0.0
    writes: dict[str, bytes] = field(default_factory=dict)  # case-relative path -> content the "run" writes


def _carries(labels: dict[str, str], wanted: tuple[str, ...]) -> bool:
    """Whether `labels` has every `key` or `key=value` in `wanted` (the engine's label filter)."""
    for label in wanted:
        key, eq, value = label.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


@dataclass
class FakeBackend:
    """A backend that records specs and returns `script(spec)` (default: success, no output).

    It is also a scripted engine for housekeeping (EngineHousekeeping) and image builds (ImageBuilder):
    put containers, services, networks, volumes and images in its dicts; what ops, doctor, gc and
    builds did is left in them (and in `killed`, `stopped_services`, `builds`, `removed_images`). An id or name in `failing` makes the engine refuse that object;
    `unreachable` (a message) makes every housekeeping call fail as if the engine were down.
    """

    script: Callable[[RunSpec], FakeRun] = field(default=lambda spec: FakeRun())
    name: str = "fake"
    specs: list[RunSpec] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    closed: bool = False
    engine_containers: dict[str, ContainerInfo] = field(default_factory=dict)  # id -> container
    memory: dict[str, int] = field(default_factory=dict)  # container id -> bytes in use
    engine_services: dict[str, ContainerInfo] = field(default_factory=dict)  # id -> swarm service
    engine_networks: dict[str, NetworkInfo] = field(default_factory=dict)  # id -> network
    engine_volumes: dict[str, VolumeInfo] = field(default_factory=dict)  # housekeeping's view of volumes
    volumes_in_use: set[str] = field(default_factory=set)
    images: dict[str, ImageInfo] = field(default_factory=dict)  # tag (or id) -> what image_info reports
    # What a build reports (ImageBuilder.build_image); without an error the built image is then in `images`.
    build_events: list[BuildEvent] = field(default_factory=lambda: [
        BuildEvent(text="Step 1/9 : ARG BASE_IMAGE\n"), BuildEvent(image_id="sha256:new")])
    builds: list[dict[str, Any]] = field(default_factory=list)  # each build's tag, build_args, labels, context
    removed_images: list[str] = field(default_factory=list)
    version: EngineVersion = field(default_factory=lambda: EngineVersion("fake", "1.45", {"runc": "1.1.12"}))
    killed: list[str] = field(default_factory=list)  # container ids force_kill_container ended
    stopped_services: list[str] = field(default_factory=list)  # service ids stop_service scaled to zero
    failing: set[str] = field(default_factory=set)  # ids or names the engine refuses to act on
    unreachable: str | None = None  # every housekeeping call raises EngineError(unreachable)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, spec: RunSpec) -> FakeHandle:
        """Record `spec`, count it as running and decide its scripted outcome."""
        with self._lock:
            self.specs.append(spec)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            planned = self.script(spec)
        except BaseException:
            self._ended()
            raise
        return FakeHandle(self, spec, planned)

    def run(self, spec: RunSpec) -> RunOutcome:
        """`start(spec).wait()`."""
        return self.start(spec).wait()

    def _ended(self) -> None:
        with self._lock:
            self.running -= 1

    def close(self) -> None:
        """Mark the backend closed."""
        self.closed = True

    # -- housekeeping (EngineHousekeeping) ----------------------------------------------------

    def _engine(self, doing: str, *names: str) -> None:
        """Fail like the real engine would: down altogether, or refusing one of `names`."""
        if self.unreachable is not None:
            raise EngineError(self.unreachable)
        if self.failing & set(names):
            raise EngineError(f"the Docker engine failed to {doing} (refused); check it with `scoperun doctor`.")

    def containers(self, *labels: str, all_states: bool = False) -> list[ContainerInfo]:
        """The recorded containers carrying every label (running ones unless `all_states`)."""
        self._engine("list containers")
        return [c for c in self.engine_containers.values()
                if _carries(c.labels, labels) and (all_states or c.state == "running")]

    def container_memory(self, container_id: str) -> int | None:
        """The recorded memory of a container, or None."""
        return self.memory.get(container_id)

    def force_kill_container(self, container_id: str) -> bool:
        """Mark a recorded container exited (and note it in `killed`); False if unknown."""
        found = self.engine_containers.get(container_id)
        self._engine(f"kill container {container_id}", container_id, *([found.name] if found else []))
        if found is None:
            return False
        self.engine_containers[container_id] = ContainerInfo(found.id, found.name, "exited", found.created, found.labels)
        self.killed.append(container_id)
        return True

    def force_remove_container(self, container_id: str) -> bool:
        """Forget a recorded container; False if unknown."""
        found = self.engine_containers.get(container_id)
        self._engine(f"remove container {container_id}", container_id, *([found.name] if found else []))
        return self.engine_containers.pop(container_id, None) is not None

    def services(self, *labels: str) -> list[ContainerInfo]:
        """The recorded services carrying every label."""
        self._engine("list the swarm's services")
        return [s for s in self.engine_services.values() if _carries(s.labels, labels)]

    def stop_service(self, service_id: str) -> bool:
        """Note the service in `stopped_services`; False if unknown."""
        self._engine(f"stop service {service_id}", service_id)
        if service_id not in self.engine_services:
            return False
        self.stopped_services.append(service_id)
        return True

    def remove_service(self, service_id: str) -> bool:
        """Forget a recorded service; False if unknown."""
        self._engine(f"remove service {service_id}", service_id)
        return self.engine_services.pop(service_id, None) is not None

    def networks(self, *labels: str) -> list[NetworkInfo]:
        """The recorded networks carrying every label."""
        self._engine("list networks")
        return [n for n in self.engine_networks.values() if _carries(n.labels, labels)]

    def remove_network(self, network_id: str) -> bool:
        """Forget a recorded network; False if unknown."""
        self._engine(f"remove network {network_id}", network_id)
        return self.engine_networks.pop(network_id, None) is not None

    def volumes(self, *labels: str) -> list[VolumeInfo]:
        """The recorded volumes carrying every label."""
        self._engine("list volumes")
        return [v for v in self.engine_volumes.values() if _carries(v.labels, labels)]

    def remove_volume(self, name: str) -> VolumeRemoval:
        """Forget volume `name` unless it is in use."""
        self._engine(f"remove volume {name}", name)
        if name in self.volumes_in_use:
            return "in use"
        return "removed" if self.engine_volumes.pop(name, None) is not None else "gone"

    def engine_version(self) -> EngineVersion:
        """The scripted engine version."""
        self._engine("report its version")
        return self.version

    def image_info(self, tag: str) -> ImageInfo | None:
        """The recorded image `tag`, or None."""
        self._engine(f"inspect image {tag}")
        return self.images.get(tag)

    def build_image(self, context: BinaryIO, *, tag: str, build_args: dict[str, str],
                    labels: dict[str, str]) -> Iterator[BuildEvent]:
        """Record the build and play `build_events`; a build without an error leaves image `tag`."""
        self._engine(f"build image {tag}", tag)
        self.builds.append({"tag": tag, "build_args": dict(build_args), "labels": dict(labels),
                            "context": context.read()})
        built = None
        for event in self.build_events:
            if event.error is not None:
                yield event
                return
            built = event.image_id or built
            yield event
        image_id = built or "sha256:built"
        self.images[tag] = ImageInfo(image_id, image_id.removeprefix("sha256:")[:10], dict(labels), (tag,))

    def remove_image(self, image_id: str) -> bool:
        """Forget the recorded image with this id (noted in `removed_images`); False if unknown or tagged."""
        self._engine(f"remove image {image_id}", image_id)
        keys = [k for k, v in self.images.items() if v.id == image_id or k == image_id]
        if not keys or any(self.images[k].tags for k in keys):
            return False
        for k in keys:
            del self.images[k]
        self.removed_images.append(image_id)
        return True


class FakeHandle:
    """A fake started run: `wait` plays the scripted outcome; `kill` cuts its sleep short (exit 137)."""

    def __init__(self, backend: FakeBackend, spec: RunSpec, planned: FakeRun) -> None:
        self.backend = backend
        self.spec = spec
        self.planned = planned
        self.killed = threading.Event()
        self._done = False

    def wait(self) -> RunOutcome:
        """Write the scripted files, sleep (unless killed) and return the scripted outcome."""
        spec, planned = self.spec, self.planned
        if self._done:
            raise RuntimeError("FakeHandle.wait() called twice")
        self._done = True
        try:
            _write_case(spec, planned.writes)
            if spec.on_output is not None:  # live output is "printed" before the sleep
                for stream, data in (("stdout", planned.stdout), ("stderr", planned.stderr)):
                    if data:
                        spec.on_output(stream, data)
            if planned.sleep:
                self.killed.wait(planned.sleep)
            outcome = RunOutcome(stdout=BoundedBuffer(spec.output_cap, spill_limit=spec.spill_limit),
                                 stderr=BoundedBuffer(spec.output_cap, spill_limit=spec.spill_limit))
            outcome.stdout.write(planned.stdout)
            outcome.stderr.write(planned.stderr)
            outcome.exit_code = 137 if self.killed.is_set() else planned.exit_code
            outcome.timed_out = planned.timed_out
            outcome.oom_killed = planned.oom_killed
            outcome.error = planned.error
            outcome.image_id = "sha256:fake"
            return outcome
        finally:
            self.backend._ended()

    def kill(self) -> None:
        """End the fake run now."""
        self.killed.set()


_FAKE_STATUSES = ("succeeded",) * 90 + ("failed",) * 5 + ("timed_out", "oom_killed", "error", "rejected", "running")


def fake_records(count: int, *, seed: int = 0, now: float | None = None, span_days: float = 30.0,
                 cases: int = 40, scripts: int = 12) -> list[dict[str, Any]]:
    """`count` audit records in the plan's format (scoperun's fields too), spread over `span_days`.

    Deterministic for a seed; for statistics tests, benchmarks and docs examples.
    """
    import random
    from datetime import UTC, datetime

    rng = random.Random(seed)
    now = time.time() if now is None else now
    records: list[dict[str, Any]] = []
    for i in range(count):
        status = rng.choice(_FAKE_STATUSES)
        started = now - rng.random() * span_days * 86400
        start = 0.0 if status == "rejected" else round(rng.uniform(0.2, 1.5), 3)
        run = 0.0 if status == "rejected" else round(rng.expovariate(1 / 8.0), 3)
        total = round(start + run + 0.05, 3)
        finished = status != "running"
        stamp = datetime.fromtimestamp(started, UTC)
        execution_id = f"exec_{stamp:%Y%m%d_%H%M%S}_{i:08x}"
        records.append({
            "timestamp": stamp.isoformat(), "execution_id": execution_id,
            "case_name": f"Case-{rng.randrange(cases):03d}-MVA-2024", "script_path": f"Tools/tool_{rng.randrange(scripts)}.py",
            "exit_code": {"succeeded": 0, "failed": 1, "timed_out": 137, "oom_killed": 137}.get(status),
            "stdout_length": rng.randrange(10_000), "stderr_length": rng.randrange(500),
            "success": status == "succeeded", "record_version": 1, "status": status, "message": status,
            "started_at": stamp.isoformat(),
            "finished_at": datetime.fromtimestamp(started + total, UTC).isoformat() if finished else None,
            "duration": total if finished else None,
            "durations": {"queue_wait": 0.0, "container_start": start, "run": run, "total": total} if finished else None,
            "args": [], "working_dir": "", "requested_by": "fake", "image": "scoperun-runner:latest", "image_id": None,
            "limits": {"timeout": 300.0, "memory": "1g", "cpus": 0.5, "pids_limit": 256}, "network": "bridge",
            "read_only": False, "env_names": [], "script_sha256": None, "stdout_truncated": False,
            "stderr_truncated": False, "findings": [], "host": "fake-host", "pid": 1,
        })
    return records


def _write_case(spec: RunSpec, writes: dict[str, bytes]) -> None:
    """Write into the case's writable layer: the overlay's upper folder, or a read-write bind mount."""
    if not writes:
        return
    case = next(m for m in spec.mounts if m.target == spec.working_dir or spec.working_dir.startswith(m.target + "/"))
    if isinstance(case, BindMount) and case.read_only:
        return
    root = case.upper if isinstance(case, OverlayMount) else case.source
    for rel, data in writes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
