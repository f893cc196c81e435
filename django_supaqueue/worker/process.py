"""One worker process: its registration, its claim loops, its chores and how it stops.

The process registers a Worker row, starts one claim loop per claim connection
(each on a thread, with a share of the slots; see lanes.py), handles SIGTERM
and SIGINT, and gives its first loop the chores: the Worker row's heartbeat,
recovery of expired leases, pruning, due schedules, and noticing that its
supervisor is gone. The run endpoint runs one for the length of a request
(``max_jobs``, no LISTEN), so it gets the same leases, timeouts, signals and
chores as ``runworkers``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence

import psycopg
from django.db import DatabaseError, connections

from .. import conf, scheduling
from .. import queue as q
from ..handlers import http as _http  # noqa: F401  imported up front: a first HTTP call pays no import
from ..queue import ClaimedJob
from ..tasks import registered_tasks
from . import attempts
from .claim_loop import ClaimLoop
from .connection import connect
from .lanes import Lanes, lane_sizes
from .listener import Listener, Notifications, listen, listens_on_claim_connection
from .running import Attempt, hand_over

logger = logging.getLogger("django_supaqueue.worker")


class WorkerProcess:
    """Runs jobs from ``queues`` (None: every queue) ``concurrency`` at a time, until stopped.

    ``async_concurrency``: calls to HTTP queues in flight at once on the
    process's async lane (see aio.py); 0 runs them on the threads too.
    ``burst``: until nothing is runnable. ``max_jobs``: claim at most that
    many, then stop once they are done. ``job_ids``: claim only those jobs.
    ``report``: keep what became of each attempt in ``finished``.
    """

    def __init__(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        async_concurrency: int | None = None,
        burst: bool = False,
        poll_interval: float | None = None,
        name: str | None = None,
        parent_pid: int | None = None,
        metrics_port: int | None = None,
        max_jobs: int | None = None,
        job_ids: Sequence[int] | None = None,
        listen: bool | None = None,
        claim_connections: int | None = None,
        report: bool = False,
    ) -> None:
        self.queues = sorted(set(queues)) if queues else None
        self.concurrency = concurrency or int(conf.get("CONCURRENCY"))
        self.async_concurrency = int(
            async_concurrency if async_concurrency is not None else conf.get("ASYNC_CONCURRENCY")
        )
        self.burst = burst
        self.poll_interval = float(poll_interval if poll_interval is not None else conf.get("POLL_INTERVAL"))
        self.heartbeat_interval = float(conf.get("HEARTBEAT_INTERVAL"))
        self.lease = float(conf.get("LEASE_DURATION"))
        self.claim_batch = int(conf.get("CLAIM_BATCH"))
        self.prefetch_wait = float(conf.get("PREFETCH_WAIT") or 0)
        self.interrupt_grace = float(conf.get("INTERRUPT_GRACE"))
        interval = conf.get("SCHEDULE_INTERVAL")
        self.schedule_interval = float(interval) if interval else None
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.parent_pid = parent_pid
        self.metrics_port = metrics_port
        self.max_jobs = max_jobs
        self.job_ids = list(job_ids) if job_ids is not None else None
        self.listen = bool(conf.get("LISTEN")) if listen is None else listen
        self.claim_connections = int(claim_connections or conf.get("CLAIM_CONNECTIONS"))
        self.report = report
        self.worker_id: int | None = None
        self.stopping = False
        #: 1 when the process must be replaced (an attempt would not stop); the command's exit status.
        self.exit_code = 0
        #: Attempts still running when the worker stopped (threads that would not stop):
        #: the process must exit to end them (run_workers does).
        self.left_behind: list[Attempt] = []
        self.loops: list[ClaimLoop] = []
        self.lanes = Lanes(self.loops)
        self.notifications = Notifications(
            set(self.queues) if self.queues else None, self.lanes.route_jobs, self.lanes.route_cancel
        )
        self._claimed = 0
        self._claim_order: dict[tuple[int, int], int] = {}
        self._next_prune = 0.0
        self._threads: list[threading.Thread] = []
        self._lanes_lock = threading.Lock()  # lanes are added while others run (start_async_lane)
        self._lanes_closed = False

    @property
    def processed(self) -> int:
        """Attempts this process has finished, over all its loops."""
        return sum(loop.processed for loop in self.loops)

    @property
    def finished(self) -> list[attempts.Finished]:
        """What became of each attempt, in the order they were claimed, when ``report`` is on."""
        done = [f for loop in self.loops for f in loop.finished]
        return sorted(done, key=lambda f: self._claim_order.get((f.job.id, f.job.attempt), 0))

    # -- life cycle -------------------------------------------------------
    def run(self, *, handle_signals: bool = True) -> None:
        """Work until stopped (SIGTERM/SIGINT) or, in burst mode, until nothing is runnable."""
        if handle_signals:
            self._install_signal_handlers()
        if self.metrics_port is not None:
            from .. import metrics

            metrics.serve(self.metrics_port)
        listens = self.listen and listens_on_claim_connection()
        # The first lane's connection, or the Listener's, LISTENs before the Worker row
        # exists: a job enqueued once the worker shows as registered has its notification
        # heard, even a delayed one that the lanes' first claims cannot see (the lanes
        # take what arrives before they exist, see Lanes.route_jobs).
        listener = None
        if self.listen and not listens:
            listener = Listener(self.notifications, self.lanes.wake_all)
            listener.start()
            listener.ready.wait(10)
        conn = self.connect(listens=listens)
        try:
            q.ensure_queues(self._queues_to_create(), conn)
            self.worker_id = q.register_worker(
                conn,
                name=self.name,
                host=self.host,
                pid=os.getpid(),
                queues=self.queues,
                concurrency=self.concurrency,
            )
            loop_work = self.async_concurrency > 0 and q.loop_work(conn, self.queues)
        except BaseException:
            conn.close()
            if listener is not None:
                listener.stop()
            raise
        if not listens:
            conn.close()
        sizes = lane_sizes(self.concurrency, self.claim_connections)
        # With an async lane, HTTP queues' calls are its own and the thread lanes take the rest.
        on_loop = False if self.async_concurrency > 0 else None
        for i, size in enumerate(sizes):
            self.loops.append(
                ClaimLoop(self, size, chores=i == 0, listens=listens and i == 0, on_loop=on_loop)
            )
        if loop_work:
            self.loops.append(self._async_lane())
        if listens:
            self.loops[0].adopt(conn)
        self.lanes.started()
        if self.stopping:
            for loop in self.loops:
                loop.stop()
        logger.info(
            "worker %s ready: queues=%s concurrency=%s async concurrency=%s claim connections=%s",
            self.name,
            ",".join(self.queues) if self.queues else "*",
            self.concurrency,
            self.async_concurrency,
            len(self.loops),
        )
        for loop in self.loops[1:]:
            self._start_lane(loop)
        try:
            self._run_loop(self.loops[0])
        finally:
            with self._lanes_lock:
                self._lanes_closed = True  # no lane starts now: the list below is complete
            for thread in self._threads:
                while thread.is_alive():  # a timed join: signals still reach this thread
                    thread.join(0.5)
            if listener is not None:
                listener.stop()
            self._close()
            if threading.current_thread() is not threading.main_thread():
                # Schedules fire on this thread's Django connection; a thread's
                # connections otherwise stay open until garbage collection.
                connections.close_all()
        logger.info("worker %s stopped after %s jobs", self.name, self.processed)

    def _async_lane(self) -> ClaimLoop:
        return ClaimLoop(self, self.async_concurrency, chores=False, listens=False, on_loop=True)

    def _start_lane(self, loop: ClaimLoop) -> None:
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="supaqueue-lane", daemon=True)
        self._threads.append(thread)
        thread.start()

    def start_async_lane(self) -> None:
        """Start the async lane once a served queue's jobs run on the event loop (a claim said so).

        A worker starts it only when it serves an HTTP or an async queue: without one, the
        lane's event loop, its threads and aiohttp would only hold memory. A queue made
        such while the worker runs is reported by the next claim's rate_wake, and its
        jobs wait for that claim, as they would wait for a free slot.
        """
        with self._lanes_lock:
            if self._lanes_closed or self.stopping or any(loop.on_loop for loop in self.loops):
                return
            loop = self._async_lane()
            self.loops.append(loop)
            self._start_lane(loop)
        if self.stopping:  # stop() may have gone through the loops before this one was added
            loop.stop()
        logger.info("worker %s: async lane started (async concurrency=%s)", self.name, self.async_concurrency)

    def _run_loop(self, loop: ClaimLoop) -> None:
        """A loop's life: claim and run until the worker stops; if it fails, the worker stops too."""
        try:
            loop.run()
        except BaseException:
            if loop is self.loops[0]:
                self.stop()
                raise
            logger.exception("worker %s: a claim loop failed; stopping the worker", self.name)
            self.exit_code = 1
            self.stop()
        finally:
            self.left_behind += loop.left_behind
            if loop is not self.loops[0]:
                conn = loop.close()
                if conn is not None:
                    conn.close()
                connections.close_all()

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming and let running jobs finish within SHUTDOWN_GRACE; called again, stop now.

        Whatever still runs when the grace period ends is interrupted and,
        once its body has stopped, released: pending again at once, rather
        than waiting for its lease to expire.
        """
        now = now or self.stopping
        self.stopping = True
        for loop in self.loops:
            loop.stop(now=now)

    def give_up(self, stuck: Attempt) -> None:
        """An interrupted attempt will not stop: stop claiming, release what can be, and exit 1."""
        logger.error(
            "worker %s: job %s (%s) attempt %s has not stopped %.0fs after it was interrupted (%s); "
            "the process stops claiming, releases what it can and exits, which ends it",
            self.name,
            stuck.job.id,
            stuck.job.task_name,
            stuck.job.attempt,
            self.interrupt_grace,
            stuck.reason,
        )
        self.exit_code = 1
        self.stop(now=True)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: object) -> None:
            what = "releasing running jobs now" if self.stopping else "finishing running jobs"
            logger.info("worker %s: %s received, %s", self.name, signal.Signals(signum).name, what)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- what the claim loops ask of the process ----------------------------------
    def connect(self, *, listens: bool = False) -> psycopg.Connection:
        """A claim connection (listening if asked), retried with back-off while the database is away."""
        delay = 0.5
        while True:
            try:
                conn = connect()
                try:
                    if listens:
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

    def claims_left(self) -> float:
        """How many more jobs this process may claim (``max_jobs``)."""
        return math.inf if self.max_jobs is None else self.max_jobs - self._claimed

    def claimed(self, jobs: Sequence[ClaimedJob]) -> None:
        """Count what a loop claimed (``max_jobs``), and keep its order for the report."""
        self._claimed += len(jobs)
        if self.report:
            for job in jobs:
                self._claim_order[(job.id, job.attempt)] = len(self._claim_order)

    def chores(self, conn: psycopg.Connection, *, registered: bool) -> bool:
        """The process's share of a heartbeat: its row, recovery, pruning. True if jobs were recovered."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            logger.warning("worker %s: supervisor is gone, stopping", self.name)
            self.stop()
        if not registered:
            logger.error(
                "worker %s found its registration removed (it was silent too long); registering again",
                self.name,
            )
            q.register_worker(
                conn,
                name=self.name,
                host=self.host,
                pid=os.getpid(),
                queues=self.queues,
                concurrency=self.concurrency,
                worker_id=self.worker_id,
            )
        recovered = q.recover_expired(conn, stale_after=self.lease * 2)
        attempts.announce_lost(recovered)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + float(conf.get("PRUNE_INTERVAL"))
            q.prune(
                conn,
                successful_hours=conf.get("RETAIN_SUCCESSFUL_HOURS"),
                failed_hours=conf.get("RETAIN_FAILED_HOURS"),
                cancelled_hours=conf.get("RETAIN_CANCELLED_HOURS"),
                batch=int(conf.get("PRUNE_BATCH")),
            )
        return bool(recovered)

    def fire_schedules(self) -> bool:
        """Enqueue the jobs of due schedules, on Django's connection (a tick commits with its job)."""
        try:
            return bool(scheduling.fire_due())
        except DatabaseError as exc:
            logger.warning("worker %s could not fire schedules (%s); trying again", self.name, exc)
            connections[conf.get("DATABASE")].close()
        except Exception:  # noqa: BLE001  a schedule must never stop the worker running jobs
            logger.exception("worker %s could not fire schedules", self.name)
        return False

    # -- the end ------------------------------------------------------------------
    def _close(self) -> None:
        """Hand over what is left behind and remove the registration (never before: leases point at it)."""
        conn = self.loops[0].close() if self.loops else None
        if conn is None:
            return
        try:
            if self.worker_id is not None:
                with conn.transaction():
                    hand_over(conn, self.worker_id, self.name, self.left_behind)
                    q.unregister_worker(conn, self.worker_id)
        except psycopg.Error as exc:
            logger.warning("worker %s could not unregister (%s)", self.name, exc)
        finally:
            conn.close()

    def _queues_to_create(self) -> set[str]:
        names = set(self.queues or [])
        names.add(conf.get("DEFAULT_QUEUE"))
        names.update(t.options.queue for t in registered_tasks().values() if t.options.queue)
        if self.queues:
            names &= set(self.queues)
        return names
