"""Claim lanes: one worker process, several claim connections.

A claim loop's cycle is a chain: encode the outcomes, send, let the server
complete and claim, commit, decode, dispatch. One connection keeps one server
process busy at a time, and while the server works the Python side waits, and
the other way round: on a 2-core machine a draining worker with one connection
used about one core in all. So a worker splits its slots among up to
CLAIM_CONNECTIONS lanes, each a claim loop on a thread with its own connection
and its own slots, and their cycles overlap. The first lane keeps the
process's chores: listening, schedules, recovery, pruning (see process.py).
The others only claim, run and renew their own leases.

A process with an async lane (ASYNC_CONCURRENCY > 0) adds one more: a claim
loop whose slots are coroutines on an event loop (aio.py), which claims only
the calls to HTTP queues, while the thread lanes claim only the other jobs.

This module routes what arrives for the process to its lanes: a job
notification to the thread lane with the most free slots, or to the async
lane, by the kind of its queue; a cancellation or a timer to all. A
notification names its queue, not the queue's kind: the kind is learnt from
the jobs the lanes claim (for KIND_TTL seconds, so that a queue an operator
turns into an HTTP or async queue is routed anew), and a queue not seen yet
wakes both kinds of lane. When every lane is full none is lost: a lane fills up only through a
claim that came back full, and such a lane claims again as soon as a slot
frees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..queue import ClaimedJob
    from .claim_loop import ClaimLoop

#: Seconds a queue's kind (on the event loop or not), learnt from a claim, routes its notifications.
KIND_TTL = 60.0


def lane_sizes(concurrency: int, connections: int) -> list[int]:
    """Slots per lane: ``concurrency`` split as evenly as it goes over at most ``connections`` lanes."""
    n = max(1, min(int(connections), concurrency))
    return [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]


class Lanes:
    """Routes what arrives for a worker process to its claim loops (the first one listens)."""

    def __init__(self, loops: list[ClaimLoop]) -> None:
        self.loops = loops  # the process's list: loops added later are routed to too
        self._kinds: dict[str, tuple[bool, float]] = {}  # queue -> (on the event loop?, learnt at)
        # Future run_at times heard before the loops exist (LISTEN starts before the worker
        # registers); None once started() has handed them over.
        self._early: list[float] | None = []
        self._lock = threading.Lock()

    def started(self) -> None:
        """The loops exist: give them the timers heard before (runnable jobs their first claims find)."""
        with self._lock:
            early, self._early = self._early or [], None
        for due_epoch in early:
            for loop in self.loops:
                loop.notify(due_epoch)

    def learn(self, claimed: Iterable[ClaimedJob]) -> None:
        """Remember the kind of the queues these jobs came from (called by each lane's claim)."""
        now = time.monotonic()
        for job in claimed:
            self._kinds[job.queue] = (job.on_loop, now)

    def route_jobs(self, due_epoch: float, queue: str = "") -> None:
        """New jobs of ``queue``: runnable now, wake the freest loop of their kind; due later,
        every loop keeps the timer."""
        if due_epoch:
            with self._lock:
                if self._early is not None:
                    self._early.append(due_epoch)
                    return
            for loop in self.loops:
                loop.notify(due_epoch)
            return
        known = self._kinds.get(queue)
        on_loop = known[0] if known is not None and time.monotonic() - known[1] < KIND_TTL else None
        if on_loop is not True:
            threads = [loop for loop in self.loops if not loop.on_loop]
            if threads:
                max(threads, key=lambda loop: loop.free_slots).notify()  # ties: the first, listening
        if on_loop is not False:
            for loop in self.loops:
                if loop.on_loop:
                    loop.notify()

    def route_cancel(self, job_id: int, attempt: int) -> None:
        """Only the loop running the attempt acts on it; the others find nothing to stop."""
        for loop in self.loops:
            loop.cancel(job_id, attempt)

    def wake_all(self) -> None:
        """Notifications may have been missed (a reconnect): every loop claims."""
        for loop in self.loops:
            loop.notify()

    def wake_others(self, lane: ClaimLoop) -> None:
        """A loop's claim came back full: more of its kind is waiting, so its siblings claim too."""
        for loop in self.loops:
            if loop is not lane and loop.on_loop == lane.on_loop:
                loop.notify()
