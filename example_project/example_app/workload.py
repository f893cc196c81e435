"""The demo workload: a few jobs for each capability the queue has, and how far they got.

Every demo job has a key. A key is unique among pending jobs, so enqueueing the
workload again while an earlier run's jobs still wait adds nothing; once those
finished, a new run enqueues fresh ones. The one exception is the cron schedule's
job: a schedule's jobs have no key, so the schedule row says which is its latest.
The workload's state is the newest job of each key, plus that one; a run's
summary and progress count only the jobs created since it started (``run_started``),
not an earlier run's that a key found still waiting, nor an order confirmed before.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count

from django_supaqueue import Pipeline, enqueue_http, scheduling
from django_supaqueue.models import Job, JobEvent, Queue, Schedule, ScheduleTick

from .models import Order, WarehouseSync
from .tasks import (
    add,
    charge_payment,
    reserve_stock,
    send_reminder,
    send_shipping_mail,
    send_welcome,
    ship_order,
    sync_inventory,
)
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
#: The order the fulfilment pipeline ships, what it holds and what it costs.
FULFILMENT_ORDER = ORDER_NUMBERS[0]
FULFILMENT_ITEMS = {"mug": 2, "poster": 1}
FULFILMENT_AMOUNT = "42.00"
#: The parcel the pipeline books with the carrier (the webhook): the bookings above took 1 and 2.
FULFILMENT_PARCEL = 3
#: The pipeline's steps in the order they are added; step ``s`` has the key ``demo:fulfil:<order>:<s>``.
FULFILMENT_STEPS = ("reserve", "charge", "ship", "book", "mail")
#: The cron schedule that the example's settings declare (SUPAQUEUE["SCHEDULES"]).
REPORT_SCHEDULE = "orders-report"


def enqueue_workload(site_url: str) -> list[str]:
    """Enqueue the demo's jobs and fire its schedule, in one transaction (workers wake at commit).

    Returns the keys of the jobs. ``site_url`` is where this run serves the example
    project (``http://127.0.0.1:8000``): the HTTP queue's calls go there.
    """
    with transaction.atomic():
        point_webhook_queue(site_url)
        keys = [
            *_sums(),
            *_welcome_mails(),
            *_orders(),
            _inventory_sync(),
            _reminder(),
            *_parcel_bookings(),
            *enqueue_fulfilment(FULFILMENT_ORDER),
        ]
        run_report_now()
        return keys


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


def fulfilment_keys(order_number: str) -> dict[str, str]:
    """The key of each step of the pipeline that fulfils ``order_number``, by step."""
    return {step: f"demo:fulfil:{order_number}:{step}" for step in FULFILMENT_STEPS}


def enqueue_fulfilment(order_number: str) -> list[str]:
    """An order's fulfilment pipeline: stock and payment in parallel, then ship, book the carrier, mail::

        reserve --+
                  +--> ship --> book (HTTP: the webhook) --> mail
        charge ---+

    Every step is keyed, and a step that meets its key on a job not started yet
    *is* that job. A step that already ran would be enqueued afresh, though, apart
    from the later steps of its pipeline still waiting, so while any step of an
    earlier run's pipeline is unfinished the pipeline is not enqueued again: its
    keys find that run's jobs. Returns the keys of the steps, in the order above.
    """
    order = order_number
    keys = fulfilment_keys(order)
    if Job.objects.filter(key__in=keys.values()).exclude(status__in=FINISHED).exists():
        return list(keys.values())
    p = Pipeline()
    reserve = p.add(reserve_stock, order_number=order, items=FULFILMENT_ITEMS, key=keys["reserve"])
    charge = p.add(charge_payment, order_number=order, amount=FULFILMENT_AMOUNT, key=keys["charge"])
    p.chain(
        p.add(ship_order, order_number=order, depends_on=[reserve, charge], key=keys["ship"]),
        p.add_http(
            WEBHOOK_QUEUE, {"order": order, "parcel": FULFILMENT_PARCEL}, WEBHOOK_PATH, key=keys["book"]
        ),
        p.add(send_shipping_mail, order_number=order, key=keys["mail"]),
    )
    return [job.key for job in p.enqueue()]


def run_report_now() -> ScheduleTick | None:
    """Fire the cron schedule once now, as the admin's "Run now" does, unless its latest job is unfinished.

    Its cadence is a minute: firing it by hand shows it at once (``--once`` need
    not wait for a tick) and leaves the cadence as it was. The row comes from the
    settings through the sync that ``runworkers`` also runs when it starts. The
    job has no key (schedules' jobs have none): ``workload_jobs`` finds it.
    Returns the tick fired, or None when the latest job was still to finish.
    """
    scheduling.sync_declared()
    schedule = report_schedule()
    if Job.objects.filter(pk=schedule.last_job_id).exclude(status__in=FINISHED).exists():
        return None
    return scheduling.run_now(schedule)


def report_schedule() -> Schedule:
    """The schedule row, as the sync made it from the settings (the workers keep its runs on it)."""
    return Schedule.objects.get(name=REPORT_SCHEDULE)


def last_report_tick() -> ScheduleTick | None:
    """The report schedule's latest firing, on its cadence or by hand, with its job."""
    return next(iter(scheduling.recent_ticks(report_schedule(), limit=1)), None)


def run_started() -> datetime:
    """The moment a run starts, by the database's clock: the one that writes the jobs' ``created_at``."""
    with connection.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


def workload_jobs(keys: list[str], since: datetime | None = None) -> list[Job]:
    """The newest job of each key, and the report schedule's latest job; with ``since``, only those
    created since then (this run's: a key held by an earlier run's unfinished job enqueued nothing)."""
    latest = Job.objects.filter(pk=report_schedule().last_job_id).select_related("queue")
    if since is not None:
        latest = latest.filter(created_at__gte=since)
    return newest_jobs(keys, since) + list(latest)


def newest_jobs(keys: list[str], since: datetime | None = None) -> list[Job]:
    """The newest job of each key: older ones belong to earlier runs (all before ``since`` do)."""
    jobs = Job.objects.filter(key__in=keys)
    if since is not None:
        jobs = jobs.filter(created_at__gte=since)
    return list(jobs.select_related("queue").order_by("key", "-id").distinct("key"))


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
    """Per queue: the jobs created since ``since`` (this run's, and any enqueued meanwhile) by status.

    An earlier run's jobs are left out, finished or not: the counts are this run's.
    """
    rows = (
        Job.objects.filter(created_at__gte=since)
        .values_list("queue__name", "status")
        .annotate(n=Count("id"))
        .order_by("queue__name")
    )
    progress: dict[str, Counter[str]] = {}
    for queue, status, n in rows:
        progress.setdefault(queue, Counter())[status] = n
    return progress
