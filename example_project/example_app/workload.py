"""The demo workload: a few jobs for each capability the queue has today, and how far they got.

Every demo job has a key. A key is unique among pending jobs, so enqueueing the
workload again while an earlier run's jobs still wait adds nothing; once those
finished, a new run enqueues fresh ones. The workload's state is the newest job
of each key.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q

from django_supaqueue import enqueue_http
from django_supaqueue.models import Job, JobEvent, Queue

from .models import Order, WarehouseSync
from .tasks import add, send_reminder, send_welcome, sync_inventory
from .views import SECRET_ALIAS, SECRET_HEADER

ORDER_NUMBERS = ("DEMO-1", "DEMO-2", "DEMO-3")
#: The HTTP queue: it calls the example's own webhook, on the web server the run command starts.
WEBHOOK_QUEUE = "webhooks"
WEBHOOK_PATH = "webhook/"
#: Its settings when the demo creates it; later runs change only its URL (to follow the port).
WEBHOOK_QUEUE_SETTINGS = {
    "http_secret": SECRET_ALIAS,
    "http_secret_header": SECRET_HEADER,
    "rate_limit": 2,
    "rate_period": 1.0,
    "timeout": 10.0,
}
#: Two parcels per demo order, each booked with one call to the webhook.
PARCELS = tuple((order, parcel) for order in ORDER_NUMBERS for parcel in (1, 2))
WELCOME_USERS = range(1, 7)
REMINDER_DELAY = timedelta(seconds=3)
FINISHED = (Job.Status.SUCCESSFUL, Job.Status.FAILED, Job.Status.CANCELLED)


def enqueue_workload(site_url: str) -> list[str]:
    """Enqueue the demo's jobs in one transaction (workers wake at commit); returns their keys.

    ``site_url`` is where this run serves the example project (``http://127.0.0.1:8000``):
    the HTTP queue's calls go there.
    """
    with transaction.atomic():
        point_webhook_queue(site_url)
        return [
            *_sums(),
            *_welcome_mails(),
            *_orders(),
            _inventory_sync(),
            _reminder(),
            *_parcel_bookings(),
        ]


def webhook_url(site_url: str) -> str:
    """The webhook queue's base URL: the demo app's endpoints, where ``WEBHOOK_PATH`` is appended."""
    return f"{site_url.rstrip('/')}/demo/"


def point_webhook_queue(site_url: str) -> Queue:
    """Create the HTTP queue, or point it at this run's web server: the port can change between runs."""
    url = webhook_url(site_url)
    queue, _created = Queue.objects.update_or_create(
        name=WEBHOOK_QUEUE,
        defaults={"http_url": url},
        create_defaults={"http_url": url, **WEBHOOK_QUEUE_SETTINGS},
    )
    return queue


def _sums() -> list[str]:
    """Plain Python tasks; the last one jumps the queue with a higher priority."""
    keys = []
    for i in range(1, 5):
        keys.append(add.enqueue(i, i * 10, key=f"demo:add:{i}").key)
    keys.append(add.using(priority=10, key="demo:add:urgent").enqueue(100, 200).key)
    return keys


def _welcome_mails() -> list[str]:
    """Six half-second jobs on the "emails" queue, capped at two running at once."""
    jobs = [send_welcome.enqueue(user_id=u, key=f"demo:welcome:{u}") for u in WELCOME_USERS]
    return [job.key for job in jobs]


def _orders() -> list[str]:
    """Orders whose save() enqueues their confirmation; existing ones are left as they are."""
    keys = []
    for number in ORDER_NUMBERS:
        order, _created = Order.objects.get_or_create(
            number=number, defaults={"email": f"{number.lower()}@example.com"}
        )
        keys.append(order.confirmation_key)
    return keys


def _inventory_sync() -> str:
    """A task that fails twice and succeeds on its third attempt (the warehouse is "down")."""
    sync, _created = WarehouseSync.objects.update_or_create(
        name="demo", defaults={"calls": 0, "synced_at": None}
    )
    return sync_inventory.enqueue(sync.pk, key="demo:inventory-sync").key


def _reminder() -> str:
    """A delayed job: it stays pending until its run_at, a few seconds from now."""
    return send_reminder.enqueue(ORDER_NUMBERS[0], run_at=REMINDER_DELAY, key="demo:reminder").key


def _parcel_bookings() -> list[str]:
    """Calls of the HTTP queue, two a second at most (its rate limit): the webhook books each parcel."""
    return [
        enqueue_http(
            WEBHOOK_QUEUE,
            {"order": order, "parcel": parcel},
            path=WEBHOOK_PATH,
            key=f"demo:parcel:{order}:{parcel}",
        ).key
        for order, parcel in PARCELS
    ]


def newest_jobs(keys: list[str]) -> list[Job]:
    """The newest job of each key: older ones belong to earlier runs."""
    return list(
        Job.objects.filter(key__in=keys).select_related("queue").order_by("key", "-id").distinct("key")
    )


def is_finished(jobs: list[Job]) -> bool:
    return all(job.status in FINISHED for job in jobs)


def next_run_at(jobs: list[Job]) -> datetime | None:
    """When the earliest pending job becomes runnable (a retry back-off or a delayed run_at)."""
    return min((job.run_at for job in jobs if job.status == Job.Status.PENDING), default=None)


def http_answers(jobs: list[Job]) -> Counter[int]:
    """How often each HTTP status answered the attempts of the HTTP jobs among ``jobs`` (their events)."""
    ids = [job.pk for job in jobs if job.queue.http_url]
    statuses = JobEvent.objects.filter(job_id__in=ids, http_status__isnull=False).values_list(
        "http_status", flat=True
    )
    return Counter(statuses)


def queue_progress(since: datetime) -> dict[str, Counter[str]]:
    """Per queue: jobs finished since ``since`` by outcome, plus every job still pending or running."""
    rows = (
        Job.objects.filter(
            Q(finished_at__gte=since) | Q(status__in=[Job.Status.PENDING, Job.Status.IN_PROGRESS])
        )
        .values_list("queue__name", "status")
        .annotate(n=Count("id"))
        .order_by("queue__name")
    )
    progress: dict[str, Counter[str]] = {}
    for queue, status, n in rows:
        progress.setdefault(queue, Counter())[status] = n
    return progress
