"""What a claim loop has been told about new jobs: a count of "runnable now" and timers for later.

Whichever thread hears a notification (a Listener's, or the loop's own while it
drains its connection) writes here; the loop reads between round trips. A
counter, not a flag, so that a notification arriving during a claim's round
trip is not taken for one the claim already answered; a heap of future run_at
times, so that each of them wakes the loop, not only the earliest.
"""

from __future__ import annotations

import heapq
import math
import threading

from .. import dbclock

#: Future run_at times a claim loop keeps a timer for; past that many, its poll finds the jobs.
MAX_TIMERS = 10_000


class Notices:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._due: list[float] = []  # epochs by the database's clock

    @property
    def seq(self) -> int:
        """Changes whenever jobs runnable now are announced."""
        return self._seq

    def add(self, due_epoch: float = 0.0) -> None:
        """New jobs: runnable now (0), or a future run_at to wake up for."""
        with self._lock:
            if not due_epoch:
                self._seq += 1
            elif len(self._due) < MAX_TIMERS:
                heapq.heappush(self._due, due_epoch)

    def take(self) -> tuple[bool, int]:
        """Drop the timers that have expired: (whether any had, the counter)."""
        expired = False
        with self._lock:
            now = dbclock.time()  # epochs the database wrote: its clock
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
                expired = True
            return expired, self._seq

    def seconds_to_next_timer(self) -> float:
        """How long until the earliest timer expires (0 if it has; inf without one)."""
        with self._lock:
            next_due = self._due[0] if self._due else math.inf
        if next_due == math.inf:
            return math.inf
        return max(0.0, next_due - dbclock.time())
