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


class DependencyCycle(InvalidOption):
    """The steps of a pipeline depend on each other in a circle, so none of them could ever run."""


class NotInAJob(SupaqueueError, RuntimeError):
    """A call that reads the running job (such as dependency_results()) was made outside one."""


class ReservedParameter(SupaqueueError, TypeError):
    """A task function uses a parameter name that enqueue() reserves for its options."""


class JobTimeout(SupaqueueError):
    """Raised inside a task whose attempt ran past its timeout."""


class WorkerLost(SupaqueueError):
    """Names the error of an attempt whose worker stopped renewing its lease (recorded, never raised)."""


class ChildProcessDied(SupaqueueError):
    """Names the error of an attempt whose child process died (processes mode; recorded, never raised)."""


class JobCancelled(SupaqueueError):
    """Names the error that Django Tasks results report for a cancelled job (recorded, never raised)."""


class TriggerConfigError(SupaqueueError, ValueError):
    """A job trigger or model-change job is configured with something that cannot work."""


class InvalidSchedule(SupaqueueError, ValueError):
    """A schedule's cron expression, schedule_info rule, time zone or target cannot work."""
