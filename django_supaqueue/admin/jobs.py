"""The jobs screens: the list, and the life-cycle page of one job.

Jobs are never edited through a form: every change is one of the operator
actions (``job_actions``), offered on the list and as buttons on a job's page.
The list refreshes itself in place (``job_list``).

Permissions: ``view_job`` to see jobs, ``change_job`` for the actions that
move a job through its life cycle, ``delete_job`` to delete.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from .. import queue
from ..models import CurrentJob, Job, JobDependency, JobEvent
from ..tasks import registered_tasks
from .display import (
    DEPENDENCIES_SHOWN,
    delay_note,
    error_summary,
    http_status_badge,
    job_links,
    local_time,
    pretty_json,
    short_duration,
    short_name,
    status_badge,
)
from .filters import CreatedFilter, HeldFilter, OwnerFilter, TaskFilter, TenantFilter
from .job_actions import (
    JOB_ACTIONS,
    cancel,
    delete_selected,
    hold,
    in_batches,
    release_hold,
    reschedule,
    retry_now,
    run_now,
)
from .job_list import REFRESH_MS, JobChangeList, as_of, refreshed, wants_refresh

#: Events shown on a job's page (the newest; a job retried thousands of times keeps its page small).
TIMELINE_LIMIT = 200


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    # The last error sits by the attempts it explains, before the columns a narrow window scrolls to.
    list_display = [
        "id",
        "status_badge",
        "queue",
        "task",
        "attempts_of",
        "error",
        "duration",
        "due",
    ]
    list_display_links = ["id"]
    list_filter = ["status", "queue", TaskFilter, HeldFilter, CreatedFilter, OwnerFilter, TenantFilter]
    list_select_related = ["queue"]
    list_per_page = 100
    show_facets = admin.ShowFacets.NEVER  # facet counts would count the table once per filter choice
    sortable_by = ["id"]
    search_fields = ["task_name"]  # shows the search box; get_search_results says what it matches
    search_help_text = _(
        "A job id (123 or #123), an exact key or serial group, or a task name (full, or its last part)."
    )
    actions = [retry_now, run_now, reschedule, cancel, hold, release_hold, delete_selected]
    change_list_template = "django_supaqueue/admin/job_change_list.html"
    change_form_template = "django_supaqueue/admin/job_change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "status_badge",
                    "queue",
                    "task_name",
                    "attempts_of",
                    "priority",
                    "key",
                    "serial_group",
                    "held",
                    "running_on",
                    "owner",
                    "tenant_id",
                ]
            },
        ),
        (_("Times"), {"fields": ["created_time", "run_time", "started_time", "finished_time"]}),
        (_("Dependencies"), {"fields": ["dependencies", "dependents_of", "on_dependency_failure"]}),
        (_("Call and outcome"), {"fields": ["payload_json", "args_json", "result_json", "last_error"]}),
    ]
    # Jobs are never edited through the form: every field it shows is read-only.
    readonly_fields = [field for _title, options in fieldsets for field in options["fields"]]

    # ------------------------------------------------------------------ permissions

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No form edits a job; ``change_job`` is what the life-cycle actions ask for."""
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        if obj is not None and obj.status == Job.Status.IN_PROGRESS:
            return False  # cancel it first: its worker still holds a lease
        return super().has_delete_permission(request, obj)

    # ------------------------------------------------------------------ the list

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[JobChangeList]:
        return JobChangeList

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, or for its live refresh (asked for as JSON) the parts that change, as JSON."""
        now = timezone.now()
        extra = {**(extra_context or {}), "refresh_ms": REFRESH_MS, "generated_at": now, "as_of": as_of(now)}
        response = super().changelist_view(request, extra)
        if wants_refresh(request) and isinstance(response, TemplateResponse) and response.context_data:
            response = JsonResponse(refreshed(response.context_data, request))
        patch_vary_headers(response, ["Accept"])
        return response

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Equality only, so a search is an index probe or one pass, never a pattern scan."""
        term = search_term.strip()
        if not term:
            return queryset, False
        number = term.removeprefix("#")
        if number.isdigit() and len(number) <= 18:
            return queryset.filter(pk=int(number)), False
        tasks = [name for name in registered_tasks() if name == term or name.endswith("." + term)]
        return queryset.filter(Q(key=term) | Q(serial_group=term) | Q(task_name__in=[term, *tasks])), False

    @admin.display(description=_("status"))
    def status_badge(self, job: Job) -> SafeString:
        """The status; for a pending job due later, when ("Pending · in 59 min"), and whether held."""
        badge = status_badge(job.status)
        note = delay_note(job)
        if note:
            badge = format_html("{} {}", badge, note)
        if not job.enabled and job.status == Job.Status.PENDING:
            return format_html('{} <span class="sq-badge sq-held">{}</span>', badge, _("Held"))
        return badge

    @admin.display(description=_("task"))
    def task(self, job: Job) -> SafeString:
        """The task's last name; for an HTTP queue's job, which has no task, the call it makes.

        A priority other than 0 follows it: a column of its own, mostly zeros, would push the
        list past a 1366 px window.
        """
        if not job.task_name and job.queue.is_http:
            url = job.queue.http_url.rstrip("/") + "/" + job.http_path
            method = job.http_method or job.queue.http_method
            name = format_html('<span title="{}">{} /{}</span>', url, method, job.http_path)
        else:
            name = format_html('<span title="{}">{}</span>', job.task_name, short_name(job.task_name))
        if not job.priority:
            return name
        label = _("priority %(n)s") % {"n": job.priority}
        return format_html(
            '{} <span class="sq-priority" title="{}">{}{}</span>',
            name,
            label,
            "↑" if job.priority > 0 else "↓",
            abs(job.priority),
        )

    @admin.display(description=_("attempts"))
    def attempts_of(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description=_("run at"))
    def due(self, job: Job) -> SafeString | str:
        return local_time(job.run_at)

    @admin.display(description=_("duration"))
    def duration(self, job: Job) -> SafeString | str:
        """How long the running attempt has run so far, or how long the last one ran."""
        if job.status == Job.Status.IN_PROGRESS and job.started_at is not None:
            seconds = (timezone.now() - job.started_at).total_seconds()
            return format_html(
                '<span class="sq-running-for">{} ({})</span>', short_duration(seconds), _("running")
            )
        return short_duration(getattr(job, "last_attempt_duration", None))

    @admin.display(description=_("last error"))
    def error(self, job: Job) -> SafeString | str:
        return error_summary(job.last_error)

    # ------------------------------------------------------------------ one job

    @admin.display(description=_("created at"))
    def created_time(self, job: Job) -> SafeString | str:
        return local_time(job.created_at)

    @admin.display(description=_("run at"))
    def run_time(self, job: Job) -> SafeString | str:
        return local_time(job.run_at)

    @admin.display(description=_("started at"))
    def started_time(self, job: Job) -> SafeString | str:
        return local_time(job.started_at)

    @admin.display(description=_("finished at"))
    def finished_time(self, job: Job) -> SafeString | str:
        return local_time(job.finished_at)

    @admin.display(description=_("held"), boolean=True)
    def held(self, job: Job) -> bool:
        return not job.enabled

    @admin.display(description=_("running on"))
    def running_on(self, job: Job) -> SafeString | str:
        lease = CurrentJob.objects.filter(job=job).select_related("worker").first()
        if lease is None:
            return "–"
        return format_html(
            '<a href="{}">{}</a> (attempt {}, lease until {})',
            reverse("admin:supaqueue_worker_change", args=[lease.worker_id]),
            lease.worker.name,
            lease.attempt,
            local_time(lease.lease_expires_at),
        )

    @admin.display(description=_("runs after"))
    def dependencies(self, job: Job) -> SafeString | str:
        links = JobDependency.objects.filter(job=job).order_by("position", "id")
        return job_links([link.depends_on_id for link in links[:DEPENDENCIES_SHOWN]], job.waiting_for)

    @admin.display(description=_("runs before"))
    def dependents_of(self, job: Job) -> SafeString | str:
        links = JobDependency.objects.filter(depends_on=job).order_by("id")
        return job_links([link.job_id for link in links[:DEPENDENCIES_SHOWN]])

    @admin.display(description=_("payload (keyword arguments)"))
    def payload_json(self, job: Job) -> SafeString:
        return pretty_json(job.payload)

    @admin.display(description=_("positional arguments"))
    def args_json(self, job: Job) -> SafeString:
        return pretty_json(job.args)

    @admin.display(description=_("result"))
    def result_json(self, job: Job) -> SafeString | str:
        return "–" if job.result is None and job.status != Job.Status.SUCCESSFUL else pretty_json(job.result)

    def timeline(self, job: Job) -> dict[str, Any]:
        """The job's history, oldest first: enqueued, then every event (the newest TIMELINE_LIMIT).

        ``http`` says whether to show the HTTP status column: for a job of an
        HTTP queue, or one whose events recorded a status (its queue may have
        stopped calling since).
        """
        events = list(JobEvent.objects.filter(job=job).order_by("-id")[: TIMELINE_LIMIT + 1])
        truncated = len(events) > TIMELINE_LIMIT
        events = events[:TIMELINE_LIMIT][::-1]
        for event in events:
            event.at_html = local_time(event.at)
            event.retry_at_html = local_time(event.retry_at) if event.retry_at is not None else ""
            event.duration_text = short_duration(event.duration) if event.duration is not None else ""
            event.http_badge = http_status_badge(event.http_status) if event.http_status is not None else ""
        http = job.queue.is_http or any(event.http_status is not None for event in events)
        return {
            "events": events,
            "truncated": truncated,
            "limit": TIMELINE_LIMIT,
            "http": http,
            "enqueued_at": local_time(job.created_at),
        }

    def job_actions(self, request: HttpRequest, job: Job) -> list[dict[str, Any]]:
        """The actions that apply to this job in its state, as buttons on its page."""
        state = job.status
        waiting = state == Job.Status.PENDING and job.attempts > 0
        applies = {
            "retry_now": state in (Job.Status.FAILED, Job.Status.CANCELLED) or waiting,
            "run_now": state == Job.Status.PENDING,
            "reschedule": state in (Job.Status.WAITING, Job.Status.PENDING),
            "cancel": state in (Job.Status.PENDING, Job.Status.IN_PROGRESS),
            "hold": state == Job.Status.PENDING and job.enabled,
            "release_hold": state == Job.Status.PENDING and not job.enabled,
            "delete_selected": state != Job.Status.IN_PROGRESS,
        }
        available = dict(self.get_action_choices(request, default_choices=[]))
        return [
            {"name": name, "label": capfirst(available[name])}
            for name, ok in applies.items()
            if ok and name in available
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if job is not None:
            extra.update(
                timeline=self.timeline(job),
                job_actions=self.job_actions(request, job),
                act_url=reverse("admin:supaqueue_job_act", args=[job.pk]),
            )
        return super().change_view(request, object_id, form_url, extra)

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        if not queue.delete([obj.pk]):
            self.message_user(request, _("The job started running: cancel it first."), messages.WARNING)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for ids in in_batches(queryset):
            queue.delete(ids)

    def get_urls(self) -> list[URLPattern]:
        act = self.admin_site.admin_view(self.act_view)
        return [path("<path:object_id>/act/", act, name="supaqueue_job_act"), *super().get_urls()]

    def act_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One action on one job, from its page, and back to its page (or the list, once deleted).

        The same action functions as the list's, with the same permission rules.
        """
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        name = request.POST.get("action", "")
        allowed = dict(self.get_action_choices(request, default_choices=[]))
        if name not in JOB_ACTIONS or name not in allowed:
            raise PermissionDenied
        if not object_id.isdigit():
            raise PermissionDenied
        queryset = self.get_queryset(request).filter(pk=int(object_id))
        if not queryset.exists():
            return HttpResponseRedirect(reverse("admin:supaqueue_job_changelist"))
        response = JOB_ACTIONS[name](self, request, queryset)
        if response is not None:
            return response
        if queryset.exists():
            return HttpResponseRedirect(reverse("admin:supaqueue_job_change", args=[object_id]))
        return HttpResponseRedirect(reverse("admin:supaqueue_job_changelist"))
