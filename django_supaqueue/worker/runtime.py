"""The claim loop of one worker process.

One thread owns a claim connection. It sleeps until something happens (a
notification, a finished job, a timer) and then, in a single transaction,
records every finished attempt and claims as many jobs as it has free slots.
An idle worker therefore sends nothing but its heartbeat, the fallback poll
and its look for due schedules (every SCHEDULE_INTERVAL seconds). A worker
with several claim connections runs one such loop per connection, each with
a share of the slots (see lanes.py).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from django.db import DatabaseError, connections

from .. import conf, lifecycle, scheduling
from .. import queue as q
from ..exceptions import AttemptInterrupted, JobCancelled, JobTimeout, LeaseLost, WorkerStopping
from ..handlers import http as _http  # noqa: F401  imported up front: a first HTTP call pays no import
from ..queue import ClaimedJob, Failure, Success
from ..tasks import get_task, registered_tasks
from .connection import connect
from .executor import Executor, Outcome
from .lanes import Lanes, lane_sizes
from .listener import Listener, Notifications, Wakeup, listen, listens_on_claim_connection

logger = logging.getLogger("django_supaqueue.worker")

# Conflicts with a concurrent transaction: the same statements succeed on a new snapshot.
_RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)


#: Why an attempt is interrupted, and what its thread gets raised.
_INTERRUPTS: dict[str, type[AttemptInterrupted]] = {
    "timeout": JobTimeout,
    "cancel": JobCancelled,
    "release": WorkerStopping,
    "lost": LeaseLost,
}

#: Seconds a stopping worker waits for the attempts it interrupts to end, before
#: it leaves the rest behind (their threads are blocked in C, say) and exits.
_STOP_WAIT = 1.0

#: Seconds before a job whose thread was left behind by an exiting worker may
#: run again: the process exits right after writing that, ending the thread well before.
_LEFT_BEHIND_DELAY = 2.0


@dataclass
class _Running:
    job: ClaimedJob
    timeout: float | None  # counted from when its body starts (executor.started_at)
    reason: str | None = None  # why it was interrupted (a key of _INTERRUPTS); None: it runs on
    interrupted_at: float = 0.0  # time.monotonic() of the interrupt


class Worker:
    """Runs jobs from ``queues`` (None: every queue) ``concurrency`` at a time."""

    def __init__(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        poll_interval: float | None = None,
        name: str | None = None,
        parent_pid: int | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.queues = sorted(set(queues)) if queues else None
        self.concurrency = concurrency or int(conf.get("CONCURRENCY"))
        self.burst = burst
        self.poll_interval = float(poll_interval if poll_interval is not None else conf.get("POLL_INTERVAL"))
        self.heartbeat_interval = float(conf.get("HEARTBEAT_INTERVAL"))
        self.lease = float(conf.get("LEASE_DURATION"))
        self.claim_batch = int(conf.get("CLAIM_BATCH"))
        self.prefetch_wait = float(conf.get("PREFETCH_WAIT") or 0)
        self._typical_duration: float | None = None  # moving average of recent attempts, seconds
        interval = conf.get("SCHEDULE_INTERVAL")
        self.schedule_interval = float(interval) if interval else None
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.parent_pid = parent_pid
        self.metrics_port = metrics_port
        self.worker_id: int | None = None
        self.stopping = False
        self.interrupt_grace = float(conf.get("INTERRUPT_GRACE"))
        #: 1 when the process must be replaced (an attempt would not stop); the command's exit status.
        self.exit_code = 0
        #: Attempts still running when the worker stopped (threads that would not stop):
        #: the process must exit to end them (run_workers does).
        self.left_behind: list[_Running] = []
        self._stop_deadline: float | None = None  # set when a stopping worker interrupts what runs
        self._released: list[tuple[int, int]] = []  # attempts given back whose bodies have stopped
        self.slots = self.concurrency  # this lane's share of the slots (see lanes.py)
        self._processed = 0

        self._is_lane = False  # a second claim lane of a registered Worker (see lanes.py)
        self._lanes = Lanes(self)
        self._lane_threads: list[threading.Thread] = []
        self._wake = Wakeup()
        self._notifications = Notifications(
            set(self.queues) if self.queues else None, self._lanes.route_jobs, self._lanes.route_cancel
        )
        self._listens = False  # the claim connection LISTENs itself (no separate LISTEN_DATABASE)
        self._done: collections.deque[tuple[ClaimedJob, Outcome]] = collections.deque()
        self._cancelled: collections.deque[tuple[int, int]] = collections.deque()
        self._grace_deadline = math.inf
        self._unflushed: list[Outcome] = []
        self._outcome_jobs: dict[tuple[int, int], ClaimedJob] = {}  # for the life-cycle signals
        self._freed_capped: set[str] = set()  # capped queues with room again: wake their workers
        self._freed_groups: set[str] = set()  # serial groups whose job ended: wake their queues' workers
        self._serial = True  # claim serial queues and groups too (False while none has work)
        self._left_out = False  # the last claim left out serial or capped queues that turned out to matter
        self._capped = True  # lock capped queues in the claim (False while none is served)
        self._running: dict[tuple[int, int], _Running] = {}
        self._wanted = True  # claim on the next turn of the loop
        # Written on notification (by this thread or a Listener's): a counter (so one that
        # arrives during a claim's round trip is not lost) and the earliest
        # known future run_at, both under _notify_lock.
        self._notify_lock = threading.Lock()
        self._notify_seq = 0
        self._next_due = math.inf
        self._conn: psycopg.Connection | None = None
        self._executor: Executor | None = None

    # -- life cycle -------------------------------------------------------
    def run(self, *, handle_signals: bool = True) -> None:
        """Work until stopped (SIGTERM/SIGINT) or, in burst mode, until nothing is runnable."""
        if handle_signals:
            self._install_signal_handlers()
        if self.metrics_port is not None:
            from .. import metrics

            metrics.serve(self.metrics_port)
        self._listens = listens_on_claim_connection()
        self._conn = self._connect_with_retry()
        q.ensure_queues(self._queues_to_create(), self._conn)
        listener = None
        if conf.get("LISTEN") and not self._listens:
            listener = Listener(self._notifications, self._on_listener_reconnect)
            listener.start()
            listener.ready.wait(10)
        self.worker_id = q.register_worker(
            self._conn,
            name=self.name,
            host=self.host,
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
        )
        sizes = lane_sizes(self.concurrency, int(conf.get("CLAIM_CONNECTIONS")))
        self.slots = sizes[0]
        for size in sizes[1:]:
            self._start_lane(size)
        logger.info(
            "worker %s ready: queues=%s concurrency=%s claim connections=%s",
            self.name,
            ",".join(self.queues) if self.queues else "*",
            self.concurrency,
            len(sizes),
        )
        executor = Executor(self.slots, self._on_done)
        self._executor = executor
        try:
            self._loop(executor)
        except BaseException:
            for lane in self._lanes.others(self):
                lane.stop()
            raise
        finally:
            for thread in self._lane_threads:
                while thread.is_alive():  # a timed join: signals still reach this thread
                    thread.join(0.5)
            if listener is not None:
                listener.stop()
            executor.shutdown(wait=False)
            for lane in self._lanes.others(self):
                self.left_behind += lane.left_behind
            self._close(final=True)
            self._wake.close()
            if threading.current_thread() is not threading.main_thread():
                # Schedules fire on this thread's Django connection; a thread's
                # connections otherwise stay open until garbage collection.
                connections.close_all()
        logger.info("worker %s stopped after %s jobs", self.name, self.processed)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming and let running jobs finish within SHUTDOWN_GRACE; called again, stop now.

        Whatever still runs when the grace period ends is interrupted and,
        once its body has stopped, released: pending again at once, rather
        than waiting for its lease to expire.
        """
        if self.stopping or now:
            self._grace_deadline = time.monotonic()
        else:
            self._grace_deadline = time.monotonic() + float(conf.get("SHUTDOWN_GRACE"))
        self.stopping = True
        self._wake.set()
        if not self._is_lane:
            for lane in self._lanes.others(self):
                lane.stop(now=now)

    @property
    def processed(self) -> int:
        """Attempts this worker has finished, over all its lanes."""
        if self._is_lane:
            return self._processed
        return sum(m._processed for m in self._lanes.members)

    def _start_lane(self, slots: int) -> None:
        """A second claim loop on a thread, with ``slots`` of this worker's slots (see lanes.py)."""
        lane = Worker(
            queues=self.queues,
            concurrency=slots,
            burst=self.burst,
            poll_interval=self.poll_interval,
            name=self.name,
        )
        lane._is_lane = True
        lane._lanes = self._lanes
        lane.worker_id = self.worker_id
        lane.schedule_interval = None
        if self.stopping:
            lane.stop()
        self._lanes.add(lane)
        thread = threading.Thread(target=lane._run_lane, name="supaqueue-lane", daemon=True)
        self._lane_threads.append(thread)
        thread.start()

    def _run_lane(self) -> None:
        """A lane's life: claim and run until the worker stops; if it fails, the worker stops too."""
        try:
            self._conn = self._connect_with_retry()
            executor = Executor(self.slots, self._on_done)
            self._executor = executor
            try:
                self._loop(executor)
            finally:
                executor.shutdown(wait=False)
                self._close()
                self._wake.close()
                connections.close_all()
        except BaseException:
            logger.exception("worker %s: a claim lane failed; stopping the worker", self.name)
            self._lanes.members[0].exit_code = 1
            self._lanes.members[0].stop()

    def _queues_to_create(self) -> set[str]:
        names = set(self.queues or [])
        names.add(conf.get("DEFAULT_QUEUE"))
        names.update(t.options.queue for t in registered_tasks().values() if t.options.queue)
        if self.queues:
            names &= set(self.queues)
        return names

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: object) -> None:
            what = "releasing running jobs now" if self.stopping else "finishing running jobs"
            logger.info("worker %s: %s received, %s", self.name, signal.Signals(signum).name, what)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- callbacks from other threads ---------------------------------------
    def _on_done(self, job: ClaimedJob, outcome: Outcome) -> None:
        self._done.append((job, outcome))
        self._wake.set()

    def _on_notify(self, due_epoch: float) -> None:
        with self._notify_lock:
            if due_epoch:
                self._next_due = min(self._next_due, due_epoch)
            else:
                self._notify_seq += 1
        self._wake.set()

    def _on_cancel(self, job_id: int, attempt: int) -> None:
        self._cancelled.append((job_id, attempt))
        self._wake.set()

    def _on_listener_reconnect(self) -> None:
        self._lanes.wake_all()

    def _due(self, epoch: float) -> None:
        """Remember a future run_at (a retry this worker scheduled) as a wake-up timer."""
        with self._notify_lock:
            self._next_due = min(self._next_due, epoch)

    def _take_wake_reasons(self) -> int:
        """Fold notifications and expired timers into ``_wanted``; returns the notify counter."""
        with self._notify_lock:
            if time.time() >= self._next_due:
                self._next_due = math.inf
                self._wanted = True
            return self._notify_seq

    # -- the loop ------------------------------------------------------------
    def _loop(self, executor: Executor) -> None:
        now = time.monotonic()
        next_poll = now + self.poll_interval
        next_beat = now + self.heartbeat_interval
        self._next_prune = now + float(conf.get("PRUNE_INTERVAL"))
        self._next_fire = now if self.schedule_interval else math.inf
        seen_seq = -1
        while True:
            self._wake.clear()
            self._take_notifications()
            self._collect_outcomes()
            self._apply_cancellations(executor)
            if self.stopping and (not self._running or time.monotonic() >= self._grace_deadline):
                if self._stop_deadline is None:
                    self._stop_deadline = time.monotonic() + _STOP_WAIT
                    for key, r in list(self._running.items()):
                        self._interrupt(executor, key, r, "release")
                    self._collect_outcomes()
                if not self._running or time.monotonic() >= self._stop_deadline:
                    self._release_running()
                    return
            if not self.stopping and time.monotonic() >= self._next_fire:
                self._fire_schedules()
                self._next_fire = time.monotonic() + self.schedule_interval
            seq = self._take_wake_reasons()
            if seq != seen_seq:
                seen_seq = seq
                self._wanted = True
            if time.monotonic() >= next_poll:
                self._wanted = True
            free = self._capacity() - len(self._running)
            claim = not self.stopping and free > 0 and (self._wanted or self.burst)
            if claim or self._unflushed:
                limit = min(free, self.claim_batch)
                claimed = self._flush(claim=claim, limit=limit)
                if claim:
                    next_poll = time.monotonic() + self.poll_interval
                    # A full batch may have left more behind; a notification that
                    # arrived meanwhile is picked up by the counter on the next turn.
                    self._wanted = len(claimed) == limit or self._left_out
                    if len(claimed) == limit:
                        self._lanes.wake_others(self)
                    self._dispatch(executor, claimed)
                    if self.burst and not (claimed or self._running or self._done or self._unflushed):
                        return
            self._enforce_timeouts(executor)
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + self.heartbeat_interval
            if (
                self._done
                or self._unflushed
                or self._notify_seq != seen_seq
                or (self._wanted and not self.stopping and len(self._running) < self._capacity())
            ):
                continue
            self._wake.wait(
                self._sleep_time(next_poll, next_beat), self._conn.fileno() if self._listens else None
            )

    def _take_notifications(self) -> None:
        """Route what the claim connection has received: during its last round trip, or while idle."""
        if not self._listens:
            return
        try:
            self._notifications.drain(self._conn)
        except psycopg.Error as exc:
            self._on_database_error(exc)

    def _sleep_time(self, next_poll: float, next_beat: float) -> float:
        now = time.monotonic()
        wake_at = min(next_poll, next_beat, self._next_fire)
        with self._notify_lock:
            next_due = self._next_due
        if next_due != math.inf:
            wake_at = min(wake_at, now + max(0.0, next_due - time.time()))
        for r in self._running.values():
            if r.reason is None:
                wake_at = min(wake_at, self._deadline(r))
            else:
                wake_at = min(wake_at, r.interrupted_at + self.interrupt_grace)
        wake_at = min(wake_at, self._grace_deadline)
        if self._stop_deadline is not None:
            wake_at = min(wake_at, self._stop_deadline)
        return max(0.0, wake_at - now)

    def _collect_outcomes(self) -> None:
        while self._done:
            job, outcome = self._done.popleft()
            key = (job.id, job.attempt)
            r = self._running.get(key)
            if r is None:
                continue
            if r.reason is not None:
                self._stopped(key, r, outcome)
                continue
            del self._running[key]
            self._free(job)
            d = self._typical_duration
            self._typical_duration = outcome.duration if d is None else 0.8 * d + 0.2 * outcome.duration
            self._record(job, outcome)

    def _free(self, job: ClaimedJob) -> None:
        """The attempt's body has ended: wake the workers its cap, serial queue or group held back."""
        if job.capped:
            self._freed_capped.add(job.queue)
            self._wanted = True
        if job.serial_group is not None:
            self._freed_groups.add(job.serial_group)

    def _record(self, job: ClaimedJob, outcome: Outcome) -> None:
        self._unflushed.append(outcome)
        self._outcome_jobs[(job.id, job.attempt)] = job
        self._processed += 1

    def _interrupt(self, executor: Executor, key: tuple[int, int], r: _Running, reason: str) -> None:
        """Stop an attempt; its job keeps its lease (renewed, the slot busy) until the body has ended."""
        if r.reason is not None:
            return  # interrupted already: one interrupt, and the first reason, is what counts
        r.reason = reason
        r.interrupted_at = time.monotonic()
        if not executor.interrupt(r.job, _INTERRUPTS[reason]):
            self._stopped(key, r, None)  # it had not started: it never will

    def _stopped(self, key: tuple[int, int], r: _Running, outcome: Outcome | None) -> None:
        """Record an interrupted attempt whose body has ended (``outcome``: what it reported, if it ran)."""
        del self._running[key]
        self._free(r.job)
        job = r.job
        late = time.monotonic() - r.interrupted_at
        ran = outcome.duration if outcome is not None else 0.0
        if r.reason == "timeout":
            logger.warning(
                "job %s (%s) attempt %s stopped %.1fs after its timeout",
                job.id,
                job.task_name,
                job.attempt,
                late,
            )
            message = f"attempt ran past its timeout of {r.timeout}s; it stopped {late:.1f}s later"
            self._record(job, _interrupted(job, JobTimeout, message, ran))
        elif r.reason == "cancel":
            message = f"the attempt stopped {late:.1f}s after its job was cancelled"
            self._record(job, _interrupted(job, JobCancelled, message, ran, final=True))
        elif r.reason == "release":
            if isinstance(outcome, Success):
                self._record(job, outcome)  # it finished as the interrupt came
            else:
                self._released.append(key)
        # "lost": its lease is gone, so there is nothing to write (any write would be fenced).

    def _apply_cancellations(self, executor: Executor) -> None:
        """Stop attempts cancelled in the database (the job's status is already written)."""
        while self._cancelled:
            key = self._cancelled.popleft()
            r = self._running.get(key)
            if r is not None:
                logger.info("job %s (%s) attempt %s cancelled", r.job.id, r.job.task_name, r.job.attempt)
                self._interrupt(executor, key, r, "cancel")

    def _release_running(self) -> None:
        """Record what finished, give back what stopped, and leave behind what would not stop.

        Attempts still running here are in threads that did not stop within
        _STOP_WAIT (or INTERRUPT_GRACE): they keep their leases, and the
        registered worker hands them over as the process exits (see _close).
        """
        while True:
            self._flush(claim=False)
            if self._unflushed:  # the database refused it for now
                self._heartbeat()
                continue
            try:
                with self._conn.transaction():
                    released = q.release(
                        self._conn, worker_id=self.worker_id, worker_name=self.name, held=self._released
                    )
                break
            except _RETRYABLE:
                continue
            except psycopg.Error as exc:
                self._on_database_error(exc)
                self._heartbeat()
        if released:
            logger.warning("worker %s released %s unfinished jobs: %s", self.name, len(released), released)
        self._released.clear()
        self.left_behind = list(self._running.values())
        self._running.clear()

    def _dispatch(self, executor: Executor, claimed: list[ClaimedJob]) -> None:
        default_timeout = conf.get("TIMEOUT")
        announce = bool(lifecycle.job_started.receivers)
        for job in claimed:
            if announce:
                lifecycle.send(lifecycle.job_started, **_describe(job), wait=job.wait)
            if job.http is not None:  # the HTTP client enforces the timeout; this is the backstop
                timeout = float(job.timeout or conf.get("HTTP_TIMEOUT")) * 2 + 5
            else:
                timeout = _task_timeout(job.task_name) or job.timeout or default_timeout
            self._running[(job.id, job.attempt)] = _Running(job, timeout or None)
            executor.submit(job)

    def _capacity(self) -> int:
        """Jobs this worker may hold: its slots, plus jobs claimed ahead while its jobs are short.

        Claiming ahead makes each round trip carry more jobs (fewer commits per
        job) without running more than ``concurrency`` at once. It is sized so a
        job claimed ahead should start within PREFETCH_WAIT seconds, and stops
        as soon as the recent attempts get long (a slow job never holds others
        hostage for long) or the worker is stopping.
        """
        d = self._typical_duration
        if self.stopping or self.prefetch_wait <= 0 or d is None:
            return self.slots
        ahead = int(self.slots * self.prefetch_wait / max(d, 1e-4))
        return self.slots + min(ahead, self.claim_batch)

    def _deadline(self, r: _Running) -> float:
        """When the attempt times out; one still waiting for a slot is taken to start now."""
        if not r.timeout:
            return math.inf
        return (self._executor.started_at(r.job) or time.monotonic()) + r.timeout

    def _enforce_timeouts(self, executor: Executor) -> None:
        """Interrupt attempts past their timeout; give up on the process if one will not stop."""
        now = time.monotonic()
        for key, r in list(self._running.items()):
            if r.reason is None:
                if self._deadline(r) <= now:
                    logger.warning(
                        "job %s (%s) attempt %s timed out; interrupting it",
                        r.job.id,
                        r.job.task_name,
                        r.job.attempt,
                    )
                    self._interrupt(executor, key, r, "timeout")
                    self._wake.set()
            elif now - r.interrupted_at >= self.interrupt_grace and not self.stopping:
                logger.error(
                    "worker %s: job %s (%s) attempt %s has not stopped %.0fs after it was interrupted "
                    "(%s); the process stops claiming, releases what it can and exits, which ends it",
                    self.name,
                    r.job.id,
                    r.job.task_name,
                    r.job.attempt,
                    now - r.interrupted_at,
                    r.reason,
                )
                main = self._lanes.members[0]
                main.exit_code = 1
                main.stop(now=True)

    # -- database ------------------------------------------------------------
    def _flush(self, *, claim: bool, limit: int = 0) -> list[ClaimedJob]:
        """Record finished attempts and claim new jobs in one transaction.

        If it fails (other than by a conflict worth retrying at once), the
        outcomes stay unflushed for the next turn of the loop, which keeps
        heartbeating meanwhile: a lock held for longer than a lease must not
        make this worker's own leases expire.
        """
        if not claim and not self._unflushed:
            return []
        successes = [o for o in self._unflushed if isinstance(o, Success)]
        failures = [o for o in self._unflushed if isinstance(o, Failure)]
        assert self.worker_id is not None
        while True:
            try:
                done = q.finish_and_claim(
                    self._conn,
                    worker_id=self.worker_id,
                    worker_name=self.name,
                    successes=successes,
                    failures=failures,
                    freed_queues=self._freed_capped,
                    freed_groups=self._freed_groups,
                    serial=self._serial,
                    lock=self._capped,
                    queues=self.queues,
                    limit=limit if claim else 0,
                    lease_seconds=self.lease,
                    free=max(0, self.slots - len(self._running)),
                )
                break
            except _RETRYABLE:
                continue
            except psycopg.Error as exc:
                self._on_database_error(exc)
                self._wanted = True
                return []
        self._unflushed.clear()
        self._freed_capped.clear()
        self._freed_groups.clear()
        if claim:
            self._left_out = (done.serial_work and not self._serial) or (done.capped and not self._capped)
            self._serial, self._capped = done.serial_work, done.capped
        for r in done.retries:
            if r.status == q.PENDING:
                self._due(r.run_at.timestamp())
        self._announce(successes, failures, done.retries)
        if done.rate_wake is not None:
            self._due(done.rate_wake)  # a rate-limited queue has room again then
        return done.jobs

    def _announce(self, successes: list[Success], failures: list[Failure], retries: list[q.Retry]) -> None:
        """Send the life-cycle signals for outcomes just written."""
        jobs, self._outcome_jobs = self._outcome_jobs, {}
        if not (
            lifecycle.job_succeeded.receivers
            or lifecycle.job_retried.receivers
            or lifecycle.job_failed.receivers
        ):
            return
        for s in successes:
            job = jobs.get((s.job_id, s.attempt))
            if job is not None:
                lifecycle.send(lifecycle.job_succeeded, **_describe(job), duration=s.duration)
        status = {r.job_id: r for r in retries}
        for f in failures:
            job, r = jobs.get((f.job_id, f.attempt)), status.get(f.job_id)
            if job is None or r is None:
                continue  # fenced: the lease was gone, nothing was written
            signal = lifecycle.job_retried if r.status == q.PENDING else lifecycle.job_failed
            lifecycle.send(
                signal,
                **_describe(job),
                duration=f.duration,
                error_class=f.error_class,
                error_message=f.error_message,
                retry_at=r.run_at if r.status == q.PENDING else None,
            )

    def _fire_schedules(self) -> None:
        """Enqueue the jobs of due schedules, on Django's connection (a tick commits with its job)."""
        try:
            fired = scheduling.fire_due()
        except DatabaseError as exc:
            logger.warning("worker %s could not fire schedules (%s); trying again", self.name, exc)
            connections[conf.get("DATABASE")].close()
            return
        except Exception:  # noqa: BLE001  a schedule must never stop the worker running jobs
            logger.exception("worker %s could not fire schedules", self.name)
            return
        if fired:
            self._wanted = True  # the NOTIFY will come too; no need to wait for it

    def _heartbeat(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            logger.warning("worker %s: supervisor is gone, stopping", self.name)
            self.stop()
        try:
            held = [(r.job.id, r.job.attempt) for r in self._running.values()]
            # Attempts that ended but are not written yet (the database refused the
            # write for now) still hold their leases: they are renewed too.
            waiting = [(o.job_id, o.attempt) for o in self._unflushed] + self._released
            beat = q.heartbeat(self._conn, self.worker_id, self.lease, held + waiting)
            for key in set(held) - beat.renewed:
                r = self._running.get(key)
                if r is not None and r.reason is None:
                    logger.error(
                        "worker %s lost the lease of job %s attempt %s (it could not renew it in time); "
                        "interrupting it, since the job may run elsewhere",
                        self.name,
                        *key,
                    )
                    self._interrupt(self._executor, key, r, "lost")
            if self._is_lane:
                return  # the registered lane keeps the row and does the chores
            if not beat.registered:
                logger.error(
                    "worker %s found its registration removed (it was silent too long); registering again",
                    self.name,
                )
                q.register_worker(
                    self._conn,
                    name=self.name,
                    host=self.host,
                    pid=os.getpid(),
                    queues=self.queues,
                    concurrency=self.concurrency,
                    worker_id=self.worker_id,
                )
            recovered = q.recover_expired(self._conn, stale_after=self.lease * 2)
            if recovered:
                self._wanted = True
                for r in recovered:
                    lifecycle.send(lifecycle.job_lost, job_id=r.job_id, status=r.status)
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + float(conf.get("PRUNE_INTERVAL"))
                q.prune(
                    self._conn,
                    successful_hours=conf.get("RETAIN_SUCCESSFUL_HOURS"),
                    failed_hours=conf.get("RETAIN_FAILED_HOURS"),
                    cancelled_hours=conf.get("RETAIN_CANCELLED_HOURS"),
                    batch=int(conf.get("PRUNE_BATCH")),
                )
        except psycopg.Error as exc:
            self._on_database_error(exc)

    def _connect_with_retry(self) -> psycopg.Connection:
        delay = 0.5
        while True:
            try:
                conn = connect()
                try:
                    if self._listens:
                        listen(conn)
                except psycopg.Error:
                    conn.close()
                    raise
                return conn
            except psycopg.OperationalError as exc:
                if self.stopping:
                    raise
                logger.warning(
                    "worker %s cannot reach the database (%s); retrying in %.1fs", self.name, exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _on_database_error(self, exc: psycopg.Error) -> None:
        """Reconnect if the connection died; otherwise (a cancelled statement, a lock or statement
        timeout) the transaction was rolled back and the caller tries again, on the same connection
        and under the same registration: the worker has not died, and its leases are still its own.
        """
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._reconnect(exc)
            return
        logger.warning(
            "worker %s: a statement failed (%s: %s); trying again",
            self.name,
            type(exc).__name__,
            str(exc).strip(),
        )
        time.sleep(0.5)

    def _reconnect(self, exc: Exception) -> None:
        logger.warning("worker %s lost its database connection (%s); reconnecting", self.name, exc)
        self._close()
        self._conn = self._connect_with_retry()
        self._wanted = True
        if self._listens:
            self._lanes.wake_all()  # notifications sent while it was away are lost

    def _close(self, *, final: bool = False) -> None:
        """Close the claim connection; ``final``: the worker is done, so it also hands over what
        it leaves behind and removes its registration (never before: its leases point at it).
        """
        if self._conn is None:
            return
        try:
            if final and not self._is_lane and self.worker_id is not None:
                with self._conn.transaction():
                    self._leave_behind()
                    q.unregister_worker(self._conn, self.worker_id)
        except psycopg.Error as exc:
            logger.warning("worker %s could not unregister (%s)", self.name, exc)
        finally:
            self._conn.close()
            self._conn = None

    def _leave_behind(self) -> None:
        """Hand over the attempts whose threads would not stop; the process exits right after.

        A job given back by a stopping worker is released, runnable again
        after _LEFT_BEHIND_DELAY; a timed-out or cancelled one keeps its lease
        until then, and recovery then counts the attempt as lost.
        """
        if not self.left_behind:
            return
        released = [(r.job.id, r.job.attempt) for r in self.left_behind if r.reason in (None, "release")]
        others = [(r.job.id, r.job.attempt) for r in self.left_behind if r.reason not in (None, "release")]
        q.release(
            self._conn,
            worker_id=self.worker_id,
            worker_name=self.name,
            held=released,
            delay=_LEFT_BEHIND_DELAY,
            message="the worker stopped before the attempt finished; its thread would not stop, "
            "so the worker process exited to end it",
        )
        q.expire_leases(self._conn, worker_id=self.worker_id, held=others, after=_LEFT_BEHIND_DELAY)
        logger.error(
            "worker %s exits with %s attempts whose threads would not stop: %s",
            self.name,
            len(self.left_behind),
            [(r.job.id, r.job.attempt) for r in self.left_behind],
        )


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


def _describe(job: ClaimedJob) -> dict[str, object]:
    return {"job_id": job.id, "queue": job.queue, "task_name": job.task_name, "attempt": job.attempt}


def _task_timeout(task_name: str) -> float | None:
    try:
        return get_task(task_name).options.timeout
    except Exception:  # noqa: BLE001  unknown tasks fail in the executor, with a clear error
        return None
