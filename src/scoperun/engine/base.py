"""The one small contract every engine implements: start one fully described container, then wait for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from scoperun.engine.capture import BoundedBuffer

__all__ = ["EXECUTION_ID_LABEL", "MANAGED_LABEL", "STAGING_UPPER_LABEL", "WORKSPACE_LABEL", "Backend", "BindMount",
           "BuildEvent", "ContainerInfo", "EngineHousekeeping", "EngineVersion", "ImageBuilder", "ImageInfo", "NetworkInfo", "OverlayMount",
           "RunHandle", "RunOutcome", "RunSpec", "VolumeInfo", "VolumeRemoval"]

# Every container scoperun makes carries this label; operations act on it and on nothing else.
MANAGED_LABEL = "org.scoperun.managed"
EXECUTION_ID_LABEL = "org.scoperun.execution-id"  # the run a container, service or staging volume serves
WORKSPACE_LABEL = "org.scoperun.workspace"  # the workspace (resolved path) whose run it is
STAGING_UPPER_LABEL = "org.scoperun.staging-upper"  # a staging volume's upper folder on the host


@dataclass(frozen=True)
class BindMount:
    """A host path made visible in the container; always built through the engine's mount API."""

    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class OverlayMount:
    """The case as an overlay: reads come from `lower`, every write is staged in `upper` (host paths).

    `options` are the engine's local-volume driver options that mount it; the backend makes a
    labelled volume from them for the run and removes it (unmounting the overlay) before returning.
    """

    lower: Path
    upper: Path
    work: Path
    target: str
    options: dict[str, str]
    read_only: bool = False


@dataclass(frozen=True)
class RunSpec:
    """Everything a backend needs; the executor has already checked every path in it."""

    execution_id: str
    image: str
    command: tuple[str, ...]
    working_dir: str
    mounts: tuple[BindMount | OverlayMount, ...]
    env: dict[str, str]
    user: str
    timeout: float
    memory_bytes: int
    cpus: float
    pids_limit: int
    nofile: int
    tmp_size_bytes: int
    network: str
    output_cap: int
    runtime: str | None = None
    fsize: int | None = None  # largest file the run may write, bytes (RLIMIT_FSIZE)
    shm_size_bytes: int | None = None  # /dev/shm size; None = the engine's default (64m)
    labels: dict[str, str] = field(default_factory=dict)
    spill_limit: int = 0  # keep up to this many bytes of an over-cap stream on local disk (BoundedBuffer)
    seccomp: str | None = None  # seccomp profile (JSON text); None = the engine's default profile
    # Live output: called with ("stdout" | "stderr", raw bytes) for each chunk as it is read, from the
    # backend's reader thread; it must not block (it must not raise either; errors are ignored).
    on_output: Callable[[str, bytes], None] | None = field(default=None, compare=False, repr=False)


@dataclass
class RunOutcome:
    """What the engine reported. Output is raw bytes; the executor redacts it."""

    stdout: BoundedBuffer
    stderr: BoundedBuffer
    exit_code: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    image_id: str | None = None
    container_start: float = 0.0
    run: float = 0.0
    error: str | None = None  # the engine failed mid-run; the message says what to do
    exit_source: str = "engine"  # who gave exit_code: "launcher" (the tagged end line) or "engine" (wait/inspect)
    pooled: bool = False  # served by a warm container from the pool
    node: str | None = None  # the swarm node that ran it (swarm backend); None on a single engine
    # The container's removal, when it goes on in the background after the result: the executor
    # holds the run's slot until it ends, so the engine never holds more than max_concurrent runs.
    removal: Future[object] | None = None
    # Background engine work kept off the run's path until its result is returned (the pool's
    # replacement of the container it used): whoever returns the result calls it, once.
    after_result: Callable[[], None] | None = None

    def result_returned(self) -> None:
        """The run's result is out: start the background work that was kept off its path."""
        work, self.after_result = self.after_result, None
        if work is not None:
            work()


@runtime_checkable
class RunHandle(Protocol):
    """One started container: `wait` for its end (exactly once), or `kill` it from any thread."""

    def wait(self) -> RunOutcome:
        """Collect output until the container ends or its timeout; the container is removed after."""
        ...

    def kill(self) -> None:
        """End the run now (e.g. a cancellation); a pending `wait` then returns the outcome."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Runs one container per spec and removes it, whatever happens."""

    name: str

    def start(self, spec: RunSpec) -> RunHandle:
        """Create and start the container for `spec`. Raise EngineError only if nothing started;
        a failure after that is the handle's outcome (`RunOutcome.error`)."""
        ...

    def run(self, spec: RunSpec) -> RunOutcome:
        """`start(spec).wait()`: run `spec` to the end (or its timeout)."""
        ...

    def close(self) -> None:
        """Finish background clean-up and release connections."""
        ...


