"""One claim loop: a connection, a share of the process's slots, and the round trip that feeds them.

The loop sleeps until something happens (a notification, a finished job, a
timer) and then, in a single round trip, records every finished attempt and
claims as many jobs as it has free slots (while every slot has work, outcomes
may wait a little for others: see unwritten.py). An idle loop therefore sends
nothing but its heartbeat and the fallback poll. A worker process runs
several loops, one per claim connection (see lanes.py); the first one also
runs the process's chores (see process.py).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import TYPE_CHECKING

import psycopg

from .. import conf
from .. import queue as q
from ..queue import ClaimedJob
from . import attempts
from .connection import CONFLICTS, reconnect_if_dead
from .executor import Executor, Outcome
from .listener import Wakeup
from .notices import Notices
from .running import RunningAttempts
from .unwritten import Unwritten

if TYPE_CHECKING:
    from .aio import AsyncExecutor
    from .process import WorkerProcess

logger = logging.getLogger("django_supaqueue.worker")

#: Seconds a stopping loop waits for the attempts it interrupts to end, before
#: it leaves the rest behind (their threads are blocked in C, say) and the process exits.
STOP_WAIT = 1.0


class ClaimLoop:
    """Claims jobs for ``slots`` slots of ``process`` and records their outcomes, on its own connection."""

    def __init__(
        self, process: WorkerProcess, slots: int, *, chores: bool, listens: bool, on_loop: bool | None = None
    ) -> None:
        self.process = process
        self.slots = slots
        # The async lane (True) claims the jobs of HTTP queues and async queues, thread lanes
        # (False) the others', a process without an async lane (None) any.
        self.on_loop = on_loop
        self.chores = chores  # this loop also heartbeats the Worker row, recovers, prunes and fires schedules
        self.listens = listens  # its connection LISTENs (no separate LISTEN_DATABASE)
        self.processed = 0
        self.stopping = False
        self.capped = True  # lock capped queues in the claim (False while none is served)
        self.left_behind: list = []  # attempts whose threads would not stop (see RunningAttempts)
        self.finished: list[attempts.Finished] = []  # what was written, when the process reports it
        self._wake = Wakeup()
        self._conn: psycopg.Connection | None = None
        self._executor: Executor | AsyncExecutor | None = None
        self._running: RunningAttempts | None = None
        self._cancelled: collections.deque[tuple[int, int]] = collections.deque()
        self._grace_deadline = math.inf
        self._stop_deadline: float | None = None  # set when a stopping loop interrupts what runs
        self._unwritten = Unwritten()
        self._serial = True  # claim serial queues and groups too (False while none has work)
        self._tenants = True  # claim queues with limits per tenant too (False while none is served)
        self._left_out = False  # the last claim left out serial or capped queues that turned out to matter
        self._wanted = True  # claim on the next turn of the loop
        self._notices = Notices()  # written on notification, by this thread or a Listener's

    # -- what other threads call -------------------------------------------
    @property
    def running(self) -> list[tuple[int, int]]:
        """The (job id, attempt) of every attempt this loop holds."""
        return self._running.keys() if self._running is not None else []

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    def notify(self, due_epoch: float = 0.0) -> None:
        """New jobs: runnable now (0), or a future run_at to wake up for."""
        self._notices.add(due_epoch)
        self._wake.set()

    def cancel(self, job_id: int, attempt: int) -> None:
        self._cancelled.append((job_id, attempt))
        self._wake.set()

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; running jobs get SHUTDOWN_GRACE to finish (``now``: none)."""
        if self.stopping or now:
            self._grace_deadline = time.monotonic()
        else:
            self._grace_deadline = time.monotonic() + float(conf.get("SHUTDOWN_GRACE"))
        self.stopping = True
        self._wake.set()

    # -- the loop ------------------------------------------------------------
    def run(self) -> None:
        """Claim and run until stopped; on the way out, record what finished and release the rest."""
        p = self.process
        if self._conn is None:
            self._conn = p.connect(listens=self.listens)
        if self.on_loop:
            from .aio import AsyncExecutor  # aiohttp is loaded only by a process with an async lane

            self._executor = AsyncExecutor(self.slots, self._on_done, p.name)
        else:
            self._executor = Executor(self.slots, self._on_done)
        self._running = RunningAttempts(
            self._executor, interrupt_grace=p.interrupt_grace, record=self._record, freed=self._free
        )
        try:
            self._loop()
        finally:
            self._executor.shutdown(wait=False)
            self._wake.close()

    def adopt(self, conn: psycopg.Connection) -> None:
        """Start with ``conn``, already connected (and listening, for the listening lane)."""
        self._conn = conn

    def close(self) -> psycopg.Connection | None:
        """Hand the connection over (the process's final writes use it), or close it."""
        conn, self._conn = self._conn, None
        return conn

    def _on_done(self, job: ClaimedJob, outcome: Outcome) -> None:
        self._running.done.append((job, outcome))
        self._wake.set()

    def _loop(self) -> None:
        p = self.process
        running = self._running
        self._heartbeat()  # before the first claim: its chores recover what a crash left
        now = time.monotonic()
        next_poll = now + p.poll_interval
        next_beat = now + p.heartbeat_interval
        next_fire = now if self.chores and p.schedule_interval else math.inf
        seen_seq = -1
        while True:
            self._wake.clear()
            self._take_notifications()
            running.collect()
            self._apply_cancellations()
            if self.stopping and (not running or time.monotonic() >= self._grace_deadline):
                if self._stop_deadline is None:
                    self._stop_deadline = time.monotonic() + STOP_WAIT
                    running.interrupt_all("release")
                    running.collect()
                if not running or time.monotonic() >= self._stop_deadline:
                    self._release_running()
                    return
            if not self.stopping and time.monotonic() >= next_fire:
                if p.fire_schedules():
                    self._wanted = True  # the NOTIFY will come too; no need to wait for it
                next_fire = time.monotonic() + p.schedule_interval
            expired, seq = self._notices.take()  # timers that have expired, and the notify counter
            if expired or seq != seen_seq:
                seen_seq = seq
                self._wanted = True
            if time.monotonic() >= next_poll:
                self._wanted = True
            free = self._capacity() - len(running)
            limit = min(free, self.claim_batch, p.claims_left())
            claim = not self.stopping and limit > 0 and (self._wanted or p.burst)
            if (claim or self._unwritten) and not self._holding():
                claimed = self._flush(claim=claim, limit=limit)
                if claim:
                    next_poll = time.monotonic() + p.poll_interval
                    # A full batch may have left more behind; a notification that
                    # arrived meanwhile is picked up by the counter on the next turn.
                    self._wanted = len(claimed) == limit or self._left_out
                    if len(claimed) == limit:
                        p.lanes.wake_others(self)
                    self._dispatch(claimed)
                    if claimed:
                        # Let a job thread that has just been handed a job take the GIL now,
                        # rather than after this loop's next turn: 0.07 ms of pick-up time.
                        time.sleep(0)
                    if p.burst and not (claimed or running or running.done or self._unwritten):
                        return
            if p.burst and p.claims_left() <= 0 and not (running or running.done or self._unwritten):
                return  # a process limited to a number of jobs has run them all
            stuck = running.enforce_timeouts()
            if stuck is not None and not self.stopping:
                p.give_up(stuck)
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + p.heartbeat_interval
            holding = self._holding()
            if (
                running.done
                or (self._unwritten and not holding)
                or self._notices.seq != seen_seq
                or (self._wanted and not self.stopping and len(running) < self._capacity() and not holding)
            ):
                continue
            self._wake.wait(
                self._sleep_time(next_poll, next_beat, next_fire),
                self._conn.fileno() if self.listens else None,
            )

    def _holding(self) -> bool:
        """Hold the outcomes back for now (see unwritten.py); a stopping loop writes at once."""
        busy = not self.stopping and len(self._running) >= self.slots
        return self._unwritten.holding(busy=busy, batch=self.claim_batch)

    @property
    def claim_batch(self) -> int:
        """Most jobs one round trip claims; the async lane's many slots are filled in one."""
        return max(self.process.claim_batch, self.slots) if self.on_loop else self.process.claim_batch

    def _take_notifications(self) -> None:
        """Route what the claim connection has received: during its last round trip, or while idle."""
        if not self.listens:
            return
        try:
            self.process.notifications.drain(self._conn)
        except psycopg.Error as exc:
            self._on_database_error(exc)

    def _sleep_time(self, next_poll: float, next_beat: float, next_fire: float) -> float:
        now = time.monotonic()
        wake_at = min(next_poll, next_beat, next_fire, self._running.next_wake(), self._grace_deadline)
        wake_at = min(wake_at, now + self._notices.seconds_to_next_timer(), self._unwritten.deadline)
        if self._stop_deadline is not None:
            wake_at = min(wake_at, self._stop_deadline)
        return max(0.0, wake_at - now)

    def _capacity(self) -> int:
        """Jobs this loop may hold: its slots, plus jobs claimed ahead (see RunningAttempts.capacity)."""
        if self.stopping:
            return self.slots
        return self._running.capacity(self.slots, self.process.prefetch_wait, self.claim_batch)

    # -- attempts --------------------------------------------------------------
    def _dispatch(self, claimed: list[ClaimedJob]) -> None:
        if self.on_loop is not None:
            self.process.lanes.learn(claimed)
        attempts.announce_started(claimed)
        for job in claimed:
            self._running.start(job)

    def _record(self, job: ClaimedJob, outcome: Outcome) -> None:
        self._unwritten.record(job, outcome)
        self.processed += 1

    def _free(self, job: ClaimedJob) -> None:
        """The attempt's body has ended: wake the workers its cap, serial queue or group held back."""
        if job.capped:
            self._unwritten.freed_capped.add(job.queue)
            self._wanted = True
        if job.serial_group is not None:
            self._unwritten.freed_groups.add(job.serial_group)

    def _apply_cancellations(self) -> None:
        """Stop attempts cancelled in the database (the job's status is already written)."""
        while self._cancelled:
            key = self._cancelled.popleft()
            if key in self._running:
                logger.info("job %s attempt %s cancelled; interrupting it", *key)
                self._running.interrupt(key, "cancel")

    def _release_running(self) -> None:
        """Record what finished, give back what stopped, and leave behind what would not stop."""
        while True:
            self._flush(claim=False)
            if self._unwritten:  # the database refused it for now
                self._heartbeat()
                continue
            try:
                with self._conn.transaction():
                    released = q.release(
                        self._conn,
                        worker_id=self.process.worker_id,
                        worker_name=self.process.name,
                        held=self._running.released,
                    )
                break
            except CONFLICTS:
                continue
            except psycopg.Error as exc:
                self._on_database_error(exc)
                self._heartbeat()
        if released:
            logger.warning(
                "worker %s released %s unfinished jobs: %s", self.process.name, len(released), released
            )
        self._running.released.clear()
        self.left_behind = self._running.leave_behind()

    # -- database ------------------------------------------------------------
    def _flush(self, *, claim: bool, limit: int = 0) -> list[ClaimedJob]:
        """Record finished attempts and claim new jobs in one round trip.

        If it fails (other than by a conflict worth retrying at once), the
        outcomes stay unwritten for the next turn of the loop, which keeps
        heartbeating meanwhile: a lock held for longer than a lease must not
        make this worker's own leases expire.
        """
        if not claim and not self._unwritten:
            return []
        p, unwritten = self.process, self._unwritten
        successes, failures = unwritten.split()
        while True:
            try:
                done = q.finish_and_claim(
                    self._conn,
                    worker_id=p.worker_id,
                    worker_name=p.name,
                    successes=successes,
                    failures=failures,
                    freed_queues=unwritten.freed_capped,
                    freed_groups=unwritten.freed_groups,
                    serial=self._serial,
                    lock=self.capped,
                    tenants=self._tenants,
                    queues=p.queues,
                    limit=limit if claim else 0,
                    lease_seconds=p.lease,
                    free=max(0, self.slots - len(self._running)),
                    job_ids=p.job_ids,
                    on_loop=self.on_loop,
                )
                break
            except CONFLICTS:
                continue
            except psycopg.Error as exc:
                self._on_database_error(exc)
                self._wanted = True
                return []
        jobs = unwritten.written()
        if claim:
            self._left_out = (
                (done.serial_work and not self._serial)
                or (done.capped and not self.capped)
                or (done.tenants and not self._tenants)
            )
            self._serial, self.capped, self._tenants = done.serial_work, done.capped, done.tenants
            p.claimed(done.jobs)
            if done.loop_work and self.on_loop is False:
                p.start_async_lane()
        for r in done.retries:
            if r.status == q.PENDING:
                self.notify(r.run_at.timestamp())  # a retry this loop scheduled: a timer
        finished = attempts.announce_recorded(jobs, successes, failures, done.retries, set(done.completed))
        if p.report:
            self.finished += finished
        if done.rate_wake is not None:
            self.notify(done.rate_wake)  # a rate-limited queue has room again then
        return done.jobs

    def _heartbeat(self) -> None:
        """Renew this loop's leases, interrupt attempts whose lease was lost; the chores if it has them."""
        p = self.process
        try:
            held = self._running.keys()
            # Attempts that ended but are not written yet (the database refused the
            # write for now) still hold their leases: they are renewed too.
            waiting = self._unwritten.keys() + self._running.released
            beat = q.heartbeat(self._conn, p.worker_id, p.lease, held + waiting)
            for key in set(held) - beat.renewed:
                logger.error(
                    "worker %s lost the lease of job %s attempt %s (it could not renew it in time); "
                    "interrupting it, since the job may run elsewhere",
                    p.name,
                    *key,
                )
                self._running.interrupt(key, "lost")
            for key in beat.cancelled & set(held):  # the NOTIFY did not come, or no LISTEN
                self._running.interrupt(key, "cancel")
            if self.chores and p.chores(self._conn, registered=beat.registered):
                self._wanted = True
        except psycopg.Error as exc:
            self._on_database_error(exc)

    def _on_database_error(self, exc: psycopg.Error) -> None:
        """Reconnect if the connection died, else pause before the retry (see reconnect_if_dead)."""
        p = self.process
        conn = reconnect_if_dead(self._conn, exc, p.name, lambda: p.connect(listens=self.listens))
        if conn is not None:
            self._conn = conn
            self._wanted = True
            if self.listens:
                p.lanes.wake_all()  # notifications sent while it was away are lost
