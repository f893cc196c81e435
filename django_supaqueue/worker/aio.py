"""The async lane's executor: calls to HTTP queues as coroutines on one event loop.

A job thread making an HTTP call does nothing but wait for its answer, and a
process has only so many threads; a coroutine waiting costs a few kilobytes,
so one loop keeps hundreds of calls in flight. The executor has the thread
Executor's interface (submit, started_at, interrupt, shutdown, on_done), so a
claim loop and its RunningAttempts drive it as they drive threads: leases,
heartbeats, timeouts, cancel and release work unchanged. An interrupt cancels
the attempt's task; the cancelled call reports its outcome once its coroutine
has unwound, as a thread reports once its body has stopped.

At most ``size`` calls run at once; jobs claimed ahead wait for a slot, and
one interrupted while it waits never starts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import tracing
from ..exceptions import AttemptInterrupted
from ..handlers.http_async import new_session, perform_http_async
from ..queue import ClaimedJob, Failure, storable
from .executor import Outcome

Key = tuple[int, int]


class AsyncExecutor:
    """``size`` HTTP calls in flight at once on an event loop of its own thread; ``on_done`` gets each."""

    def __init__(self, size: int, on_done: Callable[[ClaimedJob, Outcome], None]) -> None:
        self.on_done = on_done
        self.size = size
        self._lock = threading.Lock()
        self._queued: set[Key] = set()  # submitted, waiting for a slot
        self._started: dict[Key, float] = {}  # -> time.monotonic() its call began
        self._tasks: dict[Key, asyncio.Task] = {}
        self._interrupts: dict[Key, type[AttemptInterrupted] | None] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closed: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._session: Any = None
        self._thread = threading.Thread(target=self._run, name="supaqueue-async", daemon=True)
        self._thread.start()
        self._ready.wait()

    # -- what the claim loop calls ------------------------------------------
    def submit(self, job: ClaimedJob) -> None:
        with self._lock:
            self._queued.add((job.id, job.attempt))
        self._loop.call_soon_threadsafe(self._start, job)

    def started_at(self, job: ClaimedJob) -> float | None:
        """When the attempt's call began (time.monotonic()), or None while it waits for a slot."""
        return self._started.get((job.id, job.attempt))

    def interrupt(self, job: ClaimedJob, exc: type[AttemptInterrupted]) -> bool:
        """Cancel the attempt's task; False if it had not started (it never will).

        True: ``on_done`` reports the attempt once its coroutine has unwound.
        """
        key = (job.id, job.attempt)
        with self._lock:
            if key in self._queued:
                self._queued.discard(key)
                return False
            task = self._tasks.get(key)
            if task is None or key in self._interrupts:
                return True  # already finishing: its outcome is on its way
            self._interrupts[key] = exc
        self._loop.call_soon_threadsafe(task.cancel)
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Cancel what still runs, close the session and end the loop's thread."""
        if self._closed is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._closed.set)
        if wait:
            self._thread.join()

    # -- on the loop ----------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._ready.set()  # if the session could not be made, the constructor must not wait forever
            self._loop.close()

    async def _main(self) -> None:
        self._closed = asyncio.Event()
        self._slots = asyncio.Semaphore(self.size)
        self._session = new_session(self.size)
        self._ready.set()
        try:
            await self._closed.wait()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._session.close()

    def _start(self, job: ClaimedJob) -> None:
        key = (job.id, job.attempt)
        with self._lock:
            if key not in self._queued:
                return  # interrupted before it was taken up
            self._tasks[key] = self._loop.create_task(self._attempt(job))

    async def _attempt(self, job: ClaimedJob) -> None:
        key = (job.id, job.attempt)
        try:
            async with self._slots:
                with self._lock:
                    if key not in self._queued:
                        return  # interrupted while it waited for a slot: never started
                    self._queued.discard(key)
                    self._started[key] = time.monotonic()
                outcome = await self._perform(job)
        except asyncio.CancelledError:
            with self._lock:
                started = self._started.get(key)
                exc = self._interrupts.get(key)
            duration = time.monotonic() - started if started is not None else 0.0
            outcome = _interrupted(job, exc, duration)
        finally:
            with self._lock:
                self._tasks.pop(key, None)
                self._started.pop(key, None)
                self._interrupts.pop(key, None)
                waiting = key in self._queued
                self._queued.discard(key)
        if waiting:
            return  # cancelled by shutdown before it started: the claim loop has let it go
        self.on_done(job, outcome)

    async def _perform(self, job: ClaimedJob) -> Outcome:
        with tracing.attempt_span(job) as span:
            try:
                outcome = storable(await perform_http_async(job, self._session))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  every failure must be recorded
                outcome = _failure(job, exc)
            tracing.record_outcome(span, outcome)
            return outcome


def _interrupted(job: ClaimedJob, exc: type[AttemptInterrupted] | None, duration: float) -> Failure:
    """The outcome of a call cancelled by an interrupt (the runtime says why when it records it)."""
    name = f"{exc.__module__}.{exc.__qualname__}" if exc is not None else "asyncio.CancelledError"
    return Failure(
        job_id=job.id,
        attempt=job.attempt,
        error_class=name,
        error_message="the attempt was interrupted",
        traceback="",
        duration=duration,
    )


def _failure(job: ClaimedJob, exc: Exception) -> Failure:
    import traceback

    cls = type(exc)
    return Failure(
        job_id=job.id,
        attempt=job.attempt,
        error_class=f"{cls.__module__}.{cls.__qualname__}",
        error_message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        duration=0.0,
    )
