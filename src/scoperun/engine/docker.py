"""Docker engine backend: one fresh, hardened, labelled container per run, through docker-py.

Output is read from an attach stream opened before the container starts (nothing is lost,
stdout and stderr stay apart) and the engine keeps no log of its own (log driver `none`), so
an output flood fills neither scoperun's memory nor the host's disk.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from scoperun.engine.afterwork import Lull, UsedContainers
from scoperun.engine.attached import AttachedRun, drain
from scoperun.engine.base import MANAGED_LABEL, OverlayMount, RunOutcome, RunSpec
from scoperun.engine.capture import BoundedBuffer
from scoperun.engine.connection import connect
from scoperun.engine.dockerops import DockerHousekeeping, lost_engine, short
from scoperun.engine.launched import LAUNCHER_LABEL, LaunchedRun, close_attach_socket, launcher_command
from scoperun.errors import EngineError, ImageError

if TYPE_CHECKING:
    import docker

    from scoperun.engine.pool import PoolOptions, WarmPool
    from scoperun.engine.prestart import Prestarter

__all__ = ["DockerBackend", "connect"]

_ENGINE_PATIENCE = 120.0  # seconds to wait for a lost engine to come back and remove a run's container


class DockerBackend(DockerHousekeeping):
    """Runs each spec in a fresh container on one Docker engine (and does its housekeeping: EngineHousekeeping)."""

    name = "docker"

    def __init__(self, base_url: str | None = None, *, remove_in_background: bool = True,
                 pool: PoolOptions | None = None, timeout: float | None = 60) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        # Attach streams need a client without a read timeout: a script may be silent for minutes.
        self._stream_client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._remove_in_background = remove_in_background
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoperun-reaper")
        self._pending: set[Any] = set()
        self._images: dict[str, tuple[float, dict[str, Any]]] = {}
        self.lull = Lull()  # runs in flight: the pool's replacements and used containers' ends wait for a lull
        self.used = UsedContainers(self.lull, close_attach_socket, self._confirm_removed)
        self.pool: WarmPool | Prestarter | None = None
        if pool is not None and pool.size > 0:
            from scoperun.engine.prestart import warm_pool

            self.pool = warm_pool(self, pool)  # slots with a root controller, else pre-started containers

    @property
    def client(self) -> docker.DockerClient:
        """The engine client, made on first use (never at import)."""
        with self._lock:
            if self._client is None:
                self._client = connect(self._base_url, timeout=self._timeout)
            return self._client

    @property
    def stream_client(self) -> docker.DockerClient:
        """A second client, without read timeout, for output streams."""
        with self._lock:
            if self._stream_client is None:
                self._stream_client = connect(self._base_url, timeout=None)
            return self._stream_client

    # -- the contract -------------------------------------------------------------------------

    def start(self, spec: RunSpec) -> AttachedRun | LaunchedRun:
        """Create one container, attach to its output, start it. Raise EngineError only if nothing started."""
        self.lull.begin()
        try:
            run = self._start(spec)
        except BaseException:
            self.lull.end()
            raise
        run.on_done = self.lull.end
        return run

    def _start(self, spec: RunSpec) -> AttachedRun | LaunchedRun:
        from docker.errors import APIError, DockerException, ImageNotFound, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        api = self.client.api
        outcome = RunOutcome(stdout=BoundedBuffer(spec.output_cap, spill_limit=spec.spill_limit),
                             stderr=BoundedBuffer(spec.output_cap, spill_limit=spec.spill_limit))
        known = self._images.get(spec.image)
        if self.pool is not None and known is not None and _has_launcher(known[1]):
            # A warm container holds the image it was made from (its id goes in the record): the pooled
            # path needs no image lookup on the engine. A miss looks the image up as below.
            pooled = self.pool.claim(spec, outcome)
            if pooled is not None:
                return pooled
        try:
            image = self._image(spec.image)
            outcome.image_id = image["Id"]
        except ImageNotFound:
            raise ImageError(
                f"image {spec.image} is not on this engine. Build it with `scoperun image build` "
                f"(or `make image`)."
            ) from None
        except (DockerException, RequestsConnectionError) as exc:
            raise EngineError(f"the Docker engine failed to inspect image {spec.image}: {exc}") from None

        launcher = _has_launcher(image)
        if launcher and self.pool is not None and known is None:
            pooled = self.pool.claim(spec, outcome)
            if pooled is not None:
                return pooled
        t0 = time.monotonic()
        volumes = self._create_volumes(spec)  # staged runs: one overlay volume each, removed after the run
        if launcher:
            return self._start_launched(spec, outcome, volumes, t0)
        kwargs = self._create_kwargs(spec, volumes)
        container_id = self._create(kwargs, spec, volumes)
        run = AttachedRun(self, spec, container_id, volumes, outcome)
        try:
            stream = self.stream_client.api.attach(container_id, stdout=True, stderr=True, stream=True, demux=True)
            run.reader = threading.Thread(target=drain, args=(stream, outcome, spec.on_output), daemon=True,
                                          name=f"scoperun-out-{spec.execution_id}")
            run.reader.start()
            try:
                api.start(container_id)
            except NotFound as exc:  # e.g. the named network does not exist
                outcome.error = _explain_not_found(spec, exc)
                return run
            except APIError as exc:
                text = str(exc).lower()
                if volumes and "mount" in text:
                    outcome.error = (f"the engine could not mount the staging overlay ({short(exc)}). Put "
                                     f"staging_dir on a local disk (ext4 or xfs), or run with write_mode direct.")
                    return run
                if "oci runtime" in text or "chdir" in text or "cwd" in text:
                    # The engine answered: the runtime refused to start this container (e.g. its working
                    # folder changed under it). The engine is fine; the script never ran.
                    outcome.error = f"the container could not start; the script never ran ({short(exc)})"
                    return run
                raise
            run.started = time.monotonic()
            outcome.container_start = run.started - t0
        except (APIError, RequestsConnectionError, DockerException) as exc:
            outcome.error = lost_engine(exc)
        except BaseException:
            # Ctrl-C or a bug in scoperun: the container must not outlive us.
            self._remove(container_id)
            self._remove_volumes(volumes)
            run.done = True
            raise
        return run

    def run(self, spec: RunSpec) -> RunOutcome:
        """Create, start, wait (bounded by the timeout), inspect and remove one container."""
        outcome = self.start(spec).wait()
        outcome.result_returned()
        return outcome

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait for background engine work (removals, the pool's replacements); False if still busy."""
        deadline = time.monotonic() + timeout
        if self.pool is not None and not self.pool.settle(timeout):
            return False
        if not self.used.settle(max(0.0, deadline - time.monotonic())):
            return False
        for removal in list(self._pending):
            try:
                removal.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                return False
        return True

    def _image(self, name: str) -> dict[str, Any]:
        """The image's inspect data, cached for a few seconds (a rebuilt tag is seen within them)."""
        now = time.monotonic()
        hit = self._images.get(name)
        if hit is not None and now - hit[0] < 5.0:
            return hit[1]
        data: dict[str, Any] = self.client.api.inspect_image(name)
        self._images[name] = (now, data)
        return data

    def _start_launched(self, spec: RunSpec, outcome: RunOutcome, volumes: dict[str, str], t0: float) -> LaunchedRun:
        """A fresh container whose launcher gets the request (and the secrets) on stdin, never in its config."""
        from docker.errors import APIError, DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        api = self.client.api
        kwargs = self._create_kwargs(spec, volumes)
        kwargs.update(command=launcher_command(spec.timeout + 60), environment={}, stdin_open=True)
        sock = None
        container_id = self._create(kwargs, spec, volumes)
        try:
            sock = self.stream_client.api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            try:
                api.start(container_id)
            except NotFound as exc:  # e.g. the named network does not exist
                outcome.error = _explain_not_found(spec, exc)
            except APIError as exc:
                if not volumes or "mount" not in str(exc).lower():
                    raise
                outcome.error = (f"the engine could not mount the staging overlay ({short(exc)}). Put staging_dir "
                                 f"on a local disk (ext4 or xfs), or run with write_mode direct.")
            started = time.monotonic()
            outcome.container_start = started - t0
            run = LaunchedRun(self, spec, container_id, sock, outcome, volumes=volumes, started=started)
            if outcome.error is None:
                run.send()
            else:
                run.done = True
                close_attach_socket(sock)
                self.remove_container(container_id, volumes, inline=True)
            return run
        except (APIError, RequestsConnectionError, DockerException, OSError) as exc:
            outcome.error = lost_engine(exc)
            close_attach_socket(sock)
            self.remove_container(container_id, volumes, inline=True)
            run = LaunchedRun(self, spec, container_id, None, outcome, volumes=volumes, started=time.monotonic())
            run.done = True
            return run
        except BaseException:
            close_attach_socket(sock)
            self._remove(container_id)
            self._remove_volumes(volumes)
            raise

    # -- what launched runs and the pool ask of the engine -----------------------------------

    def kill_container(self, container_id: str) -> None:
        """SIGKILL a container; gone already is fine."""
        from docker.errors import DockerException
        from requests.exceptions import ConnectionError as RequestsConnectionError

        try:
            self.client.api.kill(container_id)
        except (DockerException, RequestsConnectionError):
            pass

    def judge(self, container_id: str, patience: float) -> tuple[int | None, bool, str | None]:
        """(exit code, OOM-killed, error) as the engine reports the container's end."""
        from docker.errors import DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import ReadTimeout

        api = self.client.api
        try:
            code = api.wait(container_id, timeout=patience)["StatusCode"]
        except NotFound:
            # Removed already (a pooled container removes itself on exit): its launcher ended without
            # its end line, which only a kill does.
            return 137, False, None
        except (ReadTimeout, RequestsConnectionError, DockerException) as exc:
            return None, False, lost_engine(exc)
        try:
            oom = bool(api.inspect_container(container_id)["State"].get("OOMKilled"))
        except (DockerException, RequestsConnectionError):
            oom = False  # removed already (a pooled container removes itself): the exit code stands
        return code, oom, None

    def remove_container(self, container_id: str, volumes: dict[str, str], *,
                         inline: bool) -> Future[object] | None:
        """Remove a run's container (in the background unless `inline`), then its staging volumes.

        Returns the background removal, if there is one, so the caller can wait for the container to go.
        """
        if not inline and self._remove_in_background and not volumes:
            removal: Future[object] = self._reaper.submit(self._remove, container_id)
            self._track(removal)
            return removal
        if not self._remove(container_id):
            # The engine is gone (e.g. restarted): removed once it answers again. Not returned: a
            # run's slot is not held for the engine's return.
            self._track(self._reaper.submit(self._remove_later, container_id, volumes))
            return None
        self._remove_volumes(volumes)
        return None

    def close(self) -> None:
        """End used pooled containers, remove the warm pool, wait for background removals, drop the client."""
        self.used.close()
        if self.pool is not None:
            self.pool.close()
        self._reaper.shutdown(wait=True)
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoperun-reaper")
        with self._lock:
            for client in (self._client, self._stream_client):
                if client is not None:
                    client.close()
            self._client = self._stream_client = None

    # -- helpers ------------------------------------------------------------------------------

    def _create(self, kwargs: dict[str, Any], spec: RunSpec, volumes: dict[str, str]) -> str:
        """Create the run's container; EngineError (its volumes removed) when the engine refuses."""
        from docker.errors import DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        try:
            return str(self.client.api.create_container(**kwargs)["Id"])
        except NotFound as exc:
            self._remove_volumes(volumes)
            raise EngineError(_explain_not_found(spec, exc)) from None
        except (DockerException, RequestsConnectionError) as exc:
            self._remove_volumes(volumes)
            raise EngineError(f"the Docker engine refused to create the container: {short(exc)}") from None
        except BaseException:
            # Ctrl-C while the engine was creating it: the container may exist although its id never
            # came back. Its name is known, so it is removed by name (else it stays `Created`, and the
            # record would wrongly say it was removed).
            self._remove(kwargs["name"])
            self._remove_volumes(volumes)
            raise

    def _track(self, work: Future[object]) -> None:
        """Keep background work in `_pending` until it ends (so `settle` can wait for it)."""
        self._pending.add(work)
        work.add_done_callback(self._pending.discard)

    def _create_volumes(self, spec: RunSpec) -> dict[str, str]:
        """Create a labelled local overlay volume per OverlayMount; return target -> volume name."""
        from docker.errors import DockerException
        from requests.exceptions import ConnectionError as RequestsConnectionError

        volumes: dict[str, str] = {}
        for i, m in enumerate(x for x in spec.mounts if isinstance(x, OverlayMount)):
            name = f"scoperun-stage-{spec.execution_id}" + (f"-{i}" if i else "")
            try:
                self.client.volumes.create(name=name, driver="local", driver_opts=dict(m.options), labels={
                    MANAGED_LABEL: "1", "org.scoperun.execution-id": spec.execution_id,
                    "org.scoperun.staging-upper": str(m.upper), **spec.labels})
            except (DockerException, RequestsConnectionError) as exc:
                self._remove_volumes(volumes)
                raise EngineError(f"the Docker engine refused to create the staging volume: {short(exc)}") from None
            except BaseException:
                # Ctrl-C while the engine was creating it: it may exist although no answer came back.
                self._remove_volumes({**volumes, m.target: name})
                raise
            volumes[m.target] = name
        return volumes

    def _remove_later(self, container_id: str, volumes: dict[str, str]) -> None:
        if self._remove(container_id, _ENGINE_PATIENCE):
            self._remove_volumes(volumes)

    def _remove_volumes(self, volumes: dict[str, str]) -> None:
        from docker.errors import DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        for name in volumes.values():
            for _ in range(20):
                try:
                    self.client.api.remove_volume(name, force=True)
                    break
                except NotFound:
                    break
                except (DockerException, RequestsConnectionError):
                    time.sleep(0.25)  # still in use while the engine finishes removing the container

    def _create_kwargs(self, spec: RunSpec, volumes: dict[str, str] | None = None) -> dict[str, Any]:
        from docker.types import LogConfig, Mount, Ulimit

        api = self.client.api
        volumes = volumes or {}
        mounts = [Mount(target=m.target, source=volumes[m.target], type="volume", no_copy=True)
                  if isinstance(m, OverlayMount) else
                  Mount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only)
                  for m in spec.mounts]
        host_config = api.create_host_config(
            mounts=mounts,
            network_mode=spec.network,
            mem_limit=spec.memory_bytes,
            memswap_limit=spec.memory_bytes,  # equal: no swap, so the limit is real
            nano_cpus=int(spec.cpus * 1e9),
            pids_limit=spec.pids_limit,
            ulimits=[Ulimit(name="nofile", soft=spec.nofile, hard=spec.nofile),
                     *([Ulimit(name="fsize", soft=spec.fsize, hard=spec.fsize)] if spec.fsize else [])],
            devices=[],  # no host device; the engine's default /dev (null, zero, random, tty...) only
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", *([f"seccomp={spec.seccomp}"] if spec.seccomp else [])],
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={spec.tmp_size_bytes},mode=1777"},
            log_config=LogConfig(type="none"),
            runtime=spec.runtime,
            ipc_mode="private",
            shm_size=spec.shm_size_bytes,
        )
        return {
            "image": spec.image,
            "command": list(spec.command),
            "working_dir": spec.working_dir,
            "environment": spec.env,
            "user": spec.user,
            "labels": {MANAGED_LABEL: "1", "org.scoperun.execution-id": spec.execution_id,
                       "org.scoperun.deadline": str(int(time.time() + spec.timeout)), **spec.labels},
            "name": f"scoperun-{spec.execution_id}",
            "host_config": host_config,
            "network_disabled": spec.network == "none",
            "hostname": "scoperun",
            "stdin_open": False,
            "tty": False,
        }

    def _confirm_removed(self, container_ids: list[str]) -> None:
        """Wait for ended pooled containers to be gone (they remove themselves); force-remove any left."""
        from docker.errors import DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import ReadTimeout

        for container_id in container_ids:
            try:
                self.client.api.wait(container_id, timeout=10, condition="removed")
            except NotFound:
                continue  # gone already
            except (ReadTimeout, RequestsConnectionError, DockerException):
                if not self._remove(container_id):
                    self._track(self._reaper.submit(self._remove_later, container_id, {}))

    def _remove(self, container_id: str, patience: float = 1.5) -> bool:
        """Force-remove a container, retrying for `patience` seconds; True once it is gone."""
        from docker.errors import DockerException, NotFound
        from requests.exceptions import ConnectionError as RequestsConnectionError

        deadline = time.monotonic() + patience
        while True:
            try:
                self.client.api.remove_container(container_id, force=True, v=True)
                return True
            except NotFound:
                return True
            except (DockerException, RequestsConnectionError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)


def _has_launcher(image: dict[str, Any]) -> bool:
    """True when the image's PID 1 is scoperun's launcher (its label says so)."""
    return bool(((image.get("Config") or {}).get("Labels") or {}).get(LAUNCHER_LABEL))


def _explain_not_found(spec: RunSpec, exc: BaseException) -> str:
    text = str(exc)
    if "network" in text.lower():
        return (f"Docker network {spec.network!r} does not exist. Use bridge or none, or create it "
                f"with `docker network create {spec.network}`.")
    return f"the Docker engine could not find something the run needs: {short(exc)}"
