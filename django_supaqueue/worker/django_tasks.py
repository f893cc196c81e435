"""Run an attempt of a Django Tasks ``Task`` (Django 6+) the way Django runs one.

The executor calls this for jobs whose task is a ``django.tasks.Task``
(enqueued through ``django_supaqueue.backends.SupaqueueBackend``): the task gets
its ``TaskContext`` when it ``takes_context``, coroutine functions are run to
completion, and the ``task_started`` / ``task_finished`` signals are sent with
the job's TaskResult. ``task_finished`` is sent when an attempt ends the job
(success, or the failure of its last attempt), just before the worker writes
the outcome; a failed attempt that will be retried makes the job READY again
and sends nothing.
"""

from __future__ import annotations

import json
from typing import Any

from .. import task_results
from ..queue import ClaimedJob


def run_django_task(django_task: Any, job: ClaimedJob) -> Any:
    """Call the task for ``job`` and return its value; exceptions propagate to the executor."""
    from django.tasks import TaskContext, task_backends
    from django.tasks.signals import task_finished, task_started
    from django.utils.json import normalize_json

    sender = type(task_backends[django_task.backend])
    result = task_results.load(job.id, django_task, django_task.backend)
    task_started.send(sender=sender, task_result=result)
    try:
        if django_task.takes_context:
            value = django_task.call(TaskContext(task_result=result), *job.args, **job.payload)
        else:
            value = django_task.call(*job.args, **job.payload)
        json.dumps(value, allow_nan=False)  # a value the job cannot store fails the attempt here
    except BaseException as exc:
        if job.attempt >= job.max_attempts:
            # Inside the handler, as Django's own backends do, so receivers see exc_info.
            task_finished.send(sender=sender, task_result=task_results.finished(result, exc=exc))
        raise
    task_finished.send(sender=sender, task_result=task_results.finished(result, value=normalize_json(value)))
    return value
