"""The async lane's executor: HTTP queues' calls and async queues' tasks as coroutines on one event loop.

A job thread making an HTTP call does nothing but wait for its answer, and a
process has only so many threads; a coroutine waiting costs a few kilobytes,
so one loop keeps hundreds of calls in flight. An async queue's jobs are
``async def`` tasks run the same way; their ORM calls (``sync_to_async``) run
on asgiref's shared thread, whose connections get a job thread's care after
each attempt. The executor has the thread
Executor's interface (submit, started_at, interrupt, shutdown, on_done), so a
claim loop and its RunningAttempts drive it as they drive threads: leases,
heartbeats, timeouts, cancel and release work unchanged. An interrupt cancels
the attempt's task; the cancelled call reports its outcome once its coroutine
has unwound, as a thread reports once its body has stopped.

At most ``size`` calls run at once; jobs claimed ahead wait for a slot, and
one interrupted while it waits never starts.

A coroutine that blocks (a synchronous call that waits) stops every other one
on the loop. A watchdog thread notices when the loop has not turned for
BLOCKED_AFTER seconds and adds a ``blocked`` event, with the stack of the call
that blocks, to the history of the attempt that holds the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from .. import context, tracing
from .. import queue as q
from ..exceptions import AttemptInterrupted, NotACoroutine
from ..handlers.http_async import new_session, perform_http_async
from ..queue import ClaimedJob, Failure, Success, storable
from ..tasks import get_task
from .connection import connect
from .executor import Outcome, failed, result_json
from .job_connections import after_attempt

logger = logging.getLogger("django_supaqueue.worker")

#: Seconds the loop may go without a turn before the attempt holding it is noted as blocking it.
BLOCKED_AFTER = 0.5

Key = tuple[int, int]


class AsyncExecutor:
    """``size`` HTTP calls in flight at once on an event loop of its own thread; ``on_done`` gets each."""

    def __init__(
        self, size: int, on_done: Callable[[ClaimedJob, Outcome], None], worker_name: str = ""
    ) -> None:
        self.on_done = on_done
        self.size = size
        self.worker_name = worker_name
        self._tick = time.monotonic()  # the loop's last turn, as its ticker saw it
        self._ran_tasks = False  # an async queue's task ran: asgiref's shared thread may hold connections
        self._ended = threading.Event()
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
        threading.Thread(target=self._watch, name="supaqueue-async-watchdog", daemon=True).start()

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
            self._ended.set()
            self._ready.set()  # if the session could not be made, the constructor must not wait forever
            self._loop.close()

    async def _main(self) -> None:
        self._closed = asyncio.Event()
        self._slots = asyncio.Semaphore(self.size)
        self._session = new_session(self.size)
        ticker = asyncio.ensure_future(self._ticker())
        self._ready.set()
        try:
            await self._closed.wait()
            ticker.cancel()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._session.close()
            if self._ran_tasks:
                await sync_to_async(connections.close_all, thread_sensitive=True)()

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
                with self._lock:
                    swallowed = key in self._interrupts  # the body caught its cancellation
                    exc = self._interrupts.get(key)
                if swallowed:
                    outcome = _interrupted(job, exc, time.monotonic() - self._started[key])
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
                if job.http is not None:
                    outcome = storable(await perform_http_async(job, self._session))
                else:
                    self._ran_tasks = True
                    outcome = storable(await _run_task(job))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  every failure must be recorded
                outcome = _failure(job, exc)
            tracing.record_outcome(span, outcome)
            return outcome

    # -- the watchdog ------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(BLOCKED_AFTER / 4)

    def _watch(self) -> None:
        """Note each attempt that holds the loop past BLOCKED_AFTER, once per attempt."""
        noted: set[Key] = set()
        while not self._ended.wait(BLOCKED_AFTER / 4):
            stalled = time.monotonic() - self._tick
            if stalled < BLOCKED_AFTER:
                continue
            task = asyncio.current_task(self._loop)
            with self._lock:
                key = next((k for k, t in self._tasks.items() if t is task), None)
            if key is None or key in noted:
                continue
            noted.add(key)
            frame = sys._current_frames().get(self._thread.ident or 0)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            self._note_blocked(key, stalled, stack)

    def _note_blocked(self, key: Key, seconds: float, stack: str) -> None:
        message = (
            f"blocked the worker's event loop for {seconds:.1f} s and counting: no other call or task "
            "on the loop ran meanwhile. A blocking call in a coroutine: await an async API instead, "
            "or wrap the call in sync_to_async."
        )
        last = stack.strip().splitlines()[-2:] if stack else []
        logger.warning("job %s attempt %s %s %s", key[0], key[1], message, " ".join(s.strip() for s in last))
        try:
            with connect() as conn:
                q.note_blocked(
                    conn,
                    job_id=key[0],
                    attempt=key[1],
                    worker_name=self.worker_name,
                    seconds=seconds,
                    message=message,
                    stack=stack,
                )
        except Exception:  # noqa: BLE001  a note that cannot be written must not stop the watchdog
            logger.exception("could not note that job %s blocked the event loop", key[0])


async def _run_task(job: ClaimedJob) -> Outcome:
    """One attempt of an async queue's task on the loop, as executor.run_attempt runs one on a thread."""
    started = time.monotonic()
    try:
        task = get_task(job.task_name)
        with context.running(job.id, job.attempt):
            django_task = task.django_task
            if django_task is not None and inspect.iscoroutinefunction(django_task.func):
                from .django_tasks import run_django_task_async

                value = await run_django_task_async(django_task, job)
            elif django_task is None and task.is_async:
                value = await task.func(*job.args, **job.payload)
            else:
                return Failure(
                    job_id=job.id,
                    attempt=job.attempt,
                    error_class=f"{NotACoroutine.__module__}.{NotACoroutine.__qualname__}",
                    error_message=(
                        f"{job.task_name} is not an async def function, and its queue runs coroutines "
                        "(execution_mode 'async'): run it on a threads queue, or make it async def"
                    ),
                    traceback="",
                    duration=0.0,
                    final=True,
                )
        result = result_json(value)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001  every failure must be recorded
        return failed(job, exc, started)
    finally:
        # Its ORM calls ran on asgiref's shared thread: tidy that thread's connections there.
        await sync_to_async(after_attempt, thread_sensitive=True)()
    return Success(job_id=job.id, attempt=job.attempt, result=result, duration=time.monotonic() - started)


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
