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
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import conf
from ..models import CurrentJob, Worker
from .display import age

#: Running jobs listed per worker in the list (the detail page lists them all).
RUNNING_SHOWN = 10


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
                lease.job.task_name.rsplit(".", 1)[-1],
                lease.attempt,
                age(lease.started_at),
            )
            for lease in shown
        ),
    )
    more = len(leases) - len(shown)
    tail = format_html("<li>{}</li>", _("and %(n)d more") % {"n": more}) if more > 0 else ""
    return format_html('<ul class="sq-running">{}{}</ul>', items, tail)


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
    readonly_fields = [
        "state",
        "host",
        "pid",
        "served",
        "concurrency",
        "started_at",
        "heartbeat",
        "running_all",
    ]
    fields = ["name", *readonly_fields]

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

    @admin.display(description=_("last heartbeat"), ordering="last_heartbeat_at")
    def heartbeat(self, worker: Worker) -> str:
        return _("%(age)s ago") % {"age": age(worker.last_heartbeat_at)}

    @admin.display(description=_("running"))
    def running(self, worker: Worker) -> SafeString:
        return running_jobs(list(worker.current_jobs.all()), RUNNING_SHOWN)

    @admin.display(description=_("running"))
    def running_all(self, worker: Worker) -> SafeString:
        return running_jobs(list(worker.current_jobs.all()))


@admin.register(CurrentJob)
class CurrentJobAdmin(ReadOnlyAdmin):
    list_display = ["job", "worker", "attempt", "started_at", "lease_expires_at"]
    list_select_related = ["job", "worker"]
