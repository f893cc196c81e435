"""Run claimed jobs on a pool of threads and report each outcome.

A slot whose attempt must stop (timeout, cancel, shutdown) is abandoned. In
threads mode its thread gets a JobTimeout raised at its next Python
instruction and exits once it unwinds, while a fresh thread takes the slot at
once, so a stuck task never shrinks the pool. In processes mode the attempt
runs in the slot's child process, which is killed.
"""

from __future__ import annotations

import ctypes
import json
import logging
import queue as queue_lib
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connections

from .. import context, tracing
from ..exceptions import JobTimeout
from ..queue import ClaimedJob, Failure, Success
from ..tasks import get_task
from .child import ChildProcess

logger = logging.getLogger("django_supaqueue.worker")

Outcome = Success | Failure


def perform(job: ClaimedJob) -> Outcome:
    """Run one attempt on a job thread, then let Django drop connections the task left unusable."""
    try:
        with tracing.attempt_span(job) as span:
            outcome = run_attempt(job)
            tracing.record_outcome(span, outcome)
            return outcome
    finally:
        close_old_connections()


def run_attempt(job: ClaimedJob) -> Outcome:
    """Run one attempt and turn whatever happens into a Success or a Failure.

    Leaves Django's connections alone, so that django_supaqueue.testing can run
    attempts inside a test's transaction.
    """
    if job.http is not None:
        from ..handlers.http import perform_http  # imported by the runtime; a task-only child skips httpx

        return perform_http(job)
    started = time.monotonic()
    try:
        task = get_task(job.task_name)
        with context.running(job.id, job.attempt):
            if task.django_task is not None:
                from .django_tasks import run_django_task

                value = run_django_task(task.django_task, job)
            else:
                value = task.func(*job.args, **job.payload)
        result = None if value is None else json.dumps(value, allow_nan=False, separators=(",", ":"))
    except BaseException as exc:  # noqa: BLE001  every failure must be recorded, even SystemExit
        duration = time.monotonic() - started
        opts = _task_options(job.task_name)
        failure = Failure(
            job_id=job.id,
            attempt=job.attempt,
            error_class=_qualname(exc),
            error_message=_message(exc),
            traceback="".join(traceback.format_exception(exc)),
            duration=duration,
            backoff=opts.retry_backoff if opts else None,
            backoff_max=opts.retry_backoff_max if opts else None,
        )
        logger.warning(
            "job %s (%s) attempt %s failed: %s: %s",
            job.id,
            job.task_name,
            job.attempt,
            failure.error_class,
            failure.error_message,
            extra={
                "job_id": job.id,
                "queue": job.queue,
                "task": job.task_name,
                "attempt": job.attempt,
                "duration": duration,
                "outcome": "failed",
            },
        )
        return failure
    duration = time.monotonic() - started
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "job %s (%s) attempt %s succeeded in %.3fs",
            job.id,
            job.task_name,
            job.attempt,
            duration,
            extra={
                "job_id": job.id,
                "queue": job.queue,
                "task": job.task_name,
                "attempt": job.attempt,
                "duration": duration,
                "outcome": "succeeded",
            },
        )
    return Success(job_id=job.id, attempt=job.attempt, result=result, duration=duration)


def _task_options(name: str) -> Any:
    try:
        return get_task(name).options
    except Exception:  # noqa: BLE001  an unknown task simply has no options
        return None


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    if isinstance(exc, TypeError | ValueError) and "JSON" in str(exc):
        return f"result is not JSON-serialisable: {exc}"
    return str(exc)


