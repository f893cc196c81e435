"""Run claimed jobs on a pool of threads and report each outcome.

A thread whose job ran past its timeout is abandoned: it gets a JobTimeout
raised at its next Python instruction and exits once it unwinds, while a fresh
thread takes its slot at once, so a stuck task never shrinks the pool.
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

from django.db import close_old_connections

from ..exceptions import JobTimeout
from ..queue import ClaimedJob, Failure, Success
from ..tasks import get_task

logger = logging.getLogger("django_supaqueue.worker")

Outcome = Success | Failure


def perform(job: ClaimedJob) -> Outcome:
    """Run one attempt and turn whatever happens into a Success or a Failure."""
    started = time.monotonic()
    try:
        task = get_task(job.task_name)
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
    finally:
        close_old_connections()
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
        self._threads: dict[int, _Slot] = {}
        self._current: dict[tuple[int, int], int] = {}  # (job id, attempt) -> thread ident
        for _ in range(size):
            self._spawn()

    def submit(self, job: ClaimedJob) -> None:
        self._jobs.put(job)

    def abandon(self, job: ClaimedJob) -> bool:
        """Stop ``job`` by raising JobTimeout in its thread, and give its slot to a new thread."""
        with self._lock:
            ident = self._current.pop((job.id, job.attempt), None)
            slot = self._threads.pop(ident, None) if ident is not None else None
        if slot is None:
            return False
        slot.abandoned = True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(JobTimeout))
        self._spawn()
        return True

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            slots = list(self._threads.values())
        for _ in slots:
            self._jobs.put(None)
        if wait:
            for slot in slots:
                slot.thread.join()

    def _spawn(self) -> None:
        slot = _Slot()
        slot.thread = threading.Thread(target=self._run, args=(slot,), name="supaqueue-job", daemon=True)
        slot.thread.start()
        with self._lock:
            self._threads[slot.thread.ident] = slot  # type: ignore[index]

    def _run(self, slot: _Slot) -> None:
        ident = threading.get_ident()
        try:
            while not slot.abandoned:
                job = self._jobs.get()
                if job is None:
                    return
                with self._lock:
                    self._current[(job.id, job.attempt)] = ident
                outcome = perform(job)
                with self._lock:
                    self._current.pop((job.id, job.attempt), None)
                self.on_done(job, outcome)
        except JobTimeout:
            pass  # the timeout landed after the job finished; this thread was replaced anyway


class _Slot:
    __slots__ = ("thread", "abandoned")

    def __init__(self) -> None:
        self.thread: threading.Thread
        self.abandoned = False
