"""Warm one-run containers: hardened like fresh ones, started ahead of need, each serving one run.

A pooled container is created and started with the full hardening of a fresh one, its launcher
(PID 1) waiting on stdin, and an empty slot at /workspace (rslave). A run takes one: the host
mounts the run's case (a bind, or the staged overlay) and script into the slot, fits the memory,
CPU and process limits with `docker update` (exact for those; anything else that differs means the
run starts fresh), and sends the launcher its request. After the run the container is destroyed,
never reused (ended with others in the next lull: engine.afterwork); a replacement is prepared in
the background, also in a lull. Slots need a root controller (host
mounts); without one, or when nothing is warm, runs take the fresh path.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from scoperun.engine import slots
from scoperun.engine.afterwork import Lull
from scoperun.engine.base import BindMount, OverlayMount, RunOutcome, RunSpec
from scoperun.engine.launched import LaunchedRun, close_attach_socket
from scoperun.engine.warm import POOL_LABEL, WarmEngine, fit_limits, rename_quietly, settled, start_waiting

__all__ = ["POOL_LABEL", "PoolEngine", "PoolOptions", "WarmPool", "clean_leftover_slots", "leftover_roots", "owner_alive"]

WORKSPACE = PurePosixPath("/workspace")
_EXPIRY_MARGIN = 10.0  # seconds before its launcher's own idle exit that a warm container is no longer handed out


@dataclass(frozen=True)
class PoolOptions:
    """How many warm containers to keep per kind of run, how long one may wait, where slots live."""

    size: int
    idle: float
    root: Path  # host-local folder of this process's slots (made rshared)
    owner: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    slots: bool = True  # False: no slot mounts even as root; the next container of a case is pre-started (engine.prestart)


class PoolEngine(WarmEngine, Protocol):
    """What the pool asks of the backend that owns it (DockerBackend); the pool never imports it."""

    _reaper: ThreadPoolExecutor  # background work off the run's path (unmounts, renames)
    lull: Lull  # runs in flight: a replacement waits for a moment without any

    def kill_container(self, container_id: str) -> None: ...

    def judge(self, container_id: str, patience: float) -> tuple[int | None, bool, str | None]: ...


@dataclass
class _Warm:
    container_id: str
    sock: Any
    slot: Path
    made: float
    memory: int
    cpus: float
    pids: int
    image_id: str | None = None  # the image it was made from (a tag may point elsewhere by now)


def _shape(spec: RunSpec) -> tuple[Any, ...] | None:
    """What a warm container must share with a run (None: this run cannot use the pool).

    Memory, CPUs and pids are left out: `docker update` sets them exactly at claim time.
    """
    statics = []
    for m in spec.mounts:
        target = PurePosixPath(m.target)
        if target == WORKSPACE or WORKSPACE not in target.parents:
            return None  # something outside the slot: only a fresh container can have it
        if target == WORKSPACE / "Tools":
            if not isinstance(m, BindMount) or not m.read_only:
                return None
            statics.append((str(m.source), m.target))
    return (spec.image, spec.user, spec.nofile, spec.fsize, spec.tmp_size_bytes, spec.shm_size_bytes, spec.network,
            spec.runtime, spec.labels.get("org.scoperun.workspace"), tuple(statics))


class WarmPool:
    """Warm containers per shape of run, filled in the background by one worker."""

    def __init__(self, backend: PoolEngine, options: PoolOptions) -> None:
        self.backend = backend
        self.options = options
        self.problem = slots.usable()  # why pooled slots cannot work here (then: always fresh)
        self._lock = threading.Lock()
        self._idle: dict[tuple[Any, ...], list[_Warm]] = {}
        self._wanted: dict[tuple[Any, ...], RunSpec] = {}
        self._making: dict[tuple[Any, ...], int] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoperun-pool")
        self._root_ready = False
        self._closed = False
        self.made = 0  # containers prepared, for tests and benchmarks

    # -- taking one -----------------------------------------------------------------------------

    def claim(self, spec: RunSpec, outcome: RunOutcome) -> LaunchedRun | None:
        """A warm container for `spec` with the run's mounts in its slot and its request sent; None: go fresh."""
        if self._closed or self.problem is not None:
            return None
        key = _shape(spec)
        if key is None:
            return None
        t0 = time.monotonic()
        warm = self._take(key)
        if warm is None:
            self._top_up(key, spec)  # nothing warm: this run goes fresh, replacements start now
            return None
        # The replacement (create + start, the engine's heaviest work) would compete with this run
        # for the cores: it starts once the run's result is returned.
        outcome.after_result = lambda: self._top_up(key, spec)
        mounted: list[Path] = []
        try:
            self._fit_limits(warm, spec)
            mounted = self._mount(warm.slot, spec)
            outcome.container_start = time.monotonic() - t0
            outcome.image_id = warm.image_id
            overlays = [p for p, m in zip(mounted, self._run_mounts(spec), strict=True) if isinstance(m, OverlayMount)]

            def after() -> None:
                # A staged run's overlay goes now (its changes are read next); the rest off the run's path.
                for point in overlays:
                    slots.unmount(point)
                self.backend._reaper.submit(self._unmount, list(mounted), warm.slot)

            run = LaunchedRun(self.backend, spec, warm.container_id, warm.sock, outcome, started=time.monotonic(),
                              pooled=True, after=after)
            run.send()
            # Named after its run (off the run's path) so `ps` and `stop` find it like a fresh one.
            self.backend._reaper.submit(rename_quietly, self.backend, warm.container_id,
                                       f"scoperun-{spec.execution_id}")
            return run
        except Exception:
            self._unmount(mounted, warm.slot)
            self._discard(warm)
            return None

    def _take(self, key: tuple[Any, ...]) -> _Warm | None:
        now = time.monotonic()
        expired = []
        found = None
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                warm = idle.pop(0)
                if now - warm.made < self.options.idle - _EXPIRY_MARGIN:
                    found = warm
                    break
                expired.append(warm)
        for warm in expired:
            self._discard(warm)
        return found

    def _fit_limits(self, warm: _Warm, spec: RunSpec) -> None:
        if (warm.memory, warm.cpus, warm.pids) != (spec.memory_bytes, spec.cpus, spec.pids_limit):
            fit_limits(self.backend, warm.container_id, spec)
            warm.memory, warm.cpus, warm.pids = spec.memory_bytes, spec.cpus, spec.pids_limit

    @staticmethod
    def _run_mounts(spec: RunSpec) -> list[BindMount | OverlayMount]:
        """The run's own mounts (all but Tools, which the container has), outermost first."""
        return [m for m in sorted(spec.mounts, key=lambda m: len(PurePosixPath(m.target).parts))
                if PurePosixPath(m.target) != WORKSPACE / "Tools"]

    def _mount(self, slot: Path, spec: RunSpec) -> list[Path]:
        """The run's own mounts into its slot; the points made, in the order of `_run_mounts`."""
        mounted: list[Path] = []
        try:
            for m in self._run_mounts(spec):
                rel = PurePosixPath(m.target).relative_to(WORKSPACE)
                point = slot.joinpath(*rel.parts)
                point.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                if isinstance(m, OverlayMount):
                    point.mkdir(mode=0o755)
                    slots.mount_overlay(m.options["o"], point)
                else:
                    if m.source.is_dir():
                        point.mkdir(mode=0o755)
                    else:
                        point.touch(mode=0o644, exist_ok=False)
                    slots.bind(m.source, point, read_only=m.read_only)
                mounted.append(point)
        except BaseException:
            self._unmount(mounted, slot)
            raise
        return mounted

    def _unmount(self, mounted: list[Path], slot: Path) -> None:
        """Detach the run's mounts (from the container too: unmounts propagate), then drop the slot."""
        for point in reversed(mounted):
            slots.unmount(point)
        mounted.clear()
        if not slots.mounts_under(slot):  # never walk a slot that still holds a mount: it could be a case
            _remove_empty_tree(slot)

    # -- filling --------------------------------------------------------------------------------

    def _top_up(self, key: tuple[Any, ...], spec: RunSpec) -> None:
        with self._lock:
            if self._closed:
                return
            self._wanted.setdefault(key, spec)
            have = len(self._idle.get(key, [])) + self._making.get(key, 0)
            need = self.options.size - have
            self._making[key] = self._making.get(key, 0) + max(need, 0)
        for _ in range(max(need, 0)):
            self._worker.submit(self._make, key)

    def _make(self, key: tuple[Any, ...]) -> None:
        try:
            if self._closed:
                return
            # Create + start is the engine's heaviest work: it waits (boundedly) for runs in flight,
            # unless nothing of this kind is warm any more (the next such run would start fresh).
            self.backend.lull.wait(stop=lambda: self._closed or self._none_warm(key))
            if self._closed:
                return
            warm = self._create(self._wanted[key])
            kept = False
            with self._lock:
                if not self._closed:
                    self._idle.setdefault(key, []).append(warm)
                    kept = True
            if not kept:
                self._discard(warm)
        except Exception:
            pass
        finally:
            with self._lock:
                self._making[key] -= 1

    def _none_warm(self, key: tuple[Any, ...]) -> bool:
        with self._lock:
            return not self._idle.get(key)

    def _ensure_root(self) -> None:
        if not self._root_ready:
            slots.make_shared_root(self.options.root)
            self._root_ready = True

    def _create(self, spec: RunSpec) -> _Warm:
        """Create and start one warm container like a fresh one for `spec`, but with an empty slot."""
        from docker.types import Mount

        self._ensure_root()
        token = secrets.token_hex(6)
        slot = self.options.root / f"slot-{token}"
        slot.mkdir(mode=0o755)
        statics = tuple(m for m in spec.mounts if PurePosixPath(m.target) == WORKSPACE / "Tools")
        for m in statics:  # the slot is read-only inside: the engine cannot make these mount points itself
            slot.joinpath(*PurePosixPath(m.target).relative_to(WORKSPACE).parts).mkdir(parents=True, mode=0o755)
        template = replace(spec, mounts=statics, env={}, working_dir=str(WORKSPACE),
                           labels={k: v for k, v in spec.labels.items() if k == "org.scoperun.workspace"})
        slot_mount = Mount(target=str(WORKSPACE), source=str(slot), type="bind", read_only=True, propagation="rslave")
        container_id, sock, image_id = start_waiting(self.backend, template, name=f"scoperun-pool-{token}",
                                                     owner=self.options.owner, idle=self.options.idle,
                                                     extra_mounts=(slot_mount,))
        self.made += 1
        return _Warm(container_id, sock, slot, time.monotonic(), spec.memory_bytes, spec.cpus, spec.pids_limit,
                     image_id)

    def _discard(self, warm: _Warm) -> None:
        close_attach_socket(warm.sock)
        self.backend.remove_container(warm.container_id, {}, inline=False)

    # -- ending ---------------------------------------------------------------------------------

    def settle(self, timeout: float) -> bool:
        """Wait until no replacement is being prepared (False: still busy after `timeout` seconds)."""
        return settled(self._busy, timeout)

    def _busy(self) -> bool:
        with self._lock:
            return any(self._making.values())

    def idle_count(self) -> int:
        """Warm containers waiting now."""
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        """Stop filling, remove every idle container, unmount and remove this process's slots."""
        with self._lock:
            self._closed = True
            idle = [w for ws in self._idle.values() for w in ws]
            self._idle.clear()
        self._worker.shutdown(wait=True)
        for warm in idle:
            close_attach_socket(warm.sock)
            self.backend.remove_container(warm.container_id, {}, inline=True)
        if self._root_ready:
            clean_leftover_slots(self.options.root.parent, only=self.options.root)


