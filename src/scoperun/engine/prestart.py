"""Without slots (no root controller): keep the next container of a case pre-started with its mounts.

After a run, one container for the next run of the same shape (image, user, limits, network,
runtime, seccomp, workspace, case and the SAME mounts: the case bind, Tools read-only) is created
and started in the background, hardened exactly like a fresh one, its launcher (PID 1) waiting on
stdin. The next run of that shape claims it: memory, CPUs and pids are fitted with `docker update`,
its script is copied into a folder of that container's own, mounted read-only at the script's
folder, and the request (with the secrets) goes on stdin. Anything else that differs means fresh.
Each serves one run and is destroyed after it (ended with other used pooled containers in the next
lull: engine.afterwork; only its launcher is left in it by then). Staged runs are left out (`_shape`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from scoperun.engine import slots
from scoperun.engine.base import WORKSPACE_LABEL, BindMount, OverlayMount, RunOutcome, RunSpec
from scoperun.engine.launched import LaunchedRun, close_attach_socket
from scoperun.engine.pool import WORKSPACE, PoolEngine, PoolOptions, WarmPool, leftover_roots
from scoperun.engine.warm import fit_limits, rename_quietly, settled, start_waiting

__all__ = ["Prestarter", "clean_leftover_prestart", "warm_pool"]

CASE_LABEL = "org.scoperun.case"
_EXPIRY_MARGIN = 10.0  # seconds before its launcher's own idle exit that a container is no longer handed out
_FILES_PREFIX = "prestart-"


def warm_pool(backend: PoolEngine, options: PoolOptions) -> WarmPool | Prestarter:
    """Slots when this controller can mount (root, and slots not turned off); else pre-started containers."""
    if options.slots and slots.usable() is None:
        return WarmPool(backend, options)
    return Prestarter(backend, options)


def _inside(path: PurePosixPath, other: PurePosixPath) -> bool:
    return path == other or other in path.parents


def _shape(spec: RunSpec) -> tuple[Any, ...] | None:
    """What a pre-started container must share with a run, mounts included exactly (None: never pre-start).

    Read-only single-file binds (the script) are not part of a container: each is copied at claim
    time into the container's own folder mounted at the file's folder, so only that folder counts.
    Staged runs (an overlay) are left out: the overlay's upper and work folders are named after the
    run and fixed when the engine mounts it at start, staged changes need a root controller to be
    read anyway, and a case changing under an overlay mounted long before its run is undefined.
    """
    binds: list[tuple[str, str, bool]] = []
    folders: set[PurePosixPath] = set()
    for m in spec.mounts:
        target = PurePosixPath(m.target)
        if isinstance(m, OverlayMount) or target == WORKSPACE or WORKSPACE not in target.parents:
            return None
        try:
            mode = os.lstat(m.source).st_mode
        except OSError:
            return None
        if stat.S_ISREG(mode) and m.read_only:
            folders.add(target.parent)
        elif stat.S_ISDIR(mode):
            binds.append((str(m.source), m.target, m.read_only))
        else:
            return None
    for folder in folders:  # a files folder must neither cover another mount nor sit inside one
        if any(_inside(PurePosixPath(t), folder) or _inside(folder, PurePosixPath(t)) for _, t, _ in binds):
            return None
    seccomp = hashlib.sha256(spec.seccomp.encode()).hexdigest() if spec.seccomp else None
    return (spec.image, spec.user, spec.nofile, spec.fsize, spec.tmp_size_bytes, spec.shm_size_bytes, spec.network,
            spec.runtime, seccomp, spec.labels.get(WORKSPACE_LABEL), spec.labels.get(CASE_LABEL),
            tuple(sorted(binds)), tuple(sorted(str(f) for f in folders)))


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@dataclass
class _Ready:
    container_id: str
    sock: Any
    files: Path  # host folder of this container's own (copied) files
    folders: dict[str, Path]  # container folder -> host folder under `files`, mounted read-only there
    sources: dict[str, tuple[int, int]]  # bind source -> (device, inode) it had when the container was made
    made: float
    memory: int
    cpus: float
    pids: int
    image_id: str | None = None


@dataclass
class Prestarter:
    """One pre-started container per shape of run (at most `size` in all, the oldest evicted first)."""

    backend: PoolEngine
    options: PoolOptions
    problem: str | None = None  # the same attribute as WarmPool's: nothing stops this path
    made: int = 0  # containers prepared, for tests and benchmarks
    _idle: dict[tuple[Any, ...], _Ready] = field(default_factory=dict)
    _making: set[tuple[Any, ...]] = field(default_factory=set)
    _closed: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoperun-prestart")

    # -- taking one -----------------------------------------------------------------------------

    def claim(self, spec: RunSpec, outcome: RunOutcome) -> LaunchedRun | None:
        """The pre-started container of `spec`'s shape, its files placed and its request sent; None: go fresh.

        Either way, once the run's result is returned the next container of this shape is prepared.
        """
        if self._closed:
            return None
        key = _shape(spec)
        if key is None:
            return None
        template = replace(spec, env={}, on_output=None)  # no secrets and no listener kept past the run
        outcome.after_result = lambda: self.prepare(key, template)
        t0 = time.monotonic()
        ready = self._take(key)
        if ready is None:
            return None
        try:
            if any(_identity(Path(src)) != ident for src, ident in ready.sources.items()):
                raise OSError("a mounted folder was replaced since the container was made")
            self._fit_limits(ready, spec)
            self._place_files(ready, spec)
            outcome.container_start = time.monotonic() - t0
            outcome.image_id = ready.image_id
            run = LaunchedRun(self.backend, spec, ready.container_id, ready.sock, outcome, started=time.monotonic(),
                              pooled=True, after=lambda: _remove_files(ready.files))
            run.send()
            # Named after its run (off the run's path) so `ps` and `stop` find it like a fresh one.
            self.backend._reaper.submit(rename_quietly, self.backend, ready.container_id,
                                       f"scoperun-{spec.execution_id}")
            return run
        except Exception:
            self._discard(ready)
            return None

    def _take(self, key: tuple[Any, ...]) -> _Ready | None:
        with self._lock:
            ready = self._idle.pop(key, None)
        if ready is not None and time.monotonic() - ready.made >= self.options.idle - _EXPIRY_MARGIN:
            self._discard(ready)
            return None
        return ready

    def _fit_limits(self, ready: _Ready, spec: RunSpec) -> None:
        if (ready.memory, ready.cpus, ready.pids) != (spec.memory_bytes, spec.cpus, spec.pids_limit):
            fit_limits(self.backend, ready.container_id, spec)
            ready.memory, ready.cpus, ready.pids = spec.memory_bytes, spec.cpus, spec.pids_limit

    @staticmethod
    def _place_files(ready: _Ready, spec: RunSpec) -> None:
        """Copy the run's single-file mounts (its script) into the container's own read-only folders."""
        for m in spec.mounts:
            target = PurePosixPath(m.target)
            folder = ready.folders.get(str(target.parent))
            if isinstance(m, OverlayMount) or not m.read_only or folder is None:
                continue  # a folder bind of the shape, mounted when the container was made
            src = os.open(m.source, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                st = os.fstat(src)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(f"{m.source} is no longer a regular file")
                mode = stat.S_IMODE(st.st_mode) & 0o777
                dst = os.open(folder / target.name,
                              os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    while chunk := os.read(src, 1 << 20):
                        os.write(dst, chunk)
                    os.fchmod(dst, mode)
                finally:
                    os.close(dst)
            finally:
                os.close(src)

    # -- filling --------------------------------------------------------------------------------

    def prepare(self, key: tuple[Any, ...], spec: RunSpec) -> None:
        """Start preparing the container for the next run of `key` (nothing if one is ready or being made)."""
        with self._lock:
            if self._closed or key in self._idle or key in self._making:
                return
            self._making.add(key)
        try:
            self._worker.submit(self._make, key, spec)
        except RuntimeError:  # closed meanwhile
            with self._lock:
                self._making.discard(key)

    def _make(self, key: tuple[Any, ...], spec: RunSpec) -> None:
        try:
            if self._closed:
                return
            # Create + start is the engine's heaviest work: it waits (boundedly) for runs in flight.
            self.backend.lull.wait(stop=lambda: self._closed)
            if self._closed:
                return
            with self._lock:  # room for this one: the oldest other shapes' containers go
                evicted = []
                while self._idle and len(self._idle) + 1 > max(self.options.size, 1):
                    oldest = min(self._idle, key=lambda k: self._idle[k].made)
                    evicted.append(self._idle.pop(oldest))
            for ready in evicted:
                self._discard(ready)
            ready = self._create(spec)
            with self._lock:
                kept = not self._closed and key not in self._idle
                if kept:
                    self._idle[key] = ready
            if not kept:
                self._discard(ready)
        except Exception:
            pass
        finally:
            with self._lock:
                self._making.discard(key)

    def _create(self, spec: RunSpec) -> _Ready:
        """Create and start one container like a fresh one for `spec`, its launcher waiting on stdin."""
        token = secrets.token_hex(6)
        files = self.options.root / f"{_FILES_PREFIX}{token}"
        files.mkdir(parents=True, mode=0o755)
        folders: dict[str, Path] = {}
        mounts: list[BindMount | OverlayMount] = []
        sources: dict[str, tuple[int, int]] = {}
        try:
            for m in spec.mounts:
                target = PurePosixPath(m.target)
                if isinstance(m, OverlayMount):
                    raise ValueError("staged runs are never pre-started")
                if m.read_only and not _is_folder(m.source):  # the last run's script: may be gone by now
                    if str(target.parent) not in folders:
                        folder = files / str(len(folders))
                        folder.mkdir(mode=0o755)
                        folder.chmod(0o755)  # whatever the umask: the container user reads it
                        folders[str(target.parent)] = folder
                        mounts.append(BindMount(folder, str(target.parent), read_only=True))
                else:
                    sources[str(m.source)] = _identity(m.source)
                    mounts.append(m)
            return self._start(spec, files, folders, mounts, sources)
        except BaseException:
            _remove_files(files)
            raise

    def _start(self, spec: RunSpec, files: Path, folders: dict[str, Path], mounts: list[BindMount | OverlayMount],
               sources: dict[str, tuple[int, int]]) -> _Ready:
        kept = (WORKSPACE_LABEL, CASE_LABEL)
        template = replace(spec, mounts=tuple(mounts), env={}, working_dir="/",
                           labels={k: v for k, v in spec.labels.items() if k in kept})
        container_id, sock, image_id = start_waiting(
            self.backend, template, name=f"scoperun-pool-{files.name.removeprefix(_FILES_PREFIX)}",
            owner=self.options.owner, idle=self.options.idle)
        if any(_identity(Path(src)) != ident for src, ident in sources.items()):
            close_attach_socket(sock)
            self.backend.remove_container(container_id, {}, inline=True)
            raise OSError("a mounted folder was replaced while the container was made")
        self.made += 1
        return _Ready(container_id, sock, files, folders, sources, time.monotonic(), spec.memory_bytes, spec.cpus,
                      spec.pids_limit, image_id)

    def _discard(self, ready: _Ready) -> None:
        close_attach_socket(ready.sock)
        self.backend.remove_container(ready.container_id, {}, inline=False)
        _remove_files(ready.files)

    # -- ending ---------------------------------------------------------------------------------

    def settle(self, timeout: float) -> bool:
        """Wait until no container is being prepared (False: still busy after `timeout` seconds)."""
        return settled(self._busy, timeout)

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._making)

    def idle_count(self) -> int:
        """Pre-started containers waiting now."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Stop preparing, remove every idle container and this process's files."""
        with self._lock:
            self._closed = True
            idle = list(self._idle.values())
            self._idle.clear()
        self._worker.shutdown(wait=True)
        for ready in idle:
            close_attach_socket(ready.sock)
            self.backend.remove_container(ready.container_id, {}, inline=True)
            _remove_files(ready.files)
        clean_leftover_prestart(self.options.root.parent, only=self.options.root)


def _remove_files(files: Path) -> None:
    """Remove a container's own files folder: regular files and folders two levels deep, nothing else."""
    try:
        folders = list(files.iterdir())
    except OSError:
        return
    for folder in folders:
        try:
            for entry in folder.iterdir():
                if entry.is_file() and not entry.is_symlink():
                    entry.unlink()
            folder.rmdir()
        except OSError:
            pass
    try:
        files.rmdir()
    except OSError:
        pass


def clean_leftover_prestart(pool_dir: Path, *, only: Path | None = None) -> list[str]:
    """Remove pre-started containers' files folders under `pool_dir` whose owner process is gone (or `only`)."""
    done: list[str] = []
    for root in leftover_roots(pool_dir, only=only):
        if slots.mounts_under(root):
            continue  # a root pool's slots: theirs to clean (never delete below a mount)
        for files in sorted(root.glob(f"{_FILES_PREFIX}*")):
            _remove_files(files)
            done.append(str(files))
        try:
            root.rmdir()
        except OSError:
            pass
    return done
