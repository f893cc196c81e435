"""Errors a user of the queue can hit, each with a message that says what to do."""

from __future__ import annotations


class SupaqueueError(Exception):
    """Base class for every error raised by django-supaqueue."""


class EnqueueError(SupaqueueError, ValueError):
    """A job was refused before anything was written."""


class UnknownTask(EnqueueError, LookupError):
    """The task name is not registered with @task."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"No task named {name!r} is registered. Decorate the function with "
            "@django_supaqueue.task and make sure its module is imported (tasks.py "
            "modules of installed apps are imported automatically)."
        )
        self.name = name


class InvalidPayload(EnqueueError):
    """The payload or arguments cannot be stored as JSON or do not fit the task."""


class InvalidOption(EnqueueError):
    """An enqueue option (priority, run_at, max_attempts, queue, key) is out of range."""


class ReservedParameter(SupaqueueError, TypeError):
    """A task function uses a parameter name that enqueue() reserves for its options."""


class JobTimeout(SupaqueueError):
    """Raised inside a task whose attempt ran past its timeout."""
