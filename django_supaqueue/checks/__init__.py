"""System checks: catch configuration mistakes at ``manage.py check`` time, not at 3 a.m."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core import checks

from .. import conf
from .deployment import check_http_secret_hosts, check_http_secrets, check_pooler


@checks.register("supaqueue")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for key in conf.unknown_keys():
        errors.append(
            checks.Warning(
                f"SUPAQUEUE[{key!r}] is not a django-supaqueue setting and is ignored.",
                hint=f"Known settings: {', '.join(sorted(conf.DEFAULTS))}.",
                id="supaqueue.W001",
            )
        )
    from django.conf import settings

    alias = conf.get("DATABASE")
    db = settings.DATABASES.get(alias)
    if db is None:
        errors.append(
            checks.Error(
                f"SUPAQUEUE['DATABASE'] names {alias!r}, which is not in DATABASES.", id="supaqueue.E001"
            )
        )
    elif "postgresql" not in db.get("ENGINE", ""):
        errors.append(
            checks.Error(
                f"DATABASES[{alias!r}] must be PostgreSQL (django.db.backends.postgresql) "
                "for django-supaqueue.",
                id="supaqueue.E002",
            )
        )
    for key, low in (
        ("MAX_ATTEMPTS", 1),
        ("CONCURRENCY", 1),
        ("PROCESSES", 1),
        ("CLAIM_BATCH", 1),
        ("CLAIM_CONNECTIONS", 1),
        ("ASYNC_CONCURRENCY", 0),
    ):
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(
                checks.Error(
                    f"SUPAQUEUE[{key!r}] must be an integer >= {low}, not {value!r}.", id="supaqueue.E003"
                )
            )
    for key in (
        "POLL_INTERVAL",
        "HEARTBEAT_INTERVAL",
        "LEASE_DURATION",
        "RETRY_BACKOFF",
        "RETRY_BACKOFF_MAX",
    ):
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append(
                checks.Error(f"SUPAQUEUE[{key!r}] must be a number >= 0, not {value!r}.", id="supaqueue.E004")
            )
    age = conf.get("JOB_CONN_MAX_AGE")
    if age is not None and (isinstance(age, bool) or not isinstance(age, int | float) or age < 0):
        errors.append(
            checks.Error(
                f"SUPAQUEUE['JOB_CONN_MAX_AGE'] must be None or a number >= 0, not {age!r}.",
                id="supaqueue.E004",
            )
        )
    if not errors and conf.get("LEASE_DURATION") <= conf.get("HEARTBEAT_INTERVAL"):
        errors.append(
            checks.Error(
                "SUPAQUEUE['LEASE_DURATION'] must be longer than HEARTBEAT_INTERVAL, or leases expire "
                "between heartbeats and running jobs are retried while they still run.",
                id="supaqueue.E005",
            )
        )
    priority = conf.get("PRIORITY")
    if not isinstance(priority, int) or not -100 <= priority <= 100:
        errors.append(
            checks.Error("SUPAQUEUE['PRIORITY'] must be an integer in -100..100.", id="supaqueue.E006")
        )
    return errors


@checks.register("supaqueue")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Registered tasks a worker could not find again by name."""
    from django.apps import apps

    from ..tasks import registered_tasks

    discovered = {f"{config.name}.tasks" for config in apps.get_app_configs()}
    errors: list[checks.CheckMessage] = []
    for name, task in sorted(registered_tasks().items()):
        defined_in = task.func.__module__
        named_module = name.rpartition(".")[0]
        if task.django_task is not None or defined_in in discovered or named_module == defined_in:
            continue
        errors.append(
            checks.Warning(
                f"Task {name!r} is defined in {defined_in}, which no worker imports by itself: "
                f"its name does not lead there and the module is not an app's tasks.py.",
                hint="Move it to an app's tasks.py, or drop name= to register it under its dotted path.",
                id="supaqueue.W011",
            )
        )
    return errors


