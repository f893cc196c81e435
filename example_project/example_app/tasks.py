"""The example's tasks: autodiscovered because this app is in INSTALLED_APPS."""

from __future__ import annotations

import time
from typing import Any

from django.db.models import Count, F
from django.utils import timezone

from django_supaqueue import dependency_results, task

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


@task
def report_orders() -> dict[str, int]:
    """The demo's cron job (``SUPAQUEUE["SCHEDULES"]["orders-report"]``): orders counted by status.

    Its result is the report: the admin shows it on the job, linked from the schedule's runs.
    """
    counts = dict(Order.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {status: counts.get(status, 0) for status in Order.Status.values}


# -- the order-fulfilment pipeline (workload.enqueue_fulfilment wires these into a graph) --


@task(queue="orders")
def reserve_stock(order_number: str, items: dict[str, int]) -> dict[str, Any]:
    """Runs in parallel with charge_payment: neither needs the other."""
    return {"order": order_number, "reserved": sum(items.values())}


@task(queue="orders")
def charge_payment(order_number: str, amount: str) -> dict[str, Any]:
    return {"order": order_number, "charge": f"CH-{order_number}", "amount": amount}


@task(queue="orders")
def ship_order(order_number: str) -> dict[str, Any]:
    """The fan-in: runs once the stock is reserved *and* the payment charged, and reads both results."""
    reservation, payment = dependency_results()
    return {"order": order_number, "items": reservation["reserved"], "charge": payment["charge"]}


@task(queue="emails")
def send_shipping_mail(order_number: str) -> str:
    """Runs after the carrier's HTTP call: its result (the webhook's JSON answer) has the tracking code."""
    (booking,) = dependency_results()
    return f"shipping mail for order {order_number} sent, tracking {booking['body']['tracking']}"
