"""Background engine work waits for a lull: runs in flight first, bounded waits, used containers ended together."""

from __future__ import annotations

import threading
import time

from scoperun.engine.afterwork import Lull, UsedContainers


def test_lull_waits_while_a_run_is_in_flight_and_for_the_quiet_after_it() -> None:
    """`wait` returns only once no run has been in flight for the quiet time."""
    lull = Lull()
    lull.begin()
    done = threading.Event()
    threading.Thread(target=lambda: (lull.wait(quiet=0.1, most=10), done.set()), daemon=True).start()
    assert not done.wait(0.3), "returned while a run was in flight"
    ended = time.monotonic()
    lull.end()
    assert done.wait(5)
    assert time.monotonic() - ended >= 0.09


def test_lull_wait_is_bounded_and_can_be_stopped() -> None:
    """A run that never ends delays background work by `most` at most; `stop` ends the wait at once."""
    lull = Lull()
    lull.begin()
    t = time.monotonic()
    lull.wait(quiet=0.1, most=0.3)
    assert 0.25 <= time.monotonic() - t < 3
    t = time.monotonic()
    lull.wait(quiet=0.1, most=30, stop=lambda: True)
    assert time.monotonic() - t < 1
    assert lull.running == 1


def test_end_never_goes_below_zero() -> None:
    """An extra `end` (a run told twice) does not make a later run look finished."""
    lull = Lull()
    lull.end()
    lull.begin()
    assert lull.running == 1


class _Recorder:
    def __init__(self) -> None:
        self.closed: list[object] = []
        self.confirmed: list[list[str]] = []

    def close(self, sock: object) -> None:
        self.closed.append(sock)

    def confirm(self, ids: list[str]) -> None:
        self.confirmed.append(list(ids))


def test_used_containers_are_ended_together_in_the_lull() -> None:
    """Containers added during a burst are held, then ended in one batch (sockets closed first)."""
    lull, rec = Lull(), _Recorder()
    used = UsedContainers(lull, rec.close, rec.confirm)
    lull.begin()
    used.add("a", "sock-a")
    used.add("b", "sock-b")
    time.sleep(0.3)
    assert rec.closed == [] and used.held() == 2
    lull.end()
    assert used.settle(10)
    assert rec.closed == ["sock-a", "sock-b"] and rec.confirmed == [["a", "b"]]
    assert used.held() == 0
    used.close()


def test_too_many_held_are_ended_without_a_lull() -> None:
    """The held count is bounded: past it, used containers are ended even while runs go on."""
    lull, rec = Lull(), _Recorder()
    used = UsedContainers(lull, rec.close, rec.confirm, most_held=3)
    lull.begin()
    for name in "abc":
        used.add(name, name)
    assert used.settle(5), "three held (the bound) were not ended while a run was in flight"
    assert sorted(x for batch in rec.confirmed for x in batch) == ["a", "b", "c"]
    used.close()


def test_close_ends_everything_held_at_once() -> None:
    """close() ends held containers without waiting for a lull that may never come."""
    lull, rec = Lull(), _Recorder()
    used = UsedContainers(lull, rec.close, rec.confirm)
    lull.begin()
    used.add("a", "sock-a")
    t = time.monotonic()
    used.close()
    assert time.monotonic() - t < 2
    assert rec.closed == ["sock-a"] and used.held() == 0


def test_a_failing_confirm_does_not_lose_the_count() -> None:
    """If confirming fails, the batch no longer counts as held (settle does not hang)."""
    lull = Lull()

    def boom(ids: list[str]) -> None:
        raise RuntimeError("engine gone")

    used = UsedContainers(lull, lambda sock: None, boom)
    used.add("a", None)
    assert used.settle(5)
    used.close()