@checks.register("supaqueue")
def check_change_jobs(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Model-change jobs (signals) and job triggers (migrations) that could never run."""
    from django.db import router

    from ..change_jobs import registrations

    errors: list[checks.CheckMessage] = []
    for registration in registrations():
        model, job = registration.model, registration.job
        where = f"The {sorted(job.events)} job on {model._meta.label}"
        keywords = ("id",) if job.payload == "id" else ("row",) if job.payload == "row" else job.payload
        if job.http_queue is None:  # an HTTP call takes any JSON body: nothing to match
            errors += _job_problems(where, job.task, keywords, model, job.fields())
        if router.db_for_write(model) != conf.get("DATABASE"):
            errors.append(
                checks.Warning(
                    f"{where} writes its job to database {conf.get('DATABASE')!r}, but the model is written "
                    f"to {router.db_for_write(model)!r}: the job is not in the row's transaction.",
                    id="supaqueue.W010",
                )
            )
    for app_label, operation in installed_job_triggers():
        try:
            model = django_apps().get_model(app_label, operation.model_name)
        except LookupError:
            continue  # the model is gone, and its table with the trigger
        where = f"Job trigger {operation.name!r} on {model._meta.label}"
        payload = operation.payload
        keywords = ("id",) if payload == "id" else ("row",) if payload == "row" else tuple(payload)
        fields = (*(() if isinstance(payload, str) else payload), *operation.changed)
        fields += (operation.tenant_id,) if operation.tenant_id else ()
        errors += _job_problems(where, operation.task, keywords, model, fields)
    return errors


@checks.register("supaqueue")
def check_tasks_backend(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """TASKS naming SupaqueueBackend on a Django without django.tasks."""
    from django.conf import settings

    if django_tasks_available():
        return []
    return [
        checks.Error(
            f"TASKS[{alias!r}] uses django_supaqueue.backends.SupaqueueBackend, which needs Django 6.0+.",
            hint="Upgrade Django, or use django_supaqueue's own @task and enqueue().",
            id="supaqueue.E013",
        )
        for alias, params in sorted((getattr(settings, "TASKS", None) or {}).items())
        if isinstance(params, dict) and params.get("BACKEND") == "django_supaqueue.backends.SupaqueueBackend"
    ]


def django_tasks_available() -> bool:
    try:
        import django.tasks  # noqa: F401
    except ImportError:
        return False
    return True


def django_apps() -> Any:
    from django.apps import apps

    return apps


def installed_job_triggers() -> list[tuple[str, Any]]:
    """(app label, InstallJobTrigger) for every job trigger the migrations leave installed.

    Reads the migration files (no database): operations are replayed in
    dependency order, so a RemoveJobTrigger cancels an earlier install.
    """
    from django.db.migrations.loader import MigrationLoader

    from ..operations import InstallJobTrigger, RemoveJobTrigger

    try:
        graph = MigrationLoader(None, ignore_no_migrations=True).graph
    except Exception:  # noqa: BLE001  a broken migration graph is for migrate to report, not this check
        return []
    installed: dict[tuple[str, str, str], tuple[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    for leaf in sorted(graph.leaf_nodes()):
        for node in graph.forwards_plan(leaf):
            if node in seen:
                continue
            seen.add(node)
            for operation in graph.nodes[node].operations:
                if not isinstance(operation, InstallJobTrigger):
                    continue
                key = (node[0], operation.model_name_lower, operation.name)
                if isinstance(operation, RemoveJobTrigger):
                    installed.pop(key, None)
                else:
                    installed[key] = (node[0], operation)
    return list(installed.values())


def _job_problems(
    where: str, name: str, keywords: Sequence[str], model: Any, fields: Sequence[str]
) -> list[checks.CheckMessage]:
    from django.core.exceptions import FieldDoesNotExist

    from ..exceptions import UnknownTask
    from ..tasks import get_task

    errors: list[checks.CheckMessage] = []
    for field in fields:
        try:
            concrete = model._meta.get_field(field).concrete
        except FieldDoesNotExist:
            concrete = False
        if not concrete:
            errors.append(
                checks.Error(
                    f"{where} names {field!r}, which is not a field with a column.", id="supaqueue.E012"
                )
            )
    try:
        task = get_task(name)
    except UnknownTask:
        problem = _import_problem(name.rpartition(".")[0])
        errors.append(
            checks.Error(
                f"{where} enqueues {name!r}, which is not a registered task"
                + (f": {problem}" if problem else "."),
                hint="Check the dotted path, and that the function is decorated with @task.",
                id="supaqueue.E010",
            )
        )
        return errors
    except Exception as exc:  # noqa: BLE001  a task module that raises at import
        errors.append(
            checks.Error(
                f"{where} enqueues {name!r}, whose module raised {type(exc).__name__}: {exc}",
                id="supaqueue.E010",
            )
        )
        return errors
    try:
        task.signature.bind(**dict.fromkeys(keywords))
    except TypeError as exc:
        errors.append(
            checks.Error(
                f"{where} calls {name}{task.signature} with keyword arguments {sorted(keywords)}: {exc}.",
                hint='payload="id" passes id=, payload="row" passes row=, a list of fields passes each one.',
                id="supaqueue.E011",
            )
        )
    return errors


def _import_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None if it can."""
    import importlib

    if not module:
        return "it has no module part"
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001  anything a module raises at import is the problem
        return f"module {module!r} cannot be imported ({type(exc).__name__}: {exc})"
    return None


@checks.register("supaqueue")
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Schedules declared in code (@task(cron=), SUPAQUEUE['SCHEDULES']) that could never fire."""
    from django.core.exceptions import ImproperlyConfigured

    from ..exceptions import EnqueueError, InvalidSchedule
    from ..models import Schedule
    from ..scheduling import declared_schedules
    from ..tasks import get_task

    try:
        declared = declared_schedules()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="supaqueue.E030")]
    errors: list[checks.CheckMessage] = []
    for name, fields in declared.items():
        schedule = Schedule(name=name, **fields)
        try:
            schedule.timing()
            if not schedule.is_http:
                get_task(schedule.task_name).check_arguments((), schedule.payload)
        except (InvalidSchedule, EnqueueError) as exc:
            errors.append(checks.Error(f"Schedule {name!r}: {exc}", id="supaqueue.E031"))
    return errors


__all__ = ["check_http_secret_hosts", "check_http_secrets", "check_pooler"]  # registered in deployment
