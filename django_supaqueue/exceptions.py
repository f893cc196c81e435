"""Errors a user of the queue can hit, each with a message that says what to do.

They also name what went wrong in a job's history. Every ``error_class`` the queue records is the
dotted path of a real class: the exception a task raised (a built-in one by its bare name,
``ValueError``, as Python prints it), the HTTP client's (``httpx.ConnectTimeout``), or one of the
classes here, ``django_supaqueue.exceptions.WorkerLost`` and the like. Those marked "recorded, never
raised" exist so that the name can be looked up, imported (Django Tasks' ``TaskError``) and caught
nowhere by mistake.
"""

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


class AttemptInterrupted(BaseException):  # noqa: N818  named for what happened, like KeyboardInterrupt
    """Raised inside a job's thread to stop its attempt (a timeout, a cancel, a stopping worker).

    It derives from BaseException, like KeyboardInterrupt, so that a task's
    ``except Exception:`` cannot swallow it and carry on: the attempt must end
    before its job may run again. A task may still catch it to clean up, and
    should re-raise it.
    """


class JobTimeout(AttemptInterrupted):
    """Raised inside a task whose attempt ran past its timeout."""


class WorkerLost(SupaqueueError):
    """Names the error of an attempt whose worker stopped renewing its lease (recorded, never raised)."""


class DependencyFailed(SupaqueueError):
    """Names why a job was cancelled: a job it depends on failed for good, was cancelled or deleted.

    Recorded on the dependent's ``cancelled`` event by the database, never raised. A job enqueued
    with ``on_dependency_failure="run"`` runs instead, with ``None`` for that dependency.
    """


class HTTPError(SupaqueueError):
    """Names the error of an HTTP call answered with a status outside 2xx (recorded, never raised).

    5xx, 408 and 429 are retried (Retry-After honoured); other statuses fail for good unless the
    queue retries client errors. The message holds the status and the start of the body.
    """


class HTTPConfigError(SupaqueueError):
    """Names the error of an HTTP call that could not be made as configured (recorded, never raised).

    A path or URL the checks refuse; a secret alias missing from SUPAQUEUE['HTTP_SECRETS'], malformed
    there or bound to other hosts; a connection that reached a local address HTTP_REFUSE_LOCAL_HOSTS
    refuses. The job fails for good: fix the queue or the settings, then retry it.
    """


class RateSlotMissed(SupaqueueError):
    """Names a rate-limited HTTP call given back unsent: its connection was ready too late after its
    claim (recorded on a ``retried`` event, never raised).

    Sent then, it could land in a window that later claims had filled. The job is pending again at
    once and the attempt does not count.
    """


class SQLWorkerError(SupaqueueError):
    """Names the error of an attempt a worker outside Python failed (recorded, never raised).

    A worker written in another language reports a failure through the SQL function
    ``supaqueue_fail_job(job_id, worker_name, error_message)``: its message is the event's
    message, and this class its error class, since no Python exception was raised.
    """


class ChildProcessDied(SupaqueueError):
    """Names the error of an attempt whose child process died (processes mode; recorded, never raised)."""


class NotACoroutine(SupaqueueError, TypeError):
    """Names the error of a plain function's job on an async queue (recorded, never raised).

    An async queue's jobs run as coroutines on the worker's event loop, where a
    plain function would stop every other call and task on the loop while it
    ran. The attempt fails for good: run the task on a threads queue, or make
    it ``async def``.
    """


class ResultNotStorable(SupaqueueError):
    """Names the error of an attempt whose result PostgreSQL cannot store (recorded, never raised).

    jsonb refuses NUL (``\\u0000``) and lone surrogates in strings, NaN and
    Infinity, and numbers past numeric's range. The attempt fails for good:
    the task ran, and running it again would repeat its effects to return,
    most likely, the same result. Return a result without them, or store the
    data elsewhere and return its id.
    """


class JobCancelled(AttemptInterrupted):
    """Raised inside a task whose job was cancelled while it ran; Django Tasks results report it too."""


class WorkerStopping(AttemptInterrupted):
    """Raised inside a task whose worker is stopping and gives the job back (released)."""


class LeaseLost(AttemptInterrupted):
    """Raised inside a task whose lease was recovered by another worker: its job may run elsewhere."""


class TriggerConfigError(SupaqueueError, ValueError):
    """A job trigger or model-change job is configured with something that cannot work."""


class InvalidSchedule(SupaqueueError, ValueError):
    """A schedule's cron expression, schedule_info rule, time zone or target cannot work."""
