"""The example's tasks: autodiscovered because this app is in INSTALLED_APPS."""

from __future__ import annotations

import time

from django.db.models import F
from django.utils import timezone

from django_supaqueue import task

from .models import Order, WarehouseSync

#: Calls of a sync that the pretend warehouse API refuses before it answers.
WAREHOUSE_FAILURES = 2


@task
def add(a: int, b: int) -> int:
    """The smallest task there is: its return value becomes the job's JSON result."""
    return a + b


@task(queue="emails", max_attempts=5)
def send_welcome(user_id: int) -> str:
    """Pretends to send an e-mail; slow enough that the "emails" cap of two at once shows."""
    time.sleep(0.5)
    return f"welcome mail sent to user {user_id}"


@task(queue="emails")
def send_reminder(order_number: str) -> str:
    """Enqueued with ``run_at`` in the future: no worker takes it before then."""
    return f"reminder sent for order {order_number}"


@task(queue="orders")
def confirm_order(order_id: int) -> str:
    """Enqueued by ``Order.save()``: runs only if the order's transaction committed."""
    updated = Order.objects.filter(pk=order_id, status=Order.Status.NEW).update(
        status=Order.Status.CONFIRMED, confirmed_at=timezone.now()
    )
    return f"order {order_id} confirmed" if updated else f"order {order_id} was already confirmed"


@task(max_attempts=5, retry_backoff=0.5, retry_backoff_max=2)
def sync_inventory(sync_id: int) -> str:
    """Fails while the warehouse API is "down", then succeeds: the admin shows the retries.

    The count of calls lives in the database, so the outcome of each attempt is
    the same whichever worker process runs it.
    """
    WarehouseSync.objects.filter(pk=sync_id).update(calls=F("calls") + 1)
    sync = WarehouseSync.objects.get(pk=sync_id)
    if sync.calls <= WAREHOUSE_FAILURES:
        raise ConnectionError(f"warehouse API unavailable (call {sync.calls})")
    sync.synced_at = timezone.now()
    sync.save(update_fields=["synced_at"])
    return f"stock synced after {sync.calls} calls"
