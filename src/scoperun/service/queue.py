"""The server's one queue: at most `max_concurrent` runs at once for every caller together.

Waiting runs are served in arrival order per caller and round-robin across callers, so one
caller's burst cannot starve another. At most `max_queue` runs wait; past that, `enter` raises
a 429 problem with `Retry-After` estimated from the queue depth and recent run durations.
Everything here runs on the event loop's thread (no locks needed).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

from scoperun.service.problems import Problem

__all__ = ["FairQueue", "Ticket"]


@dataclass(eq=False)
class Ticket:
    """One run's place: waiting, then holding a slot until `leave`."""

    caller: str
    execution_id: str
    granted: asyncio.Future[None]
    enqueued: float = field(default_factory=time.monotonic)
    left: bool = False


class FairQueue:
    """Slots for runs; waiting tickets served FIFO per caller, round-robin across callers."""

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.peak_running = 0
        self._waiting: dict[str, deque[Ticket]] = {}
        self._turns: deque[str] = deque()  # callers with waiting tickets, in round-robin order
        self._avg_duration = 5.0

    @property
    def depth(self) -> int:
        """Runs waiting for a slot."""
        return sum(len(q) for q in self._waiting.values())

    def enter(self, caller: str, execution_id: str) -> Ticket:
        """Take a slot now or a place in the queue; a 429 problem when the queue is full."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(caller, execution_id, loop.create_future())
        if self.running < self.max_concurrent and not self._turns:
            self._grant(ticket)
            return ticket
        depth = self.depth
        if depth >= self.max_queue:
            retry = self.retry_after()
            raise Problem(429, "queue-full", f"{depth} runs are waiting (max_queue {self.max_queue}) and "
                          f"{self.running} running; retry in about {retry} s", headers={"Retry-After": str(retry)},
                          queue_depth=depth, running=self.running, retry_after=retry)
        if caller not in self._waiting or not self._waiting[caller]:
            self._waiting[caller] = deque()
            self._turns.append(caller)
        self._waiting[caller].append(ticket)
        return ticket

    def order(self) -> list[Ticket]:
        """The waiting tickets in the order slots will go to them (what `_dispatch` will do)."""
        queues = {c: deque(q) for c, q in self._waiting.items()}
        turns = deque(self._turns)
        served: list[Ticket] = []
        while turns:
            caller = turns.popleft()
            served.append(queues[caller].popleft())
            if queues[caller]:
                turns.append(caller)
        return served

    def position(self, ticket: Ticket) -> int:
        """How many waiting runs will get a slot before this one (0: next); -1 once it has a slot."""
        if ticket.granted.done():
            return -1
        for ahead, waiting in enumerate(self.order()):
            if waiting is ticket:
                return ahead
        return -1

    def leave(self, ticket: Ticket, *, duration: float | None = None) -> None:
        """Give back the slot (or the place in the queue) of `ticket`; serve the next waiting run."""
        if ticket.left:
            return
        ticket.left = True
        if ticket.granted.done() and not ticket.granted.cancelled():
            self.running -= 1
            if duration is not None:
                self._avg_duration = 0.8 * self._avg_duration + 0.2 * max(duration, 0.05)
        else:
            waiting = self._waiting.get(ticket.caller)
            if waiting is not None and ticket in waiting:
                waiting.remove(ticket)
                if not waiting:
                    del self._waiting[ticket.caller]
                    self._turns.remove(ticket.caller)
            if not ticket.granted.done():
                ticket.granted.cancel()
        self._dispatch()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free for a new run (at least 1)."""
        return max(1, math.ceil((self.depth + 1) * self._avg_duration / self.max_concurrent))

    def _grant(self, ticket: Ticket) -> None:
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        ticket.granted.set_result(None)

    def _dispatch(self) -> None:
        while self.running < self.max_concurrent and self._turns:
            caller = self._turns.popleft()
            waiting = self._waiting[caller]
            ticket = waiting.popleft()
            if waiting:
                self._turns.append(caller)
            else:
                del self._waiting[caller]
            self._grant(ticket)
