"""Jobs from model changes: enqueue a task when a row is created, updated or deleted.

A door onto the producer (through ``enqueue`` and ``enqueue_http``, so each job
is announced like any other), driven by Django's ``post_save`` and
``post_delete`` signals. The job is written by the same connection as the row,
so it commits or rolls back with it whenever the save runs in a transaction:
inside ``transaction.atomic()``, with ``ATOMIC_REQUESTS``, in a delete (Django
always deletes in a transaction), or on a model with the ``EnqueueOnChange``
mixin, whose ``save()`` opens one. A plain ``save()`` in autocommit commits the
row before ``post_save`` runs, which is Django's behaviour, not ours.

Signals do not fire for ``QuerySet.update()``, ``bulk_create()``,
``bulk_update()`` or raw SQL; ``django_supaqueue.operations.InstallJobTrigger``
covers those in the database, with the same payload shapes (but no
``job_enqueued``: no Python runs there).
"""

from .declarations import SAVE_EVENTS, ChangeJob, TenantOf, on_delete, on_save
from .hooks import (
    EnqueueOnChange,
    Registration,
    connect_declared_models,
    enqueue_on_delete,
    enqueue_on_save,
    registrations,
)

__all__ = [
    "SAVE_EVENTS",
    "ChangeJob",
    "EnqueueOnChange",
    "Registration",
    "TenantOf",
    "connect_declared_models",
    "enqueue_on_delete",
    "enqueue_on_save",
    "on_delete",
    "on_save",
    "registrations",
]
