"""Job rows seen as Django Tasks results (Django 6+): statuses, errors, attempts.

Shared by the backend (``get_result``) and the worker (the result a task's
context and the task_started / task_finished signals carry), so both tell the
same story. Reads jobs with the ORM; writes nothing.

Django has no "cancelled" status: a cancelled job is reported FAILED, with a
``django_supaqueue.exceptions.JobCancelled`` error whose traceback holds the
reason given to ``cancel()``.
"""

from __future__ import annotations

import builtins
import dataclasses
from datetime import datetime
from typing import Any

from django.utils import timezone

from . import conf
from . import exceptions as supaqueue_exceptions
from .models import Job, JobEvent

#: Our job statuses as Django's TaskResultStatus values.
STATUSES = {
    Job.Status.WAITING: "READY",
    Job.Status.PENDING: "READY",
    Job.Status.IN_PROGRESS: "RUNNING",
    Job.Status.SUCCESSFUL: "SUCCESSFUL",
    Job.Status.FAILED: "FAILED",
    Job.Status.CANCELLED: "FAILED",
}

_EVENT_KINDS = ("started", "retried", "failed", "cancelled")


def load(job_id: int, django_task: Any, backend: str) -> Any:
    """The TaskResult of job ``job_id`` (raises Job.DoesNotExist)."""
    job = Job.objects.using(conf.get("DATABASE")).select_related("queue").get(pk=job_id)
    return from_job(job, django_task, backend)


def from_job(job: Job, django_task: Any, backend: str) -> Any:
    """A TaskResult from a job row and its history (one query for the events)."""
    from django.tasks import TaskResult, TaskResultStatus

    events = list(
        JobEvent.objects.using(job._state.db or conf.get("DATABASE"))
        .filter(job_id=job.pk, kind__in=_EVENT_KINDS)
        .order_by("id")
        .values_list("kind", "attempt", "worker_name", "at", "error_class", "error_message", "traceback")
    )
    workers: dict[int, str] = {}  # attempt -> worker; a released attempt is run again under its number
    first_start = None
    errors = []
    for kind, attempt, worker_name, at, error_class, error_message, traceback in events:
        if kind == "started":
            workers[attempt] = worker_name
            first_start = first_start or at
        elif kind == "cancelled":
            errors.append(_error("django_supaqueue.exceptions.JobCancelled", error_message or "cancelled"))
        else:
            errors.append(_error(error_class, traceback or f"{error_class}: {error_message}"))
    result = TaskResult(
        task=django_task.using(priority=job.priority, queue_name=job.queue.name, run_after=_run_after(job)),
        id=str(job.pk),
        status=TaskResultStatus(STATUSES[job.status]),
        enqueued_at=job.created_at,
        started_at=first_start,
        finished_at=job.finished_at,
        last_attempted_at=job.started_at,
        args=job.args,
        kwargs=job.payload,
        backend=backend,
        errors=errors,
        worker_ids=[workers[a] for a in sorted(workers)],
    )
    if job.status == Job.Status.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.result)
    return result


def _run_after(job: Job) -> datetime | None:
    """Django's run_after, "the earliest the task will run": None for a job enqueued to run at once.

    Such a job is written with run_at = created_at (both the transaction's now());
    any other run_at was asked for (run_after) or given since (a retry's back-off,
    Run now), and is when the job runs next.
    """
    return None if job.run_at == job.created_at else job.run_at


def enqueued(job: Job, django_task: Any, backend: str) -> Any:
    """The TaskResult of a job just written, from the row enqueue returned (no query)."""
    from django.tasks import TaskResult, TaskResultStatus

    return TaskResult(
        task=django_task,
        id=str(job.pk),
        status=TaskResultStatus.READY,
        enqueued_at=job.created_at,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=job.args,
        kwargs=job.payload,
        backend=backend,
        errors=[],
        worker_ids=[],
    )


def finished(result: Any, *, value: Any = None, exc: BaseException | None = None) -> Any:
    """``result`` after the attempt that ends the job: successful with ``value``, or failed with ``exc``."""
    from django.tasks import TaskResultStatus

    if exc is None:
        done = dataclasses.replace(result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now())
        object.__setattr__(done, "_return_value", value)
        return done
    import traceback

    cls = type(exc)
    error = _error(f"{cls.__module__}.{cls.__qualname__}", "".join(traceback.format_exception(exc)))
    return dataclasses.replace(
        result, status=TaskResultStatus.FAILED, finished_at=timezone.now(), errors=[*result.errors, error]
    )


def _error(error_class: str, traceback: str) -> Any:
    from django.tasks.base import TaskError

    return TaskError(exception_class_path=_class_path(error_class), traceback=traceback)


def _class_path(error_class: str) -> str:
    """A dotted path Django can import. Built-in exceptions are recorded by their bare names, and
    rows written by earlier versions may name ``WorkerLost`` or ``DependencyFailed`` the same way."""
    if "." in error_class or not error_class:
        return error_class
    if isinstance(getattr(builtins, error_class, None), type):
        return f"builtins.{error_class}"
    if isinstance(getattr(supaqueue_exceptions, error_class, None), type):
        return f"django_supaqueue.exceptions.{error_class}"
    return error_class