def owner_alive(owner: str) -> bool:
    """True when the pool's owner ("host:pid") may still run: another host, or a live pid here."""
    host, _, pid = owner.rpartition(":")
    if host != os.uname().nodename or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_roots(pool_dir: Path, *, only: Path | None = None) -> list[Path]:
    """The per-process folders ("<pid>-...") under `pool_dir` whose process here is gone; just `only` if given."""
    if not pool_dir.is_dir():
        return []
    found = []
    for root in sorted(pool_dir.iterdir()):
        pid = root.name.split("-", 1)[0]
        if root == only or (only is None and pid.isdigit() and not owner_alive(f"{os.uname().nodename}:{pid}")):
            found.append(root)
    return found


def clean_leftover_slots(pool_dir: Path, *, only: Path | None = None) -> list[str]:
    """Unmount and remove slot folders under `pool_dir` whose owner process is gone (or `only`)."""
    done: list[str] = []
    for root in leftover_roots(pool_dir, only=only):
        for point in slots.mounts_under(root):
            try:
                slots.unmount(point)
                done.append(str(point))
            except OSError:
                pass
        if slots.mounts_under(root):
            continue  # never delete below a mount: it could be a case
        _remove_empty_tree(root)
    return done


def _remove_empty_tree(root: Path) -> None:
    """Remove mount-point folders and empty files only; anything with content stays (and is reported by gc)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if path.lstat().st_size == 0:
                    path.unlink()
            except OSError:
                pass
        for name in dirnames:
            try:
                (Path(dirpath) / name).rmdir()
            except OSError:
                pass
    try:
        root.rmdir()
    except OSError:
        pass
