"""Run claimed jobs on a pool of threads and report each outcome.

An attempt that must stop (timeout, cancel, shutdown) is interrupted by its
own execution mode: in threads mode its thread gets an AttemptInterrupted
raised at its next Python instruction; in processes mode the child running it
is killed. Either way the slot stays busy, and ``on_done`` reports the
attempt, only once its body has really stopped: the runtime keeps the job's
lease until then, so the job can never start again while a body still runs.
"""

from __future__ import annotations

import ctypes
import json
import queue as queue_lib
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from django.db import connections

from .. import context, tracing
from ..exceptions import AttemptInterrupted
from ..queue import ClaimedJob, Failure, Success, storable
from ..tasks import get_task
from . import coroutines
from .child import ChildProcess
from .job_connections import after_attempt

Outcome = Success | Failure


def perform(job: ClaimedJob) -> Outcome:
    """Run one attempt on a job thread, then tidy the thread's connections for its next one.

    They stay open between attempts (see job_connections.py): a new one per
    attempt, as Django's CONN_MAX_AGE=0 would have it, costs a server process.
    """
    try:
        with tracing.attempt_span(job) as span:
            # As it will be written: a result PostgreSQL refuses is a failure, and
            # the signals, metrics and span must say so too.
            outcome = storable(run_attempt(job))
            tracing.record_outcome(span, outcome)
            return outcome
    finally:
        after_attempt()


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
            elif task.is_async:
                value = coroutines.run(task.func(*job.args, **job.payload))
            else:
                value = task.func(*job.args, **job.payload)
        result = result_json(value)
    except BaseException as exc:  # noqa: BLE001  every failure must be recorded, even SystemExit
        return failed(job, exc, started)
    return Success(job_id=job.id, attempt=job.attempt, result=result, duration=time.monotonic() - started)


def result_json(value: Any) -> str | None:
    """A task's return value as the job's result; raises what a value JSON cannot hold raises."""
    return None if value is None else json.dumps(value, allow_nan=False, separators=(",", ":"))


def failed(job: ClaimedJob, exc: BaseException, started: float) -> Failure:
    """The failure of an attempt whose task raised ``exc``, with its task's back-off."""
    opts = _task_options(job.task_name)
    return Failure(
        job_id=job.id,
        attempt=job.attempt,
        error_class=_qualname(exc),
        error_message=_message(exc),
        traceback="".join(traceback.format_exception(exc)),
        duration=time.monotonic() - started,
        backoff=opts.retry_backoff if opts else None,
        backoff_max=opts.retry_backoff_max if opts else None,
    )


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
        self._started: dict[tuple[int, int], float] = {}  # -> time.monotonic() its body began
        # Jobs claimed ahead (prefetched) wait in _jobs for a free slot; one
        # interrupted while it waits is skipped when a slot takes it.
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
        """When the attempt's body began (time.monotonic()), or None while it waits for a slot.

        In processes mode the body begins when the child reports it, not when
        the job is sent: a fresh child's start-up never counts against a timeout.
        """
        return self._started.get((job.id, job.attempt))

    def interrupt(self, job: ClaimedJob, exc: type[AttemptInterrupted]) -> bool:
        """Stop ``job``'s attempt by its own mode; False if it had not started (it never will).

        True means the attempt is stopping: ``on_done`` reports it once its
        body has ended (at once in processes mode, where the child is killed;
        at the thread's next Python instruction in threads mode, which a call
        blocked in C can delay). An attempt is interrupted at most once.
        """
        key = (job.id, job.attempt)
        with self._lock:
            if key in self._queued:
                self._queued.discard(key)
                self._skipped.add(key)
                return False
            slot = self._current.get(key)
            if slot is None or slot.interrupted:
                return True  # already finishing: its outcome is on its way
            slot.interrupted = True
            if job.execution_mode != "processes":
                # Under the lock: the slot cannot leave this attempt's body meanwhile
                # (see _leave_body), so the exception can only land in this attempt.
                # A coroutine body is cancelled instead (see coroutines.py).
                thread = slot.thread
                coroutines.interrupt(thread, exc, lambda: _raise_in_thread(thread, exc))
                return True
            child = slot.child
        if child is not None:
            child.kill()
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
            while True:
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
                    slot.interrupted = False
                    if job.execution_mode != "processes":
                        self._started[key] = time.monotonic()
                started = time.monotonic()
                outcome: Outcome | None = None
                try:
                    outcome = self._perform(slot, job)
                    self._leave_body(key)
                except AttemptInterrupted as exc:  # landed outside the task's own code
                    if outcome is None:
                        outcome = _interrupted(job, exc, time.monotonic() - started)
                    self._leave_body(key)
                self.on_done(job, outcome)
        finally:
            if slot.child is not None:
                slot.child.close()
            # Persistent connections (CONN_MAX_AGE) of a slot's thread would
            # otherwise stay open until garbage collection.
            connections.close_all()

    def _leave_body(self, key: tuple[int, int]) -> None:
        """Mark the attempt ended, so that no interrupt can be raised for it any more.

        interrupt() raises only while the attempt is current, holding the lock;
        once it is not, a raise that was sent but has not landed yet is cleared.
        One that lands on the way is caught here, and the steps are repeated.
        """
        while True:
            try:
                with self._lock:
                    self._current.pop(key, None)
                    self._started.pop(key, None)
                _raise_in_thread(threading.current_thread(), None)
                return
            except AttemptInterrupted:
                continue

    def _perform(self, slot: _Slot, job: ClaimedJob) -> Outcome:
        if job.execution_mode != "processes":
            return perform(job)
        if slot.child is None:
            slot.child = ChildProcess()
        key = (job.id, job.attempt)
        with self._lock:
            interrupted = slot.interrupted
        if interrupted:  # while its child started: the job is never sent
            if slot.child.killed:
                slot.child.close()
                slot.child = None
            return _interrupted(job, None, 0.0)

        def body_started() -> None:
            with self._lock:
                if key in self._current:
                    self._started[key] = time.monotonic()

        started = time.monotonic()
        try:
            return slot.child.run(job, body_started)
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


def _raise_in_thread(thread: threading.Thread, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in ``thread`` at its next Python instruction; None clears one not yet raised."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc) if exc is not None else None
    )


def _interrupted(job: ClaimedJob, exc: BaseException | None, duration: float) -> Failure:
    """The outcome of an attempt stopped before its task could report one (the runtime says why)."""
    return Failure(
        job_id=job.id,
        attempt=job.attempt,
        error_class=_qualname(exc) if exc is not None else "django_supaqueue.exceptions.AttemptInterrupted",
        error_message="the attempt was interrupted",
        traceback="",
        duration=duration,
    )


class _Slot:
    __slots__ = ("thread", "interrupted", "child")

    def __init__(self) -> None:
        self.thread: threading.Thread
        self.interrupted = False  # its current attempt was interrupted (once is enough)
        self.child: ChildProcess | None = None
