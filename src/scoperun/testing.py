"""Helpers for testing code built on scoperun without a container engine.

`FakeBackend` honours the backend contract with scripted outcomes; use it for unit tests of
logic above the engine (the executor's pipeline, adapters). Integration tests use the real
engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .backends.base import BindMount, OverlayMount, RunOutcome, RunSpec
from .output import BoundedBuffer

__all__ = ["FakeBackend", "FakeRun"]


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


@dataclass
class FakeBackend:
    """A backend that records specs and returns `script(spec)` (default: success, no output)."""

    script: Callable[[RunSpec], FakeRun] = field(default=lambda spec: FakeRun())
    name: str = "fake"
    specs: list[RunSpec] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, spec: RunSpec) -> RunOutcome:
        """Record `spec`, track concurrency and return the scripted outcome."""
        with self._lock:
            self.specs.append(spec)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            planned = self.script(spec)
            _write_case(spec, planned.writes)
            if planned.sleep:
                time.sleep(planned.sleep)
            outcome = RunOutcome(stdout=BoundedBuffer(spec.output_cap), stderr=BoundedBuffer(spec.output_cap))
            outcome.stdout.write(planned.stdout)
            outcome.stderr.write(planned.stderr)
            outcome.exit_code = planned.exit_code
            outcome.timed_out = planned.timed_out
            outcome.oom_killed = planned.oom_killed
            outcome.error = planned.error
            outcome.image_id = "sha256:fake"
            return outcome
        finally:
            with self._lock:
                self.running -= 1

    def close(self) -> None:
        """Mark the backend closed."""
        self.closed = True


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
