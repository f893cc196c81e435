"""The queues screen: jobs per status, the longest wait, pause/resume and the queue's settings.

Queue rows are small and few, so they are edited with a plain form; what the
form cannot do by itself is wake the workers, which ``save_model`` and the
resume action do through the ``queue`` package so that an unpaused queue or a raised
concurrency cap takes effect at once rather than at the next poll. The dashboard's
pause and resume buttons post to ``<id>/pause/`` and ``<id>/resume/`` here, which
run the same actions on that one queue, so both doors check and say the same.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import queue, stats
from ..models import Job, Queue
from .display import age, badge, status_badge


def jobs_url(**filters: Any) -> str:
    """The job list filtered by ``queue`` (an id) and/or ``status``."""
    params = {}
    if "queue" in filters:
        params["queue__id__exact"] = filters["queue"]
    if "status" in filters:
        params["status__exact"] = filters["status"]
    return reverse("admin:supaqueue_job_changelist") + ("?" + urlencode(params) if params else "")


def annotate_queues(queues: list[Queue]) -> None:
    """Attach ``status_counts``, ``oldest_runnable`` and ``rate_room`` to each queue.

    Two statements for all of them, and a third when one is rate-limited: the
    room left in each window, counted over the calls of that window only.
    """
    ids = [q.pk for q in queues]
    counts = stats.status_counts(ids)
    oldest = stats.oldest_runnable(ids)
    rooms = stats.rate_limit_room() if any(q.rate_limit for q in queues) else {}
    for q in queues:
        q.status_counts = counts.get(q.pk, {})
        q.oldest_runnable = oldest.get(q.pk)
        q.rate_room = rooms.get(q.name)


class QueueChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        annotate_queues(list(self.result_list))


def _count_column(status: str, label: str) -> Any:
    @admin.display(description=label)
    def column(self: QueueAdmin, obj: Queue) -> SafeString:
        count = getattr(obj, "status_counts", {}).get(status)
        if count is None:
            return SafeString("–")
        title = _("exact") if count.exact else _("estimated")
        return format_html(
            '<a href="{}" title="{}">{}</a>', jobs_url(queue=obj.pk, status=status), title, str(count)
        )

    return column


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": ["django_supaqueue/admin.css"]}

    list_display = [
        "name",
        "state",
        "pending",
        "running",
        "successful",
        "failed",
        "cancelled",
        "waiting",
        "paused",
        "concurrency_limit",
        "rate",
        "serial",
    ]
    list_editable = ["paused", "concurrency_limit"]
    search_fields = ["name"]
    actions = ["pause", "resume"]
    readonly_fields = ["jobs", "waiting", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "paused", "concurrency_limit", "execution_mode"]}),
        (_("One at a time"), {"fields": ["serial", "head_of_line"]}),
        (_("Rate limit"), {"fields": ["rate_limit", "rate_period"]}),
        (_("Limits per tenant"), {"fields": ["limit_scope"]}),
        (
            _("HTTP queue"),
            {
                "fields": [
                    "http_url",
                    "http_method",
                    "http_headers",
                    "http_secret",
                    "http_secret_header",
                    "http_retry_client_errors",
                ],
                "description": _("Fill in a base URL to make this queue call an endpoint instead of tasks."),
            },
        ),
        (
            _("Defaults for its jobs"),
            {"fields": ["max_attempts", "priority", "retry_backoff", "retry_backoff_max", "timeout"]},
        ),
        (_("Jobs"), {"fields": ["jobs", "waiting", "created_at", "updated_at"]}),
    ]

    pending = _count_column(Job.Status.PENDING, _("pending"))
    running = _count_column(Job.Status.IN_PROGRESS, _("running"))
    successful = _count_column(Job.Status.SUCCESSFUL, _("successful"))
    failed = _count_column(Job.Status.FAILED, _("failed"))
    cancelled = _count_column(Job.Status.CANCELLED, _("cancelled"))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QueueChangeList

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/pause/",
                self.admin_site.admin_view(self.toggle_view),
                {"action": "pause"},
                name=f"{prefix}_pause",
            ),
            path(
                "<path:object_id>/resume/",
                self.admin_site.admin_view(self.toggle_view),
                {"action": "resume"},
                name=f"{prefix}_resume",
            ),
            *super().get_urls(),
        ]

    def toggle_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """Pause or resume one queue (the dashboard's buttons): the list action on it, POST only.

        Goes back to ``next`` when it is a page of this site (the dashboard), else to the queue list.
        """
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        getattr(self, action)(request, self.get_queryset(request).filter(pk=obj.pk))
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("admin:supaqueue_queue_changelist")
        return HttpResponseRedirect(back)

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> list[str]:
        # Workers started with -q name find their queue by name: renaming would orphan them.
        return [*self.readonly_fields, "name"] if obj is not None else list(self.readonly_fields)

    @admin.display(description=_("state"))
    def state(self, obj: Queue) -> SafeString:
        if obj.paused:
            return format_html('<span class="sq-badge sq-paused">{}</span>', _("Paused"))
        return format_html('<span class="sq-badge sq-active">{}</span>', _("Active"))

    @admin.display(description=_("rate limit"))
    def rate(self, obj: Queue) -> SafeString | str:
        """``2 per 1 s`` and the calls it may still start in its current window."""
        if not obj.rate_limit:
            return "–"
        if not hasattr(obj, "rate_room"):
            annotate_queues([obj])
        limit = _("%(n)d per %(period)g s") % {"n": obj.rate_limit, "period": obj.rate_period}
        if obj.rate_room is None:
            return limit
        if obj.rate_room:
            room = badge("active", _("%(n)d free now") % {"n": obj.rate_room})
        else:
            room = badge("paused", _("full: jobs wait"))
        return format_html("{} {}", limit, room)

    @admin.display(description=_("longest wait"))
    def waiting(self, obj: Queue) -> str:
        if not hasattr(obj, "oldest_runnable"):
            annotate_queues([obj])
        return age(obj.oldest_runnable) if obj.oldest_runnable else "–"

    @admin.display(description=_("jobs per status"))
    def jobs(self, obj: Queue) -> SafeString:
        if obj.pk is None:
            return SafeString("–")
        if not hasattr(obj, "status_counts"):
            annotate_queues([obj])
        rows = (
            (jobs_url(queue=obj.pk, status=status), status_badge(status), str(count))
            for status, count in obj.status_counts.items()
        )
        return format_html(
            '<ul class="sq-counts">{}</ul><p class="help">{}</p>',
            format_html_join("", '<li><a href="{}">{} {}</a></li>', rows),
            _("≈ marks an estimate: counts above 10,000 come from the planner's statistics."),
        )

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not obj.paused:
            queue.wake_queues([obj.name])  # unpaused, or more room: claim now, not at the next poll

    @admin.action(description=_("Pause (keep jobs, run none)"), permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = queue.pause_queues(queryset.values_list("name", flat=True))
        self.message_user(
            request,
            ngettext("Paused %(n)d queue.", "Paused %(n)d queues.", len(changed)) % {"n": len(changed)},
            messages.SUCCESS if changed else messages.WARNING,
        )

    @admin.action(description=_("Resume"), permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = queue.resume_queues(queryset.values_list("name", flat=True))
        self.message_user(
            request,
            ngettext("Resumed %(n)d queue.", "Resumed %(n)d queues.", len(changed)) % {"n": len(changed)},
            messages.SUCCESS if changed else messages.WARNING,
        )
