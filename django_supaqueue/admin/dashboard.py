"""The dashboard: every queue at a glance, refreshed in place.

Linked from the admin index through the ``Dashboard`` proxy model, and seen
with ``supaqueue.view_dashboard``. The page renders its panels on the server;
its script fetches ``data/`` every few seconds (JSON: the figures, plus the
same panels rendered again) and swaps them in, so the page never reloads and
the figures have one rendering path. Every figure is bounded at any table size:
see ``stats``. Moments are rendered here, with ``display.local_time``, in the
refreshed HTML too, so the page shows one format before and after a refresh.
Each queue's row can pause or resume it: a POST to the queue admin's view,
which runs the queue list's own action.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import conf, stats
from ..models import Dashboard, Job, JobEvent, Queue, Worker
from .chart import summary, throughput_svg
from .display import local_time
from .queues import annotate_queues, jobs_url

#: Most queues shown (by name); a site with more sees a note and the queues screen.
MAX_QUEUES = 50
#: The window of the throughput chart and of the failures table.
MINUTES = 60
#: How often the page refreshes itself, in milliseconds.
REFRESH_MS = 5000
#: The window of each queue's throughput: short, so it says how the queue runs now.
QUEUE_RATE_MINUTES = 5
#: A job is finished when its last attempt ended (a retried attempt is not the end).
FINISHED_KINDS = (JobEvent.Kind.SUCCEEDED, JobEvent.Kind.FAILED)


def finished_per_minute(queue_ids: list[int], minutes: int = QUEUE_RATE_MINUTES) -> dict[int, float]:
    """Jobs finished per minute in each queue over the last ``minutes``, from the job events.

    One statement for all the queues, reading the last few minutes of events only (the BRIN
    index on their time, as ``stats.throughput`` does) and their jobs by primary key.
    """
    since = timezone.now() - timedelta(minutes=minutes)
    rows = (
        JobEvent.objects.filter(at__gte=since, kind__in=FINISHED_KINDS, job__queue_id__in=queue_ids)
        .values_list("job__queue_id")
        .order_by()
        .annotate(n=Count("id"))
    )
    counts = dict(rows)
    return {qid: counts.get(qid, 0) / minutes for qid in queue_ids}


def snapshot() -> dict[str, Any]:
    """Everything the dashboard shows, read now: about a dozen short statements."""
    now = timezone.now()
    queues = list(Queue.objects.order_by("name")[: MAX_QUEUES + 1])
    more_queues = len(queues) > MAX_QUEUES
    queues = queues[:MAX_QUEUES]
    annotate_queues(queues)
    rates = finished_per_minute([q.pk for q in queues])
    statuses = [s.value for s in Job.Status]
    for q in queues:
        q.cells = [(s, q.status_counts.get(s), jobs_url(queue=q.pk, status=s)) for s in statuses]
        q.wait_seconds = (now - q.oldest_runnable).total_seconds() if q.oldest_runnable else None
        q.finished_per_minute = rates[q.pk]
    minutes = stats.throughput(MINUTES)
    failures = stats.recent_failures(MINUTES)
    stale_before = now - timedelta(seconds=float(conf.get("LEASE_DURATION")))
    workers = Worker.objects.aggregate(
        alive=Count("id", filter=Q(last_heartbeat_at__gte=stale_before)),
        stale=Count("id", filter=Q(last_heartbeat_at__lt=stale_before)),
    )
    return {
        "generated_at": now,
        "generated_at_html": local_time(now),
        "queues": queues,
        "more_queues": more_queues,
        "statuses": [(s, label) for s, label in Job.Status.choices],
        "minutes": minutes,
        "chart": throughput_svg(minutes),
        "chart_summary": summary(minutes),
        "failures": failures,
        "failure_rows": [(f, local_time(f.last_at)) for f in failures],
        "window": MINUTES,
        "rate_window": QUEUE_RATE_MINUTES,
        "workers": workers,
    }


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated_at": data["generated_at"].isoformat(),
        "generated_at_html": str(data["generated_at_html"]),
        "queues": [
            {
                "name": q.name,
                "paused": q.paused,
                "counts": {s: c.as_json() for s, c in q.status_counts.items()},
                "oldest_runnable_age": q.wait_seconds,
                "finished_per_minute": q.finished_per_minute,
            }
            for q in data["queues"]
        ],
        "throughput": [
            {
                "minute": m.minute.isoformat(),
                "succeeded": m.succeeded,
                "failed": m.failed,
                "failure_rate": m.failure_rate,
            }
            for m in data["minutes"]
        ],
        "failures": [
            {
                "error_class": f.error_class,
                "count": f.count,
                "last_at": f.last_at.isoformat(),
                "last_job_id": f.last_job_id,
                "last_message": f.last_message,
            }
            for f in data["failures"]
        ],
        "workers": data["workers"],
    }


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", self.admin_site.admin_view(self.dashboard_view), name=f"{prefix}_changelist"),
            path("data/", self.admin_site.admin_view(self.data_view), name=f"{prefix}_data"),
        ]

    def _check(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def _panels_context(self, request: HttpRequest) -> dict[str, Any]:
        """The figures, and whether this user may pause and resume queues (the buttons shown)."""
        return {
            **snapshot(),
            "can_change_queues": request.user.has_perm("supaqueue.change_queue"),
            "dashboard_url": reverse("admin:supaqueue_dashboard_changelist"),
        }

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        self._check(request)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Queue dashboard"),
            "opts": self.opts,
            "refresh_ms": REFRESH_MS,
            **self._panels_context(request),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "django_supaqueue/admin/dashboard.html", context)

    def data_view(self, request: HttpRequest) -> JsonResponse:
        self._check(request)
        data = self._panels_context(request)
        body = as_json(data)
        body["html"] = render_to_string("django_supaqueue/admin/dashboard_panels.html", data, request)
        body["status_html"] = render_to_string("django_supaqueue/admin/dashboard_status.html", data, request)
        return JsonResponse(body)
