"""Connecting model-change jobs to models: one set of signal receivers per model, and the mixin.

The receivers read each connected ChangeJob (declarations.py) and enqueue through
the producer's doors, ``enqueue`` and ``enqueue_http``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import models, router, transaction
from django.db.models.signals import post_delete, post_init, post_save

from ..api import enqueue, enqueue_http
from ..exceptions import TriggerConfigError
from .declarations import (
    _LOADED,
    ChangeJob,
    TenantOf,
    on_delete,
    on_save,
)


@dataclasses.dataclass(eq=False)
class Registration:
    """A ChangeJob connected to a model; ``disconnect()`` stops it (tests, feature flags)."""

    model: type[models.Model]
    job: ChangeJob

    def disconnect(self) -> None:
        hooks = _hooks.get(self.model)
        if hooks is not None:
            hooks.remove(self)


class _ModelHooks:
    """The signal receivers of one model: one per signal, whatever the number of jobs.

    post_init (tracking loaded values) and post_delete are connected only while a
    job needs them: each costs something on every instance or delete of the model.
    """

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        self.registrations: list[Registration] = []
        self.tracked: tuple[str, ...] = ()  # attnames of the fields some job's changed= watches
        self.tracked_names: set[str] = set()  # the same fields by name and by attname
        self._uid = f"supaqueue:{model._meta.label}"

    def add(self, registration: Registration) -> None:
        self.registrations.append(registration)
        self._reconnect()

    def remove(self, registration: Registration) -> None:
        if registration in self.registrations:
            self.registrations.remove(registration)
        self._reconnect()

    def _reconnect(self) -> None:
        model, uid = self.model, self._uid
        self.tracked_names = {n for r in self.registrations for n in r.job.changed}
        self.tracked_names |= set(_attnames(model, self.tracked_names))
        self.tracked = _attnames(model, self.tracked_names)
        saves = any(r.job.events & {"create", "update"} for r in self.registrations)
        deletes = any("delete" in r.job.events for r in self.registrations)
        for signal, receiver, wanted in (
            (post_init, self.on_init, bool(self.tracked)),
            (post_save, self.on_save, saves),
            (post_delete, self.on_delete, deletes),
        ):
            signal.disconnect(sender=model, dispatch_uid=uid)
            if wanted:
                signal.connect(receiver, sender=model, weak=False, dispatch_uid=uid)

    def remember(self, instance: models.Model, saved: Iterable[str] | None = None) -> None:
        """Keep the tracked values as loaded, or (after a save) the ones the save wrote."""
        values = instance.__dict__
        attnames = self.tracked if saved is None else _attnames(self.model, set(saved) & self.tracked_names)
        loaded = values.get(_LOADED, {}) if saved is not None else {}
        loaded.update({a: copy.deepcopy(values[a]) for a in attnames if a in values})
        values[_LOADED] = loaded

    def on_init(self, sender: Any, instance: models.Model, **kwargs: Any) -> None:
        self.remember(instance)

    def on_save(
        self, sender: Any, instance: models.Model, created: bool, raw: bool, update_fields: Any, **kwargs: Any
    ) -> None:
        if raw:
            return  # loaddata: fixtures describe rows, they do not happen to them
        event = "create" if created else "update"
        self._enqueue(instance, event, update_fields)
        if self.tracked:
            self.remember(instance, update_fields)

    def on_delete(self, sender: Any, instance: models.Model, **kwargs: Any) -> None:
        self._enqueue(instance, "delete", None)

    def _enqueue(self, instance: models.Model, event: str, update_fields: Any) -> None:
        for registration in list(self.registrations):
            job = registration.job
            if not job.wants(instance, event, update_fields):
                continue
            payload, tenant = job.payload_for(instance), job.tenant_for(instance)
            if job.http_queue is not None:
                enqueue_http(job.http_queue, payload, priority=job.priority, tenant_id=tenant)
            else:
                enqueue(job.task, payload, queue=job.queue, priority=job.priority, tenant_id=tenant)


def _attnames(model: type[models.Model], names: Iterable[str]) -> tuple[str, ...]:
    """The attnames of the named fields; unknown names are left to the system check (E012)."""
    found = set()
    for name in names:
        try:
            found.add(model._meta.get_field(name).attname)
        except FieldDoesNotExist:
            continue
    return tuple(sorted(found))


_hooks: dict[type[models.Model], _ModelHooks] = {}


def _resolve_model(model: type[models.Model] | str) -> type[models.Model]:
    if isinstance(model, str):
        return apps.get_model(model)
    if isinstance(model, type) and issubclass(model, models.Model):
        return model
    raise TriggerConfigError(f"model must be a model class or an 'app_label.ModelName' label, not {model!r}.")


def _connect(model: type[models.Model] | str, job: ChangeJob) -> Registration:
    """Enqueue ``job`` on the changes of ``model`` from now on."""
    model = _resolve_model(model)
    registration = Registration(model, job)
    hooks = _hooks.get(model)
    if hooks is None:
        hooks = _hooks[model] = _ModelHooks(model)
    hooks.add(registration)
    return registration


def _connect_or_decorate(model: Any, task: Any, make: Callable[[Any], ChangeJob]) -> Any:
    if task is not None:
        return _connect(model, make(task))

    def decorate(t: Any) -> Any:
        _connect(model, make(t))
        return t

    return decorate


def enqueue_on_save(
    model: type[models.Model] | str,
    task: Any = None,
    *,
    on: str = "both",
    payload: str | Sequence[str] = "id",
    changed: Sequence[str] = (),
    condition: Callable[[models.Model], bool] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    http_queue: str | None = None,
    tenant_id: TenantOf = None,
) -> Any:
    """Enqueue ``task`` whenever a ``model`` row is created and/or updated through save().

    With ``http_queue="hooks"`` (and no task) each change is a call to that HTTP
    queue, with the payload as its JSON body. ``tenant_id``: see ChangeJob.

    ``enqueue_on_save(Order, "shop.tasks.confirm", on="create")`` returns a
    Registration; without ``task`` it decorates one::

        @enqueue_on_save(Order, payload=["number", "email"], changed=["status"])
        @task
        def order_status_changed(number, email): ...
    """
    options = dict(on=on, payload=payload, changed=changed, condition=condition, queue=queue)
    options.update(priority=priority, tenant_id=tenant_id)
    if http_queue is not None:
        return _connect(model, on_save(None, http_queue=http_queue, **options))
    return _connect_or_decorate(model, task, lambda t: on_save(t, **options))


def enqueue_on_delete(
    model: type[models.Model] | str,
    task: Any = None,
    *,
    payload: str | Sequence[str] = "id",
    condition: Callable[[models.Model], bool] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    http_queue: str | None = None,
    tenant_id: TenantOf = None,
) -> Any:
    """Enqueue ``task`` (or a call to ``http_queue``) whenever a ``model`` row is deleted through the ORM."""
    options = dict(payload=payload, condition=condition, queue=queue, priority=priority, tenant_id=tenant_id)
    if http_queue is not None:
        return _connect(model, on_delete(None, http_queue=http_queue, **options))
    return _connect_or_decorate(model, task, lambda t: on_delete(t, **options))


class EnqueueOnChange:
    """Model mixin: declare jobs on the model, and save in a transaction so the job shares it.

    ::

        class Order(EnqueueOnChange, models.Model):
            jobs_on_change = [
                on_save("shop.tasks.confirm", on="create"),
                on_delete("shop.tasks.forget", payload="row"),
            ]

    The declarations are connected when Django is ready (for subclasses and
    proxies too). ``save()`` runs inside ``transaction.atomic()`` (without a
    savepoint when one is already open), so the row and its job commit together
    even when the caller opened no transaction.
    """

    jobs_on_change: ClassVar[Sequence[ChangeJob]] = ()

    def save(self, *args: Any, **kwargs: Any) -> None:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            super().save(*args, **kwargs)  # type: ignore[misc]


_declared: set[type[models.Model]] = set()


def connect_declared_models() -> None:
    """Connect the ``jobs_on_change`` of every EnqueueOnChange model (AppConfig.ready)."""
    for model in apps.get_models():
        if not issubclass(model, EnqueueOnChange) or model in _declared:
            continue
        _declared.add(model)
        for job in model.jobs_on_change:
            if not isinstance(job, ChangeJob):
                raise TriggerConfigError(
                    f"{model._meta.label}.jobs_on_change must hold on_save(...) and on_delete(...) "
                    f"declarations, not {job!r}."
                )
            _connect(model, job)


def registrations() -> list[Registration]:
    """Every connected model-change job, for system checks."""
    return [r for hooks in _hooks.values() for r in hooks.registrations]
