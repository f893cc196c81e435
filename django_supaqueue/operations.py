"""Migration operations that install job triggers: jobs for changes Django's signals never see.

``QuerySet.update()``, ``bulk_create()``, ``bulk_update()`` and raw SQL send no
signals. A job trigger is a PostgreSQL trigger on the model's table that
enqueues a task for every inserted, updated or deleted row, whoever changed it,
in the same statement and transaction. Users opt in per model by adding the
operation to one of their own migrations::

    from django_supaqueue.operations import InstallJobTrigger

    class Migration(migrations.Migration):
        dependencies = [("shop", "0007_order"), ("supaqueue", "0001_initial")]
        operations = [
            InstallJobTrigger(
                model_name="order", task="shop.tasks.order_changed", payload=["number", "status"],
                on=["insert", "update"], changed=["status"],
            ),
        ]

The trigger's SQL lives in ``django_supaqueue.queue``; this module turns the
model's migration state into its arguments. A trigger's jobs are written where
no Python runs, so they are the only jobs that send no ``job_enqueued``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.migrations.operations.base import Operation

from . import conf
from . import queue as q
from .exceptions import TriggerConfigError
from .models import Queue


class InstallJobTrigger(Operation):
    """Install a trigger on ``model_name``'s table that enqueues ``task`` for each changed row.

    ``payload``: "id" (``id=<pk>``), "row" (``row=<the whole row as JSON>``) or a
    list of field names (one keyword argument each): the shapes
    ``enqueue_on_save`` gives. ``on``: any of "insert", "update", "delete".
    ``changed``: fire on updates only when one of these fields changed.
    ``tenant_id``: a field whose value (as text; NULL or '' for none) is each
    job's tenant; it is read in SQL, where nothing checks it but the job's
    column (a value over 255 characters fails the row's statement). The queue,
    priority and max attempts are fixed when the migration runs: the ones given
    here, else the task's ``@task`` options if it is registered then, else the
    queue's and the settings' defaults.
    """

    reduces_to_sql = False  # it reads the settings and creates the queue row
    reversible = True

    def __init__(
        self,
        model_name: str,
        task: str,
        payload: str | Sequence[str] = "id",
        on: Sequence[str] = ("insert", "update"),
        changed: Sequence[str] = (),
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        name: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.task = task
        self.payload = payload if isinstance(payload, str) else _as_list(payload)
        self.on = [on] if isinstance(on, str) else _as_list(on)
        self.changed = _as_list(changed)
        self.queue = queue
        self.priority = priority
        self.max_attempts = max_attempts
        self.name = name or default_trigger_name(task)
        self.tenant_id = tenant_id
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.task, str) or "." not in self.task:
            raise TriggerConfigError(f"task must be a task's dotted name, not {self.task!r}.")
        if self.payload not in ("id", "row") and not (
            isinstance(self.payload, list) and self.payload and all(isinstance(f, str) for f in self.payload)
        ):
            raise TriggerConfigError(
                f'payload must be "id", "row" or a list of field names, not {self.payload!r}.'
            )
        if (
            not isinstance(self.on, list)
            or not self.on
            or any(e not in q.TRIGGER_EVENTS for e in self.on)
            or (len(set(self.on)) != len(self.on))
        ):
            raise TriggerConfigError(
                f"on must list distinct events among {', '.join(q.TRIGGER_EVENTS)}, not {self.on!r}."
            )
        if not isinstance(self.changed, list) or not all(isinstance(f, str) for f in self.changed):
            raise TriggerConfigError(f"changed must be a list of field names, not {self.changed!r}.")
        if self.changed and "update" not in self.on:
            raise TriggerConfigError('changed= only applies to "update" triggers.')
        if self.tenant_id is not None and (not isinstance(self.tenant_id, str) or not self.tenant_id):
            raise TriggerConfigError(f"tenant_id must name a field of the model, not {self.tenant_id!r}.")
        if not self.name or len(self.name) > 56:
            raise TriggerConfigError(f"name must be 1 to 56 characters, not {self.name!r}.")

    @property
    def model_name_lower(self) -> str:
        return self.model_name.lower()

    def describe(self) -> str:
        return f"Install job trigger {self.name} ({self.task}) on {self.model_name}"

    @property
    def migration_name_fragment(self) -> str:
        return f"{self.model_name_lower}_{self.name}"

    def state_forwards(self, app_label: str, state: Any) -> None:
        """Triggers are not part of the model state."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            with schema_editor.connection.cursor() as cursor:
                q.install_row_trigger(cursor, self.row_trigger(model), _queue_columns(to_state))

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            with schema_editor.connection.cursor() as cursor:
                q.drop_row_trigger(cursor, self.row_trigger(model))

    def row_trigger(self, model: type[models.Model]) -> q.RowTrigger:
        """The trigger this operation installs on ``model`` (a migration-state model or the real one)."""
        meta = model._meta
        if self.payload == "row":
            payload: str | tuple[tuple[str, str], ...] = "row"
        elif self.payload == "id":
            payload = (("id", meta.pk.column),)
        else:
            payload = tuple((name, _column(model, name)) for name in self.payload)
        options = _task_options(self.task)
        return q.RowTrigger(
            table=meta.db_table,
            name=self.name,
            events=tuple(self.on),
            task_name=self.task,
            queue=self.queue or options.get("queue") or conf.get("DEFAULT_QUEUE"),
            payload=payload,
            pk_column=meta.pk.column,
            changed=tuple(_column(model, name) for name in self.changed),
            priority=self.priority if self.priority is not None else options.get("priority"),
            max_attempts=self.max_attempts if self.max_attempts is not None else options.get("max_attempts"),
            tenant_column=None if self.tenant_id is None else _column(model, self.tenant_id),
        )


class RemoveJobTrigger(InstallJobTrigger):
    """Drop a trigger that InstallJobTrigger installed; give it the same arguments to stay reversible."""

    def describe(self) -> str:
        return f"Remove job trigger {self.name} ({self.task}) from {self.model_name}"

    @property
    def migration_name_fragment(self) -> str:
        return f"remove_{self.model_name_lower}_{self.name}"

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        super().database_backwards(app_label, schema_editor, to_state, from_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        super().database_forwards(app_label, schema_editor, to_state, from_state)


def _as_list(value: Any) -> Any:
    """A sequence as a list; anything else as it is, for _validate to refuse with a clear message."""
    return list(value) if isinstance(value, list | tuple) else value


def default_trigger_name(task: str) -> str:
    """``supaqueue_<function>_<hash>``: readable in psql, distinct per task."""
    function = task.rpartition(".")[2][:30] if isinstance(task, str) else ""
    digest = hashlib.sha1(str(task).encode()).hexdigest()[:8]
    return f"supaqueue_{function}_{digest}"


def _queue_columns(state: Any) -> frozenset[str]:
    """The queue table's columns as this migration finds them: its historical model's, not today's.

    Empty when supaqueue is not migrated yet (install_row_trigger then says what
    to depend on).
    """
    try:
        queue = state.apps.get_model(Queue._meta.label)
    except LookupError:
        return frozenset()
    return frozenset(field.column for field in queue._meta.concrete_fields)


def _column(model: type[models.Model], name: str) -> str:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        raise TriggerConfigError(f"{model._meta.label} has no field {name!r} for a job trigger.") from None
    if not getattr(field, "concrete", False) or field.column is None:
        raise TriggerConfigError(
            f"{model._meta.label}.{name} has no column: a job trigger can only read columns."
        )
    return field.column


def _task_options(task_name: str) -> dict[str, Any]:
    """The @task options of ``task_name`` when it is registered as the migration runs, else none.

    Migrations outlive code: a trigger installed by an old migration may name a
    task that is gone, and must still install.
    """
    from .tasks import get_task

    try:
        options = get_task(task_name).options
    except Exception:  # noqa: BLE001  unknown or broken tasks fall back to the defaults
        return {}
    return {"queue": options.queue, "priority": options.priority, "max_attempts": options.max_attempts}
