"""The dashboard: every queue at a glance, refreshed in place.

Linked from the admin index through the ``Dashboard`` proxy model, and seen
with ``supaqueue.view_dashboard``. The page renders its panels on the server;
its script fetches ``data/`` every few seconds (JSON: the figures, plus the
same panels rendered again) and swaps them in, so the page never reloads and
the figures have one rendering path. Every figure is bounded at any table size:
see ``stats``.
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
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import conf, stats
from ..models import Dashboard, Job, Queue, Worker
from .chart import summary, throughput_svg
from .queues import annotate_queues, jobs_url

#: Most queues shown (by name); a site with more sees a note and the queues screen.
MAX_QUEUES = 50
#: The window of the throughput chart and of the failures table.
MINUTES = 60
#: How often the page refreshes itself, in milliseconds.
REFRESH_MS = 5000


def snapshot() -> dict[str, Any]:
    """Everything the dashboard shows, read now: about a dozen short statements."""
    now = timezone.now()
    queues = list(Queue.objects.order_by("name")[: MAX_QUEUES + 1])
    more_queues = len(queues) > MAX_QUEUES
    queues = queues[:MAX_QUEUES]
    annotate_queues(queues)
    statuses = [s.value for s in Job.Status]
    for q in queues:
        q.cells = [(s, q.status_counts.get(s), jobs_url(queue=q.pk, status=s)) for s in statuses]
        q.wait_seconds = (now - q.oldest_runnable).total_seconds() if q.oldest_runnable else None
    minutes = stats.throughput(MINUTES)
    stale_before = now - timedelta(seconds=float(conf.get("LEASE_DURATION")))
    workers = Worker.objects.aggregate(
        alive=Count("id", filter=Q(last_heartbeat_at__gte=stale_before)),
        stale=Count("id", filter=Q(last_heartbeat_at__lt=stale_before)),
    )
    return {
        "generated_at": now,
        "queues": queues,
        "more_queues": more_queues,
        "statuses": [(s, label) for s, label in Job.Status.choices],
        "minutes": minutes,
        "chart": throughput_svg(minutes),
        "chart_summary": summary(minutes),
        "failures": stats.recent_failures(MINUTES),
        "window": MINUTES,
        "workers": workers,
    }


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated_at": data["generated_at"].isoformat(),
        "queues": [
            {
                "name": q.name,
                "paused": q.paused,
                "counts": {s: c.as_json() for s, c in q.status_counts.items()},
                "oldest_runnable_age": q.wait_seconds,
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

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        self._check(request)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Queue dashboard"),
            "opts": self.opts,
            "refresh_ms": REFRESH_MS,
            **snapshot(),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "django_supaqueue/admin/dashboard.html", context)

    def data_view(self, request: HttpRequest) -> JsonResponse:
        self._check(request)
        data = snapshot()
        body = as_json(data)
        body["html"] = render_to_string("django_supaqueue/admin/dashboard_panels.html", data, request)
        return JsonResponse(body)