class Executor:
    """A fixed number of job slots, each a thread; ``on_done(job, outcome)`` gets every result."""

    def __init__(self, size: int, on_done: Callable[[ClaimedJob, Outcome], None]) -> None:
        self.on_done = on_done
        self._jobs: queue_lib.SimpleQueue[ClaimedJob | None] = queue_lib.SimpleQueue()
        self._lock = threading.Lock()
        self._slots: set[_Slot] = set()
        self._current: dict[tuple[int, int], _Slot] = {}  # (job id, attempt) -> slot running it
        self._started: dict[tuple[int, int], float] = {}  # -> time.monotonic() its attempt began
        # Jobs claimed ahead (prefetched) wait in _jobs for a free slot; one
        # abandoned while it waits is skipped when a slot takes it.
        self._queued: set[tuple[int, int]] = set()
        self._skipped: set[tuple[int, int]] = set()
        self._closing = False
        for _ in range(size):
            self._spawn()

    def submit(self, job: ClaimedJob) -> None:
        with self._lock:
            self._queued.add((job.id, job.attempt))
        self._jobs.put(job)

    def started_at(self, job: ClaimedJob) -> float | None:
        """When a slot began the attempt (time.monotonic()), or None while it waits for a slot."""
        return self._started.get((job.id, job.attempt))

    def abandon(self, job: ClaimedJob) -> bool:
        """Stop ``job`` now: kill its child process, or interrupt its thread and replace it.

        A job still waiting for a slot is simply never started.
        """
        key = (job.id, job.attempt)
        with self._lock:
            if key in self._queued:
                self._queued.discard(key)
                self._skipped.add(key)
                return True
            slot = self._current.pop(key, None)
            self._started.pop(key, None)
            if slot is None:
                return False
            if slot.child is None:
                self._slots.discard(slot)
        if slot.child is not None:
            slot.child.kill()
            return True
        slot.abandoned = True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(slot.thread.ident), ctypes.py_object(JobTimeout)
        )
        self._spawn()
        return True

    def shutdown(self, wait: bool = True) -> None:
        self._closing = True
        with self._lock:
            slots = list(self._slots)
        for _ in slots:
            self._jobs.put(None)
        for slot in slots:
            if slot.child is not None:
                slot.child.kill()
        if wait:
            for slot in slots:
                slot.thread.join()

    def _spawn(self) -> None:
        slot = _Slot()
        slot.thread = threading.Thread(target=self._run, args=(slot,), name="supaqueue-job", daemon=True)
        with self._lock:
            self._slots.add(slot)
        slot.thread.start()

    def _run(self, slot: _Slot) -> None:
        try:
            while not slot.abandoned:
                job = self._jobs.get()
                if job is None:
                    break
                key = (job.id, job.attempt)
                with self._lock:
                    self._queued.discard(key)
                    if key in self._skipped:
                        self._skipped.discard(key)
                        continue
                    self._current[key] = slot
                    self._started[key] = time.monotonic()
                outcome = self._perform(slot, job)
                with self._lock:
                    self._current.pop(key, None)
                    self._started.pop(key, None)
                self.on_done(job, outcome)
        except JobTimeout:
            pass  # the interruption landed after the job finished; this thread was replaced anyway
        finally:
            if slot.child is not None:
                slot.child.close()
            # Persistent connections (CONN_MAX_AGE) of a slot's thread would
            # otherwise stay open until garbage collection.
            connections.close_all()

    def _perform(self, slot: _Slot, job: ClaimedJob) -> Outcome:
        if job.execution_mode != "processes":
            return perform(job)
        if slot.child is None:
            slot.child = ChildProcess()
        started = time.monotonic()
        try:
            return slot.child.run(job)
        except (EOFError, OSError):
            child = slot.child
            child.close()
            # Start the replacement now, so the slot is ready sooner.
            slot.child = None if self._closing else ChildProcess()
            why = "was killed" if child.killed else f"exited with code {child.process.exitcode}"
            return Failure(
                job_id=job.id,
                attempt=job.attempt,
                error_class="django_supaqueue.exceptions.ChildProcessDied",
                error_message=f"the process running the attempt {why}",
                traceback="",
                duration=time.monotonic() - started,
            )


class _Slot:
    __slots__ = ("thread", "abandoned", "child")

    def __init__(self) -> None:
        self.thread: threading.Thread
        self.abandoned = False
        self.child: ChildProcess | None = None
