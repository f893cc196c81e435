"""The attempts a claim loop is running, and how each one ends: finished, timed out, interrupted.

An attempt that must stop (timeout, cancel, shutdown, lost lease) is
interrupted by its own execution mode, and stays here, its lease renewed and
its slot busy, until its body has really stopped: only then is its outcome
recorded, so its job can never start again while a body still runs. What
the outcome becomes depends on why it was interrupted (``_stopped``).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg

from .. import conf
from .. import queue as q
from ..exceptions import AttemptInterrupted, JobCancelled, JobTimeout, LeaseLost, WorkerStopping
from ..queue import ClaimedJob, Failure, Success
from ..tasks import get_task
from .executor import Executor, Outcome

logger = logging.getLogger("django_supaqueue.worker")

Key = tuple[int, int]  # (job id, attempt): an attempt's fence

#: Seconds before a job whose thread was left behind by an exiting worker may
#: run again: the process exits right after writing that, ending the thread well before.
LEFT_BEHIND_DELAY = 2.0

#: Why an attempt is interrupted, and what its thread gets raised.
INTERRUPTS: dict[str, type[AttemptInterrupted]] = {
    "timeout": JobTimeout,
    "cancel": JobCancelled,
    "release": WorkerStopping,
    "lost": LeaseLost,
}


@dataclass
class Attempt:
    job: ClaimedJob
    timeout: float | None  # counted from when its body starts (executor.started_at)
    reason: str | None = None  # why it was interrupted (a key of INTERRUPTS); None: it runs on
    interrupted_at: float = 0.0  # time.monotonic() of the interrupt


class RunningAttempts:
    """The attempts of one claim loop's slots, from dispatch until their outcome is recorded.

    ``record(job, outcome)`` receives each outcome to write; ``freed(job)`` is
    called when a body has ended (its cap, serial queue or group has room).
    Only the loop's thread calls these methods; job threads report through
    ``done`` (a deque the executor's callback appends to).
    """

    def __init__(
        self,
        executor: Executor,
        *,
        interrupt_grace: float,
        record: Callable[[ClaimedJob, Outcome], None],
        freed: Callable[[ClaimedJob], None],
    ) -> None:
        self.executor = executor
        self.interrupt_grace = interrupt_grace
        self._record = record
        self._freed = freed
        self._attempts: dict[Key, Attempt] = {}
        self.done: collections.deque[tuple[ClaimedJob, Outcome]] = collections.deque()
        #: Attempts given back (a stopping worker) whose bodies have stopped: the loop releases them.
        self.released: list[Key] = []
        self.typical_duration: float | None = None  # moving average of recent attempts, seconds

    def __len__(self) -> int:
        return len(self._attempts)

    def capacity(self, slots: int, prefetch_wait: float, claim_batch: int) -> int:
        """Jobs to hold for ``slots`` slots: the slots, plus jobs claimed ahead while jobs are short.

        Claiming ahead makes each round trip carry more jobs (fewer commits per
        job) without running more than the slots at once. It is sized so a job
        claimed ahead should start within PREFETCH_WAIT seconds, and stops as
        soon as the recent attempts get long: a slow job never holds others
        hostage for long.
        """
        d = self.typical_duration
        if prefetch_wait <= 0 or d is None:
            return slots
        return slots + min(int(slots * prefetch_wait / max(d, 1e-4)), claim_batch)

    def __contains__(self, key: object) -> bool:
        return key in self._attempts

    def __iter__(self) -> Iterator[Attempt]:
        return iter(list(self._attempts.values()))

    def keys(self) -> list[Key]:
        return list(self._attempts)

    def start(self, job: ClaimedJob) -> None:
        self._attempts[(job.id, job.attempt)] = Attempt(job, timeout(job))
        self.executor.submit(job)

    def collect(self) -> None:
        """Take the outcomes job threads reported, and record each as its attempt's end says."""
        while self.done:
            job, outcome = self.done.popleft()
            key = (job.id, job.attempt)
            a = self._attempts.get(key)
            if a is None:
                continue
            if a.reason is not None:
                self._stopped(key, a, outcome)
                continue
            del self._attempts[key]
            self._freed(job)
            d = self.typical_duration
            self.typical_duration = outcome.duration if d is None else 0.8 * d + 0.2 * outcome.duration
            self._record(job, outcome)

    def interrupt(self, key: Key, reason: str) -> None:
        """Stop an attempt; its job keeps its lease (renewed, the slot busy) until the body has ended."""
        a = self._attempts.get(key)
        if a is None or a.reason is not None:
            return  # gone, or interrupted already: the first reason is what counts
        a.reason = reason
        a.interrupted_at = time.monotonic()
        if not self.executor.interrupt(a.job, INTERRUPTS[reason]):
            self._stopped(key, a, None)  # it had not started: it never will

    def interrupt_all(self, reason: str) -> None:
        for key in self.keys():
            self.interrupt(key, reason)

    def deadline(self, a: Attempt) -> float:
        """When the attempt times out; one still waiting for a slot is taken to start now."""
        if not a.timeout:
            return math.inf
        return (self.executor.started_at(a.job) or time.monotonic()) + a.timeout

    def next_wake(self) -> float:
        """The earliest time.monotonic() at which a timeout or an interrupt's grace runs out."""
        return min(
            (self.deadline(a) if a.reason is None else a.interrupted_at + self.interrupt_grace for a in self),
            default=math.inf,
        )

    def enforce_timeouts(self) -> Attempt | None:
        """Interrupt attempts past their timeout; return one that has not stopped within the grace."""
        now = time.monotonic()
        stuck = None
        for key, a in list(self._attempts.items()):
            if a.reason is None:
                if self.deadline(a) <= now:
                    logger.warning(
                        "job %s (%s) attempt %s timed out; interrupting it",
                        a.job.id,
                        a.job.task_name,
                        a.job.attempt,
                    )
                    self.interrupt(key, "timeout")
            elif now - a.interrupted_at >= self.interrupt_grace:
                stuck = a
        return stuck

    def leave_behind(self) -> list[Attempt]:
        """Hand over what is still running (threads that would not stop) and forget it."""
        left = list(self._attempts.values())
        self._attempts.clear()
        return left

    def _stopped(self, key: Key, a: Attempt, outcome: Outcome | None) -> None:
        """Record an interrupted attempt whose body has ended (``outcome``: what it reported, if it ran)."""
        del self._attempts[key]
        self._freed(a.job)
        job = a.job
        late = time.monotonic() - a.interrupted_at
        ran = outcome.duration if outcome is not None else 0.0
        if a.reason == "timeout":
            logger.warning(
                "job %s (%s) attempt %s stopped %.1fs after its timeout",
                job.id,
                job.task_name,
                job.attempt,
                late,
            )
            message = f"attempt ran past its timeout of {a.timeout}s; it stopped {late:.1f}s later"
            self._record(job, _interrupted(job, JobTimeout, message, ran))
        elif a.reason == "cancel":
            message = f"the attempt stopped {late:.1f}s after its job was cancelled"
            self._record(job, _interrupted(job, JobCancelled, message, ran, final=True))
        elif a.reason == "release":
            if isinstance(outcome, Success):
                self._record(job, outcome)  # it finished as the interrupt came
            else:
                self.released.append(key)
        # "lost": its lease is gone, so there is nothing to write (any write would be fenced).


def timeout(job: ClaimedJob) -> float | None:
    """Seconds the attempt may run: its task's timeout, else its queue's, else TIMEOUT."""
    if job.http is not None:  # the HTTP client enforces the timeout; this is the backstop
        return float(job.timeout or conf.get("HTTP_TIMEOUT")) * 2 + 5
    try:
        task_timeout = get_task(job.task_name).options.timeout
    except Exception:  # noqa: BLE001  unknown tasks fail in the executor, with a clear error
        task_timeout = None
    return task_timeout or job.timeout or conf.get("TIMEOUT") or None


def _interrupted(
    job: ClaimedJob, exc: type[AttemptInterrupted], message: str, duration: float, final: bool = False
) -> Failure:
    """The failure recorded for an interrupted attempt once its body has stopped."""
    return Failure(
        job_id=job.id,
        attempt=job.attempt,
        error_class=f"{exc.__module__}.{exc.__qualname__}",
        error_message=message,
        traceback="",
        duration=duration,
        final=final,
    )


def hand_over(
    conn: psycopg.Connection, worker_id: int, worker_name: str, left_behind: Sequence[Attempt]
) -> None:
    """Hand over the attempts whose threads would not stop; the process exits right after.

    A job given back by a stopping worker is released, runnable again
    after LEFT_BEHIND_DELAY; a timed-out or cancelled one keeps its lease
    until then, and recovery then counts the attempt as lost.
    """
    if not left_behind:
        return
    released = [(a.job.id, a.job.attempt) for a in left_behind if a.reason in (None, "release")]
    others = [(a.job.id, a.job.attempt) for a in left_behind if a.reason not in (None, "release")]
    q.release(
        conn,
        worker_id=worker_id,
        worker_name=worker_name,
        held=released,
        delay=LEFT_BEHIND_DELAY,
        message="the worker stopped before the attempt finished; its thread would not stop, "
        "so the worker process exited to end it",
    )
    q.expire_leases(conn, worker_id=worker_id, held=others, after=LEFT_BEHIND_DELAY)
    logger.error(
        "worker %s exits with %s attempts whose threads would not stop: %s",
        worker_name,
        len(left_behind),
        [(a.job.id, a.job.attempt) for a in left_behind],
    )
