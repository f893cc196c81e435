"""The @task decorator and the registry that maps task names to functions.

A task is registered under its dotted path (``module.function``) so that a
job row names the code it runs, and a worker can find it again after import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import markcoroutinefunction

from .exceptions import InvalidOption, InvalidPayload, InvalidSchedule, ReservedParameter, UnknownTask
from .producer import produce
from .queue import JobSpec, check_key, check_max_attempts, check_priority, check_queue_name

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from .models import Job

#: Keyword names enqueue() keeps for its own options; a task may not use them.
RESERVED_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "run_at",
        "key",
        "max_attempts",
        "key_mode",
        "depends_on",
        "on_dependency_failure",
        "serial_group",
        "tenant_id",
    }
)

_registry: dict[str, Task] = {}


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """Options a task carries to every job it enqueues (None = fall through)."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None
    timeout: float | None = None
    cron: str | None = None  # a schedule declared in code: synced to a Schedule row by runworkers
    cron_timezone: str | None = None
    cron_key: str | None = None


class Task:
    """A registered function that can be run now (call it) or later (enqueue it).

    ``django_task`` is set when the function is a Django Tasks ``Task``
    (``@django.tasks.task``) seen through this registry: the worker then runs it
    the Django way (context, task_started/task_finished signals).
    """

    def __init__(
        self, func: Callable[..., Any], name: str, options: TaskOptions, *, django_task: Any = None
    ) -> None:
        self.func = func
        self.name = name
        self.options = options
        self.django_task = django_task
        # An ``async def`` body: a worker runs it on an event loop (see worker/coroutines.py).
        self.is_async = inspect.iscoroutinefunction(func)
        if self.is_async:
            markcoroutinefunction(self)  # calling the task gives a coroutine: async_to_sync must know
        self.signature = inspect.signature(func)
        if django_task is not None and django_task.takes_context:
            # The worker passes the context; callers' arguments fit the rest.
            self.signature = self.signature.replace(parameters=list(self.signature.parameters.values())[1:])
        self.__doc__ = func.__doc__
        self.__wrapped__ = func
        self._fitting_names: set[frozenset[str]] = set()

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def using(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
        key_mode: str | None = None,
        depends_on: Sequence[Job | int] | None = None,
        on_dependency_failure: str | None = None,
        serial_group: str | None = None,
        tenant_id: str | None = None,
    ) -> BoundTask:
        """Options for the next enqueue, Django-Tasks style: ``task.using(priority=5).enqueue(...)``."""
        return BoundTask(
            self,
            dict(
                queue=queue,
                priority=priority,
                run_at=run_at,
                key=key,
                max_attempts=max_attempts,
                key_mode=key_mode,
                depends_on=depends_on,
                on_dependency_failure=on_dependency_failure,
                serial_group=serial_group,
                tenant_id=tenant_id,
            ),
        )

    def enqueue(
        self,
        *args: Any,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
        key_mode: str | None = None,
        depends_on: Sequence[Job | int] | None = None,
        on_dependency_failure: str | None = None,
        serial_group: str | None = None,
        tenant_id: str | None = None,
        **kwargs: Any,
    ) -> Job:
        """Write one job for this task in the caller's transaction and return it.

        ``depends_on`` makes it wait until those jobs have succeeded; see
        ``Pipeline`` to write a whole graph of new jobs in one call.
        ``serial_group``: jobs sharing the name run one at a time, across queues.
        ``tenant_id``: whose job it is (@pgpm/jobs' ``database_id``), for per-tenant limits and views.
        """
        self.check_arguments(args, kwargs)
        spec = self.job_spec(
            args,
            kwargs,
            queue=queue,
            priority=priority,
            run_at=run_at,
            key=key,
            max_attempts=max_attempts,
            key_mode=key_mode,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            serial_group=serial_group,
            tenant_id=tenant_id,
        )
        return produce(spec)[0]

    def enqueue_many(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        max_attempts: int | None = None,
        key_mode: str | None = None,
        depends_on: Sequence[Job | int] | None = None,
        on_dependency_failure: str | None = None,
        serial_group: str | None = None,
        tenant_id: str | None = None,
    ) -> list[Job]:
        """Write one job per mapping of keyword arguments, in a constant number of statements.

        A mapping may carry its own ``key``, and its own ``tenant_id`` instead of
        the call's, so one call can write jobs of many tenants (both names are
        reserved: no task takes them as arguments); the other options apply to
        every job. ``depends_on`` makes every job of the call wait for those
        jobs, and ``serial_group`` puts every job of the call in that group (run
        one at a time, in order).
        """
        payloads, keys, tenants = [], [], []
        for kwargs in items:
            kwargs = dict(kwargs)
            keys.append(kwargs.pop("key", None))
            own = kwargs.pop("tenant_id", None)
            tenants.append(tenant_id if own is None else own)
            self.check_arguments((), kwargs)
            payloads.append(kwargs)
        template = self.job_spec(
            (),
            {},
            queue=queue,
            priority=priority,
            run_at=run_at,
            key=None,
            max_attempts=max_attempts,
            key_mode=key_mode,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            serial_group=serial_group,
            tenant_id=tenant_id,
        )
        return produce(template, payloads, keys, tenants)

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Refuse arguments that the function could never accept, before anything is written.

        Whether keyword arguments alone fit depends on their names only, so a
        set of names that fitted once is not bound again (enqueue_many's rows
        share them).
        """
        names = None if args else frozenset(kwargs)
        if names is not None and names in self._fitting_names:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidPayload(f"Arguments do not fit task {self.name}{self.signature}: {exc}") from None
        if names is not None and len(self._fitting_names) < 100:
            self._fitting_names.add(names)

    def job_spec(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], **options: Any) -> JobSpec:
        """The job a call of this task writes: the call's options, else the task's."""
        o = self.options
        return JobSpec(
            task_name=self.name,
            payload=dict(kwargs),
            args=list(args),
            queue=options["queue"] or o.queue,
            priority=options["priority"] if options["priority"] is not None else o.priority,
            run_at=options["run_at"],
            key=options["key"],
            max_attempts=(options["max_attempts"] if options["max_attempts"] is not None else o.max_attempts),
            key_mode=options.get("key_mode") or "dedupe",
            depends_on=list(options.get("depends_on") or ()),
            on_dependency_failure=options.get("on_dependency_failure"),
            serial_group=options.get("serial_group"),
            tenant_id=options.get("tenant_id"),
        )


class BoundTask:
    """A task with enqueue options already chosen (see Task.using)."""

    def __init__(self, task: Task, options: dict[str, Any]) -> None:
        self.task = task
        self.options = {k: v for k, v in options.items() if v is not None}

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        return self.task.enqueue(*args, **{**self.options, **kwargs})

    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        options = {k: v for k, v in self.options.items() if k != "key"}
        return self.task.enqueue_many(items, **options)


def task(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    retry_backoff: float | None = None,
    retry_backoff_max: float | None = None,
    timeout: float | None = None,
    cron: str | None = None,
    cron_timezone: str | None = None,
    cron_key: str | None = None,
) -> Any:
    """Register a function as a task: ``@task`` or ``@task(queue="emails", max_attempts=5)``.

    ``cron="0 2 * * *"`` (read in ``cron_timezone``, default settings.TIME_ZONE)
    also declares a schedule named after the task, which calls it with no arguments;
    with ``cron_key``, a tick while its last job has not started enqueues nothing.
    """
    from .cron import check_cron, zone

    if queue is not None:
        check_queue_name(queue)
    if priority is not None:
        check_priority(priority)
    if max_attempts is not None:
        check_max_attempts(max_attempts)
    if cron is not None:
        cron = check_cron(cron)
    if cron_timezone is not None:
        zone(cron_timezone)
    if cron_key is not None and cron is None:
        raise InvalidSchedule("cron_key is the key of the jobs cron= fires: give cron= too.")
    if cron_key is not None:
        try:
            check_key(cron_key)
        except InvalidOption as exc:
            raise InvalidSchedule(f"cron_key: {exc}") from None
    options = TaskOptions(
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max,
        timeout=timeout,
        cron=cron,
        cron_timezone=cron_timezone,
        cron_key=cron_key,
    )

    def register(f: Callable[..., Any]) -> Task:
        clash = RESERVED_OPTIONS.intersection(inspect.signature(f).parameters)
        if clash:
            raise ReservedParameter(
                f"{f.__module__}.{f.__qualname__} has parameter(s) {sorted(clash)}, which "
                f"enqueue() reserves for its options ({', '.join(sorted(RESERVED_OPTIONS))}). "
                "Rename them."
            )
        task_name = name or f"{f.__module__}.{f.__qualname__}"
        if cron is not None:
            _check_callable_without_arguments(f, task_name)
        t = Task(f, task_name, options)
        _registry[task_name] = t
        return t

    if func is not None:
        return register(func)
    return register


def _check_callable_without_arguments(f: Callable[..., Any], task_name: str) -> None:
    try:
        inspect.signature(f).bind()
    except TypeError:
        raise InvalidSchedule(
            f"task {task_name} has cron= but needs arguments: a schedule declared on @task calls it with "
            "none. Give its parameters defaults, or declare the schedule in SUPAQUEUE['SCHEDULES'] "
            "with a payload."
        ) from None


def get_task(name: str) -> Task:
    """The task registered under ``name``, importing its module if nobody has yet.

    A name that is not registered with @task but imports to a Django Tasks
    ``Task`` (its ``module_path``, which is what the Django Tasks backend
    enqueues) is adapted into this registry, so the worker runs it like any task.
    """
    task = _registry.get(name)
    if task is not None:
        return task
    module = name.rpartition(".")[0]
    if module:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    task = _registry.get(name) or _adapt_django_task(name)
    if task is None:
        raise UnknownTask(name)
    return task


def _adapt_django_task(name: str) -> Task | None:
    """Register the Django Tasks ``Task`` at ``name`` (Django 6+), or None if there is none."""
    try:
        from django.tasks import Task as DjangoTask
    except ImportError:
        return None
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    if not isinstance(obj, DjangoTask) or obj.module_path != name:
        return None
    adapted = Task(obj.func, name, TaskOptions(queue=obj.queue_name, priority=obj.priority), django_task=obj)
    _registry[name] = adapted
    return adapted


def registered_tasks() -> dict[str, Task]:
    """A copy of the registry, for checks and start-up syncing."""
    return dict(_registry)


def task_name(task: Any) -> str:
    """The registry name of a task given as a Task, a Django Tasks Task or a dotted name."""
    if isinstance(task, str):
        return task
    if isinstance(task, Task):
        return task.name
    module_path = getattr(task, "module_path", None)  # django.tasks.Task
    if isinstance(module_path, str):
        return module_path
    raise TypeError(f"expected a task or a task's dotted name, not {task!r}")