@dataclass(frozen=True)
class VolumeInfo:
    """A volume on the engine, as housekeeping sees it."""

    name: str
    labels: dict[str, str]
    created: float | None = None  # epoch seconds; None when the engine does not say


# What became of a volume removal: done, refused because a container still uses it, or nothing to remove.
VolumeRemoval = Literal["removed", "in use", "gone"]


@dataclass(frozen=True)
class ContainerInfo:
    """One of scoperun's containers (or, on a swarm manager, a run's service) as ps, stop and gc see it."""

    id: str
    name: str  # without the engine's leading "/"
    state: str  # running, exited, created, ... (a service: running)
    created: float  # epoch seconds
    labels: dict[str, str]
    service: bool = False  # a swarm service (its task runs on some node), not a container


@dataclass(frozen=True)
class NetworkInfo:
    """A network on the engine, as housekeeping sees it."""

    id: str
    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class EngineVersion:
    """The engine's version, API version and component versions (e.g. {"runc": "1.1.12"})."""

    version: str
    api_version: str
    components: dict[str, str]


@dataclass(frozen=True)
class ImageInfo:
    """An image present on the engine."""

    id: str
    short_id: str
    labels: dict[str, str]
    tags: tuple[str, ...] = ()  # repository tags; none for a build's intermediate step images


@dataclass(frozen=True)
class BuildEvent:
    """One message of an image build: a log text, the id of the image built, or the error that ended it."""

    text: str | None = None
    image_id: str | None = None
    error: str | None = None


@runtime_checkable
class ImageBuilder(Protocol):
    """What image builds need from the engine (local images only: it never pulls); errors are EngineError."""

    def image_info(self, tag: str) -> ImageInfo | None:
        """The image `tag` (or id), or None if the engine does not have it."""
        ...

    def build_image(self, context: BinaryIO, *, tag: str, build_args: dict[str, str],
                    labels: dict[str, str]) -> Iterator[BuildEvent]:
        """Build `tag` from a tar build context (never pulling its base; no intermediate container left)."""
        ...

    def remove_image(self, image_id: str) -> bool:
        """Remove an image (and its untagged parents); False if it is gone or others still need it."""
        ...


@runtime_checkable
class EngineHousekeeping(Protocol):
    """What ops, doctor and change clean-up need from the engine besides runs.

    Labels are given as `key` or `key=value` (all must match). Engine failures are EngineError.
    """

    def containers(self, *labels: str, all_states: bool = False) -> list[ContainerInfo]:
        """The containers carrying every label; running ones only unless `all_states`."""
        ...

    def container_memory(self, container_id: str) -> int | None:
        """Memory a container uses now (page cache excluded), or None if the engine cannot say."""
        ...

    def force_kill_container(self, container_id: str) -> bool:
        """SIGKILL a container; False if it is already gone."""
        ...

    def force_remove_container(self, container_id: str) -> bool:
        """Force-remove a container with its anonymous volumes; False if it is already gone."""
        ...

    def services(self, *labels: str) -> list[ContainerInfo]:
        """The swarm services carrying every label (`service=True`; the engine must be a swarm manager)."""
        ...

    def stop_service(self, service_id: str) -> bool:
        """End a service's task now (scaled to zero, its logs kept); False if the service is gone."""
        ...

    def remove_service(self, service_id: str) -> bool:
        """Remove a service; False if it is already gone."""
        ...

    def networks(self, *labels: str) -> list[NetworkInfo]:
        """The networks carrying every label."""
        ...

    def remove_network(self, network_id: str) -> bool:
        """Remove a network; False if it is in use or already gone."""
        ...

    def volumes(self, *labels: str) -> list[VolumeInfo]:
        """The volumes carrying every label."""
        ...

    def remove_volume(self, name: str) -> VolumeRemoval:
        """Remove a volume: "removed", "in use" (a container still uses it) or "gone" (nothing to remove)."""
        ...

    def engine_version(self) -> EngineVersion:
        """The engine's versions (EngineError if it cannot be reached)."""
        ...

    def image_info(self, tag: str) -> ImageInfo | None:
        """The image `tag`, or None if the engine does not have it."""
        ...
