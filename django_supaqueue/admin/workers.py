"""The workers screen: who is alive, what each runs, and which have gone quiet.

Workers and leases belong to the running processes and the queue's recovery;
the admin only looks. A worker is stale when its heartbeat is older than
``SUPAQUEUE["LEASE_DURATION"]``: its leases are then due for recovery by any
live worker, and its row goes once it holds nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Max, Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import conf
from ..models import CurrentJob, JobEvent, Worker
from .display import age, local_time, short_duration, short_name, status_badge

#: Running jobs listed per worker in the list (the detail page lists them all).
RUNNING_SHOWN = 10
#: Most recent attempts a worker's page lists.
RECENT_SHOWN = 25
#: How far back (in events, newest first) a worker's page looks for its recent attempts: a bound on
#: the read, found through the primary key, for a worker that has run nothing for a long time.
RECENT_SCAN = 50_000
#: The events that end an attempt: what a worker's page lists as the jobs it ran.
OUTCOMES = [
    JobEvent.Kind.SUCCEEDED,
    JobEvent.Kind.RETRIED,
    JobEvent.Kind.FAILED,
    JobEvent.Kind.STOPPED,
    JobEvent.Kind.RELEASED,
]


def is_stale(worker: Worker) -> bool:
    return worker.last_heartbeat_at < timezone.now() - timedelta(seconds=float(conf.get("LEASE_DURATION")))


def running_jobs(leases: list[CurrentJob], limit: int | None = None) -> SafeString:
    if not leases:
        return SafeString("–")
    shown = leases if limit is None else leases[:limit]
    items = format_html_join(
        "",
        '<li><a href="{}">#{} {}</a> (attempt {}, {})</li>',
        (
            (
                reverse("admin:supaqueue_job_change", args=[lease.job_id]),
                lease.job_id,
                short_name(lease.job.task_name),
                lease.attempt,
                age(lease.started_at),
            )
            for lease in shown
        ),
    )
    more = len(leases) - len(shown)
    tail = format_html("<li>{}</li>", _("and %(n)d more") % {"n": more}) if more > 0 else ""
    return format_html('<ul class="sq-running">{}{}</ul>', items, tail)


def held_jobs(worker: Worker) -> list[CurrentJob]:
    """The leases the worker holds now, oldest first, each with its job and times ready to show."""
    leases = list(CurrentJob.objects.filter(worker=worker).select_related("job").order_by("started_at", "id"))
    for lease in leases:
        lease.job_url = reverse("admin:supaqueue_job_change", args=[lease.job_id])
        lease.task = short_name(lease.job.task_name)
        lease.status_html = status_badge(lease.job.status)
        lease.started_html = local_time(lease.started_at)
        lease.expires_html = local_time(lease.lease_expires_at)
        lease.running_for = short_duration((timezone.now() - lease.started_at).total_seconds())
    return leases


def recent_attempts(worker: Worker, limit: int = RECENT_SHOWN) -> list[JobEvent]:
    """The newest attempts the worker finished, newest first, with their jobs' statuses now.

    Events carry the worker's name, which has no index of its own: the read
    walks the events back through the primary key, no further than the newest
    ``RECENT_SCAN`` events and the worker's start, so it is bounded at any table size.
    """
    newest = JobEvent.objects.aggregate(newest=Max("id"))["newest"]
    if newest is None:
        return []
    events = list(
        JobEvent.objects.filter(
            id__gt=newest - RECENT_SCAN,
            worker_name=worker.name,
            kind__in=OUTCOMES,
            at__gte=worker.started_at,
        )
        .select_related("job")
        .order_by("-id")[:limit]
    )
    for event in events:
        event.job_url = reverse("admin:supaqueue_job_change", args=[event.job_id])
        event.task = short_name(event.job.task_name)
        event.status_html = status_badge(event.job.status)
        event.at_html = local_time(event.at)
        event.duration_text = short_duration(event.duration) if event.duration is not None else ""
    return events


class ReadOnlyAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": ["django_supaqueue/admin.css"]}

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ["name", "state", "host", "pid", "served", "concurrency", "heartbeat", "running"]
    readonly_fields = ["state", "host", "pid", "served", "concurrency", "started", "heartbeat"]
    fields = ["name", *readonly_fields]
    change_form_template = "django_supaqueue/admin/worker_change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        leases = CurrentJob.objects.select_related("job").order_by("started_at")
        return super().get_queryset(request).prefetch_related(Prefetch("current_jobs", queryset=leases))

    @admin.display(description=_("state"))
    def state(self, worker: Worker) -> SafeString:
        if is_stale(worker):
            return format_html('<span class="sq-badge sq-stale">{}</span>', _("Stale"))
        return format_html('<span class="sq-badge sq-alive">{}</span>', _("Alive"))

    @admin.display(description=_("queues"))
    def served(self, worker: Worker) -> str:
        return ", ".join(worker.queues) if worker.queues else str(_("all"))

    @admin.display(description=_("started at"), ordering="started_at")
    def started(self, worker: Worker) -> SafeString | str:
        return local_time(worker.started_at)

    @admin.display(description=_("last heartbeat"), ordering="last_heartbeat_at")
    def heartbeat(self, worker: Worker) -> SafeString:
        """How long ago (what tells alive from stale at a glance), and the moment itself."""
        ago = _("%(age)s ago") % {"age": age(worker.last_heartbeat_at)}
        return format_html("{} ({})", ago, local_time(worker.last_heartbeat_at))

    @admin.display(description=_("running"))
    def running(self, worker: Worker) -> SafeString:
        return running_jobs(list(worker.current_jobs.all()), RUNNING_SHOWN)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The worker's page, with the jobs it holds now and the attempts it finished lately."""
        worker = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if worker is not None:
            extra.update(held_jobs=held_jobs(worker), recent_attempts=recent_attempts(worker))
            extra.update(recent_shown=RECENT_SHOWN)
        return super().change_view(request, object_id, form_url, extra)


@admin.register(CurrentJob)
class CurrentJobAdmin(ReadOnlyAdmin):
    list_display = ["job", "worker", "attempt", "started", "lease_until"]
    list_select_related = ["job", "worker"]

    @admin.display(description=_("started at"), ordering="started_at")
    def started(self, lease: CurrentJob) -> SafeString | str:
        return local_time(lease.started_at)

    @admin.display(description=_("lease expires at"), ordering="lease_expires_at")
    def lease_until(self, lease: CurrentJob) -> SafeString | str:
        return local_time(lease.lease_expires_at)
