"""``async def`` task bodies on a job thread: Django's async_to_sync, with interrupts as cancellation.

The body runs as Django runs an async function from sync code (and as
``django.tasks.Task.call`` does): on an event loop of its own, while the job
thread waits and serves the body's ``sync_to_async`` calls, the async ORM's
included. So its queries use the job thread's connections, which get the
care of job_connections.py between attempts, and, under
``django_supaqueue.testing.run_pending``, the test's transaction.

An interrupt reaches a plain body as an exception raised in its thread at its
next Python instruction. A thread waiting for a coroutine is blocked in C, and
a raise would wait for the body to end; so while a thread runs a coroutine
body, an interrupt cancels the body's task instead, through the loop's
thread-safe wake-up: the body unwinds at its current ``await`` (its ``finally``
blocks run) and the attempt ends with the interrupt's exception, as a plain
body's does, even if the body caught its cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import async_to_sync

from ..exceptions import AttemptInterrupted

_lock = threading.Lock()
_bodies: dict[int, _Body] = {}  # job thread ident -> the coroutine body it runs now


class _Body:
    __slots__ = ("loop", "task", "interrupt")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the body's task exists
        self.task: asyncio.Task | None = None
        self.interrupt: type[AttemptInterrupted] | None = None


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end and return its value; an interrupt raises the interrupt's exception."""
    body = _Body()
    ident = threading.get_ident()
    try:
        with _lock:
            _bodies[ident] = body
        return async_to_sync(_guarded)(coro, body)
    except BaseException:
        if body.task is None:  # interrupted before its loop took it up: it never ran
            with contextlib.suppress(Exception):
                coro.close()
        raise
    finally:
        with _lock:
            _bodies.pop(ident, None)


async def _guarded(coro: Coroutine[Any, Any, Any], body: _Body) -> Any:
    task = asyncio.ensure_future(coro)
    with _lock:
        body.loop, body.task = asyncio.get_running_loop(), task
        if body.interrupt is not None:  # it came while the loop was starting
            task.cancel()
    try:
        value = await task
    except asyncio.CancelledError:
        if body.interrupt is not None:
            raise body.interrupt from None
        raise
    if body.interrupt is not None:
        raise body.interrupt  # it caught its cancellation: the attempt was stopped all the same
    return value


def interrupt(thread: threading.Thread, exc: type[AttemptInterrupted], otherwise: Callable[[], None]) -> None:
    """Cancel the coroutine body ``thread`` runs now, or call ``otherwise`` (raise in the thread) if none.

    ``otherwise`` runs under the lock that registers bodies, so that a thread
    about to start a coroutine gets the exception before it blocks waiting for it.
    """
    with _lock:
        body = _bodies.get(thread.ident or 0)
        if body is None:
            otherwise()
        elif body.interrupt is None and not (body.task is not None and body.task.done()):
            body.interrupt = exc
            if body.task is not None and body.loop is not None:
                body.loop.call_soon_threadsafe(body.task.cancel)
