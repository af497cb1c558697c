"""The service's pure parts: the fair queue, the idempotency store, the event log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from scoperun.service.events import EventLog, read_events
from scoperun.service.idempotency import IdempotencyStore, fingerprint, parse_key
from scoperun.service.problems import Problem
from scoperun.service.queue import FairQueue


def test_queue_is_fair_across_callers_and_fifo_per_caller() -> None:
    """With one slot, a's burst of three and b's one run are served a1, b1, a2, a3."""

    async def scenario() -> list[str]:
        q = FairQueue(max_concurrent=1, max_queue=10)
        first = q.enter("a", "a0")
        tickets = [q.enter("a", "a1"), q.enter("a", "a2"), q.enter("b", "b1"), q.enter("a", "a3")]
        assert [q.position(t) for t in tickets] == [0, 2, 1, 3]
        order: list[str] = []
        current = first
        for _ in tickets:
            q.leave(current, duration=1.0)
            current = next(t for t in tickets if t.granted.done() and t.execution_id not in order)
            order.append(current.execution_id)
        q.leave(current)
        assert q.running == 0 and q.peak_running == 1
        return order

    assert asyncio.run(scenario()) == ["a1", "b1", "a2", "a3"]


def test_queue_order_is_the_order_slots_are_granted_in() -> None:
    """`order()` (what positions are read from) predicts the grants exactly, through arrivals and a cancel."""

    async def scenario() -> None:
        q = FairQueue(max_concurrent=1, max_queue=20)
        holder = q.enter("a", "hold")
        waiting = [q.enter(c, f"{c}{i}") for c, i in (("a", 1), ("a", 2), ("b", 1), ("c", 1), ("a", 3), ("b", 2))]
        q.leave(waiting[1])  # a2 cancelled while waiting
        predicted = [t.execution_id for t in q.order()]
        assert predicted == ["a1", "b1", "c1", "a3", "b2"]
        assert [q.position(t) for t in q.order()] == list(range(5)) and q.position(holder) == -1
        granted: list[str] = []
        current = holder
        while True:
            q.leave(current, duration=0.5)
            now = [t for t in waiting if t.granted.done() and not t.granted.cancelled() and not t.left]
            if not now:
                break
            (current,) = now
            granted.append(current.execution_id)
        assert granted == predicted and q.order() == []

    asyncio.run(scenario())


def test_queue_full_is_429_with_retry_after_and_never_before() -> None:
    """Two slots and a queue of two: runs 1-4 enter, run 5 gets 429 with Retry-After; a freed place admits again."""

    async def scenario() -> None:
        q = FairQueue(max_concurrent=2, max_queue=2)
        tickets = [q.enter("c", f"r{i}") for i in range(4)]
        with pytest.raises(Problem) as info:
            q.enter("c", "r5")
        assert info.value.status == 429 and int(info.value.headers["Retry-After"]) >= 1
        q.leave(tickets[3])  # a waiting run is cancelled: its place is free
        q.enter("d", "r6")
        assert q.depth == 2 and q.running == 2

    asyncio.run(scenario())


def test_idempotency_replays_refuses_mismatch_and_in_flight(tmp_path: Path) -> None:
    """A completed key replays its response, another body gets 422, an in-flight key 409, release frees it."""
    store = IdempotencyStore(tmp_path / "keys.sqlite3")
    digest = fingerprint(b'{"a": 1, "b": 2}')
    assert digest == fingerprint(b'{"b":2,"a":1}')
    assert store.begin("tok", "k1", digest) is None
    with pytest.raises(Problem) as busy:
        store.begin("tok", "k1", digest)
    assert busy.value.status == 409
    store.complete("tok", "k1", 202, {"execution_id": "x"})
    replay = store.begin("tok", "k1", digest)
    assert replay is not None and replay.status == 202 and replay.body == {"execution_id": "x"}
    with pytest.raises(Problem) as mismatch:
        store.begin("tok", "k1", fingerprint(b'{"a": 3}'))
    assert mismatch.value.status == 422
    assert store.begin("other-caller", "k1", digest) is None  # keys are per caller
    store.release("other-caller", "k1")
    assert store.begin("other-caller", "k1", digest) is None
    store.close()
    reopened = IdempotencyStore(tmp_path / "keys.sqlite3")  # a restart drops what was in flight
    assert reopened.begin("other-caller", "k1", digest) is None
    assert reopened.begin("tok", "k1", digest) is not None
    assert parse_key('"abc"') == "abc"
    with pytest.raises(Problem):
        parse_key("x" * 300)


def test_event_log_resumes_exactly_and_drops_slow_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscriber after id N gets N+1.. from disk then live, no repeats; one that lags too far is dropped."""
    from scoperun.service import events

    async def scenario() -> None:
        log = EventLog(tmp_path / "run.jsonl")
        for i in range(5):
            log.append("stdout", {"text": f"line {i}\n"})
        got: list[int] = []

        async def reader() -> None:
            async for ev in log.subscribe(after=3):
                got.append(ev.id)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        log.append("stdout", {"text": "line 5\n"})
        log.append("finished", {})
        log.close()
        await asyncio.wait_for(task, 5)
        assert got == [4, 5, 6, 7]
        assert [e.id for e in read_events(log.path)] == list(range(1, 8))

        monkeypatch.setattr(events, "SUBSCRIBER_QUEUE", 3)
        slow = EventLog(tmp_path / "slow.jsonl")
        stream = slow.subscribe(after=0)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.05)
        for i in range(10):
            slow.append("stdout", {"text": str(i)})
        await asyncio.sleep(0.05)
        with pytest.raises(StopAsyncIteration):  # the reader fell 3 behind: its stream ends, the run goes on
            await first
        assert slow.dropped_subscribers == 1 and slow.last_id == 10
        slow.close()

    asyncio.run(scenario())


def test_old_event_files_are_pruned(tmp_path: Path) -> None:
    """Event files older than the retention go on server start; recent ones and other files stay."""
    import os
    import time

    from scoperun.service.runs import _prune_events

    old, new, other = tmp_path / "exec_a.jsonl", tmp_path / "exec_b.jsonl", tmp_path / "notes.txt"
    for p in (old, new, other):
        p.write_text("{}\n")
    past = time.time() - 8 * 86400
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    _prune_events(tmp_path, 7)
    assert not old.exists() and new.exists() and other.exists()
