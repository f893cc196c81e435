"""Which job attempt the current thread (or child process) is running.

Set by the executor around each attempt, so that code inside a task can ask
about its own job (``dependency_results()``) without the job being passed in.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_current: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "supaqueue_current_attempt", default=None
)


def current_attempt() -> tuple[int, int] | None:
    """(job id, attempt) of the attempt running here, or None outside one."""
    return _current.get()


@contextlib.contextmanager
def running(job_id: int, attempt: int) -> Iterator[None]:
    token = _current.set((job_id, attempt))
    try:
        yield
    finally:
        _current.reset(token)
