"""What a model-change job is: the task, the events, the payload, the conditions and the tenant.

Declarations only (``on_save``, ``on_delete``, ``ChangeJob``); hooks.py connects them to models.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from ..exceptions import InvalidPayload, TriggerConfigError
from ..tasks import task_name

#: ``on=`` values of enqueue_on_save and the events they stand for.
SAVE_EVENTS = {
    "create": frozenset({"create"}),
    "update": frozenset({"update"}),
    "both": frozenset({"create", "update"}),
}
#: A job's tenant: a field of the row, or a callable reading it off the instance.
TenantOf = str | Callable[[models.Model], str | None] | None
#: The attribute holding an instance's tracked values as they were loaded or last saved.
_LOADED = "_supaqueue_loaded"


@dataclasses.dataclass(frozen=True)
class ChangeJob:
    """What to enqueue when a row changes: a task, the events, the payload and the conditions.

    ``payload`` is ``"id"`` (the task gets ``id=<pk>``), ``"row"`` (``row=<dict of
    column: value>``) or a tuple of field names (one keyword argument each).
    ``tenant_id`` is a field name (its value, as text; blank or None: no tenant)
    or a callable taking the instance and returning the tenant or None.
    """

    task: str
    events: frozenset[str]
    payload: str | tuple[str, ...] = "id"
    changed: tuple[str, ...] = ()
    condition: Callable[[models.Model], bool] | None = None
    queue: str | None = None
    priority: int | None = None
    http_queue: str | None = None  # a call to this HTTP queue instead of a task (task is "")
    tenant_id: TenantOf = None

    def __post_init__(self) -> None:
        if self.http_queue is not None:
            if not isinstance(self.http_queue, str) or not self.http_queue or self.task:
                raise TriggerConfigError("http_queue= names an HTTP queue, and then no task is given.")
        elif not isinstance(self.task, str) or not self.task:
            raise TriggerConfigError(f"task must be a task or its dotted name, not {self.task!r}.")
        if self.payload not in ("id", "row") and not (
            isinstance(self.payload, tuple) and self.payload and all(isinstance(f, str) for f in self.payload)
        ):
            raise TriggerConfigError(
                f'payload must be "id", "row" or a list of field names, not {self.payload!r}.'
            )
        if self.condition is not None and not callable(self.condition):
            raise TriggerConfigError(
                f"condition must be a callable taking the instance, not {self.condition!r}."
            )
        if self.changed and "delete" in self.events:
            raise TriggerConfigError("changed= applies to saves; a deleted row has nothing that changed.")
        if not (self.tenant_id is None or callable(self.tenant_id) or isinstance(self.tenant_id, str)):
            raise TriggerConfigError(f"tenant_id must be a field name or a callable, not {self.tenant_id!r}.")

    def fields(self) -> tuple[str, ...]:
        """Every field name this job reads, for system checks."""
        named = self.payload if isinstance(self.payload, tuple) else ()
        tenant = (self.tenant_id,) if isinstance(self.tenant_id, str) else ()
        return (*named, *self.changed, *tenant)

    def wants(self, instance: models.Model, event: str, update_fields: Iterable[str] | None) -> bool:
        if event not in self.events:
            return False
        if self.changed and event == "update" and not _changed(instance, self.changed, update_fields):
            return False
        return self.condition is None or bool(self.condition(instance))

    def payload_for(self, instance: models.Model) -> dict[str, Any]:
        """The job's keyword arguments, as plain JSON (Django's encoder, then back)."""
        meta = instance._meta
        if self.payload == "id":
            data: dict[str, Any] = {"id": instance.pk}
        elif self.payload == "row":
            data = {"row": {f.column: _prep(f, instance) for f in meta.concrete_fields}}
        else:
            data = {name: _prep(meta.get_field(name), instance) for name in self.payload}
        try:
            return json.loads(json.dumps(data, cls=DjangoJSONEncoder))
        except (TypeError, ValueError) as exc:
            raise InvalidPayload(
                f"{meta.label} row cannot be a JSON payload for {self.task} ({exc}): "
                'use payload="id" or a list of fields that JSON can hold.'
            ) from None

    def tenant_for(self, instance: models.Model) -> str | None:
        """The job's tenant: the callable's answer, checked by enqueue, or the field's value as text."""
        if self.tenant_id is None or callable(self.tenant_id):
            return None if self.tenant_id is None else self.tenant_id(instance)
        value = getattr(instance, instance._meta.get_field(self.tenant_id).attname)
        return None if value is None or value == "" else str(value)


def _prep(field: models.Field, instance: models.Model) -> Any:
    """A field's value as the database would get it (a file's name, a foreign key's id)."""
    return field.get_prep_value(getattr(instance, field.attname))


def _changed(instance: models.Model, names: Sequence[str], update_fields: Iterable[str] | None) -> bool:
    """Whether a save wrote a new value to one of ``names`` (an unknown original counts as new)."""
    loaded = instance.__dict__.get(_LOADED, {})
    saved = None if update_fields is None else set(update_fields)
    for name in names:
        field = instance._meta.get_field(name)
        if saved is not None and name not in saved and field.attname not in saved:
            continue
        if field.attname not in instance.__dict__:
            continue  # deferred and never loaded: save() did not write it
        if field.attname not in loaded or loaded[field.attname] != instance.__dict__[field.attname]:
            return True
    return False


def _task_name(task: Any) -> str:
    try:
        return task_name(task)
    except TypeError as exc:
        raise TriggerConfigError(str(exc)) from None


def on_save(
    task: Any,
    *,
    on: str = "both",
    payload: str | Sequence[str] = "id",
    changed: Sequence[str] = (),
    condition: Callable[[models.Model], bool] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    http_queue: str | None = None,
    tenant_id: TenantOf = None,
) -> ChangeJob:
    """A job to enqueue when a row is saved: ``on`` is "create", "update" or "both"."""
    if on not in SAVE_EVENTS:
        raise TriggerConfigError(f'on must be "create", "update" or "both", not {on!r}.')
    return ChangeJob(
        task=_task_name(task) if http_queue is None else "",
        http_queue=http_queue,
        events=SAVE_EVENTS[on],
        payload=payload if isinstance(payload, str) else tuple(payload),
        changed=tuple(changed),
        condition=condition,
        queue=queue,
        priority=priority,
        tenant_id=tenant_id,
    )


def on_delete(
    task: Any,
    *,
    payload: str | Sequence[str] = "id",
    condition: Callable[[models.Model], bool] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    http_queue: str | None = None,
    tenant_id: TenantOf = None,
) -> ChangeJob:
    """A job to enqueue when a row is deleted (the payload is read from the deleted instance)."""
    return ChangeJob(
        task=_task_name(task) if http_queue is None else "",
        http_queue=http_queue,
        events=frozenset({"delete"}),
        payload=payload if isinstance(payload, str) else tuple(payload),
        condition=condition,
        queue=queue,
        priority=priority,
        tenant_id=tenant_id,
    )
