"""Run an attempt of a Django Tasks ``Task`` (Django 6+) the way Django runs one.

The executor calls this for jobs whose task is a ``django.tasks.Task``
(enqueued through ``django_supaqueue.backends.SupaqueueBackend``): the task gets
its ``TaskContext`` when it ``takes_context``, coroutine functions run on the
job thread's event loop (coroutines.py), and the ``task_started`` /
``task_finished`` signals are sent with the job's TaskResult. ``task_finished``
is sent when an attempt ends the job (success, or the failure of its last
attempt), just before the worker writes the outcome; a failed attempt that will
be retried makes the job READY again and sends nothing.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from .. import task_results
from ..queue import ClaimedJob
from . import coroutines


def run_django_task(django_task: Any, job: ClaimedJob) -> Any:
    """Call the task for ``job`` and return its value; exceptions propagate to the executor."""
    from django.tasks import TaskContext, task_backends
    from django.tasks.signals import task_finished, task_started
    from django.utils.json import normalize_json

    sender = type(task_backends[django_task.backend])
    result = task_results.load(job.id, django_task, django_task.backend)
    task_started.send(sender=sender, task_result=result)
    try:
        args = (TaskContext(task_result=result), *job.args) if django_task.takes_context else job.args
        if inspect.iscoroutinefunction(django_task.func):
            # Not Task.call's async_to_sync: on the thread's own loop, a timeout or cancel cancels it.
            value = coroutines.run(django_task.func(*args, **job.payload))
        else:
            value = django_task.call(*args, **job.payload)
        json.dumps(value, allow_nan=False)  # a value the job cannot store fails the attempt here
    except BaseException as exc:
        if job.attempt >= job.max_attempts:
            # Inside the handler, as Django's own backends do, so receivers see exc_info.
            task_finished.send(sender=sender, task_result=task_results.finished(result, exc=exc))
        raise
    task_finished.send(sender=sender, task_result=task_results.finished(result, value=normalize_json(value)))
    return value


async def run_django_task_async(django_task: Any, job: ClaimedJob) -> Any:
    """``run_django_task`` for a coroutine function on an event loop (an async queue's job)."""
    from asgiref.sync import sync_to_async
    from django.tasks import TaskContext, task_backends
    from django.tasks.signals import task_finished, task_started
    from django.utils.json import normalize_json

    sender = type(task_backends[django_task.backend])
    result = await sync_to_async(task_results.load)(job.id, django_task, django_task.backend)
    await task_started.asend(sender=sender, task_result=result)
    args = (TaskContext(task_result=result), *job.args) if django_task.takes_context else job.args
    try:
        value = await django_task.func(*args, **job.payload)
        json.dumps(value, allow_nan=False)
    except BaseException as exc:
        if job.attempt >= job.max_attempts:
            await task_finished.asend(sender=sender, task_result=task_results.finished(result, exc=exc))
        raise
    await task_finished.asend(
        sender=sender, task_result=task_results.finished(result, value=normalize_json(value))
    )
    return value
