"""The Django Tasks backend (Django 6+): Django's ``@task`` API on top of this queue.

::

    TASKS = {
        "default": {
            "BACKEND": "django_supaqueue.backends.SupaqueueBackend",
            "QUEUES": [],                      # any queue; or the names tasks may use
            "OPTIONS": {"max_attempts": 3},    # optional; else the queue's / SUPAQUEUE's
        }
    }

A door onto ``producer.produce``: ``enqueue()`` writes a job in the caller's
transaction (the job's task name is the task's ``module_path``) and announces it
like any other job, ``runworkers`` runs it with retries, timeouts and leases,
and ``get_result()`` reads the job row. On Django 5.2, which has no
``django.tasks``, this module still imports, and the backend raises
ImproperlyConfigured if anything instantiates it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf, task_results
from . import queue as q
from .exceptions import InvalidOption, UnknownTask
from .models import Job
from .producer import produce
from .tasks import get_task

try:
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued
except ImportError:  # Django < 6
    BaseTaskBackend = None

#: The OPTIONS this backend understands.
OPTIONS = frozenset({"max_attempts"})


if BaseTaskBackend is None:

    class SupaqueueBackend:
        """Stands in on Django < 6, which has no django.tasks, and says so when used."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImproperlyConfigured(
                "django_supaqueue.backends.SupaqueueBackend needs Django 6.0 or newer (django.tasks). "
                "On older Django, use django_supaqueue's own @task and enqueue()."
            )

else:

    class SupaqueueBackend(BaseTaskBackend):
        """Django Tasks run by django-supaqueue workers: priorities, deferral, async tasks, results."""

        supports_defer = True
        supports_async_task = True
        supports_get_result = True
        supports_priority = True

        def __init__(self, alias: str, params: dict[str, Any]) -> None:
            super().__init__(alias, params)
            self.max_attempts = self.options.get("max_attempts")

        def validate_task(self, task: Any) -> None:
            """Django's rules, plus a queue name the queue accepts."""
            super().validate_task(task)
            try:
                q.check_queue_name(task.queue_name)
            except InvalidOption as exc:
                raise InvalidTask(str(exc)) from None

        def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
            """Write the job in the caller's transaction and return its READY result.

            The arguments are checked against the function's signature and must be
            JSON, as for any job: a bad call raises before anything is written.
            Once the row is written, ``job_enqueued`` is sent as for every job, then
            Django's ``task_enqueued`` (both commit with the caller's transaction).
            ``aenqueue`` is Django's: this, in a thread.
            """
            self.validate_task(task)
            registered = self._registered(task)
            args, kwargs = tuple(args), dict(kwargs)
            registered.check_arguments(args, kwargs)
            spec = registered.job_spec(
                args,
                kwargs,
                queue=task.queue_name,
                priority=task.priority,
                run_at=task.run_after,
                key=None,
                max_attempts=self.max_attempts,
            )
            result = task_results.enqueued(produce(spec)[0], task, self.alias)
            task_enqueued.send(type(self), task_result=result)
            return result

        def get_result(self, result_id: str) -> Any:
            """The result of a job enqueued through Django Tasks (``aget_result`` is Django's)."""
            try:
                job = Job.objects.using(conf.get("DATABASE")).select_related("queue").get(pk=int(result_id))
                django_task = get_task(job.task_name).django_task
            except (ValueError, TypeError, Job.DoesNotExist, UnknownTask):
                raise TaskResultDoesNotExist(result_id) from None
            if django_task is None:
                raise TaskResultDoesNotExist(result_id)
            return task_results.from_job(job, django_task, self.alias)

        def check(self, **kwargs: Any) -> Iterator[checks.CheckMessage]:
            yield from super().check(**kwargs)
            yield from _check_backend(self)

        def _registered(self, task: Any) -> Any:
            """The registry's view of ``task``: what the worker will find under its module_path."""
            try:
                registered = get_task(task.module_path)
            except UnknownTask:
                registered = None
            if (
                registered is None
                or registered.django_task is None
                or registered.django_task.func != task.func
            ):
                raise InvalidTask(
                    f"{task.module_path} must name this task at module level (the worker imports it by "
                    "that path): assign the @task result to the function's own name."
                )
            return registered


def _check_backend(backend: Any) -> Iterator[checks.CheckMessage]:
    from django.apps import apps

    where = f"TASKS[{backend.alias!r}]"
    if not apps.is_installed("django_supaqueue"):
        yield checks.Error(
            f"{where} uses SupaqueueBackend, but django_supaqueue is not in INSTALLED_APPS.",
            id="supaqueue.E020",
        )
    for name in sorted(backend.queues):
        try:
            q.check_queue_name(name)
        except InvalidOption as exc:
            yield checks.Error(f"{where}['QUEUES']: {exc}", id="supaqueue.E021")
    for key in sorted(set(backend.options) - OPTIONS):
        yield checks.Error(
            f"{where}['OPTIONS'][{key!r}] is not an option of SupaqueueBackend.",
            hint=f"Known options: {', '.join(sorted(OPTIONS))}.",
            id="supaqueue.E022",
        )
    if backend.max_attempts is not None:
        try:
            q.check_max_attempts(backend.max_attempts)
        except InvalidOption as exc:
            yield checks.Error(f"{where}['OPTIONS']['max_attempts']: {exc}", id="supaqueue.E022")
