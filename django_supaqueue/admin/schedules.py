"""The schedules screen: recurring jobs, when they fire next, how their last runs went.

Schedules are edited with a form whose errors come from ``Schedule.clean``
(a bad cron expression, rule, time zone or target is refused there). Rows
declared in code are synced from code at every ``runworkers`` start, so their
definition is read-only here; they can still be enabled or disabled until then.
The actions (enable, disable, run now) go through ``scheduling`` and need
``change_schedule``. A tick that found the schedule's key held by a job not
started yet enqueued nothing: it shows that job, marked "already scheduled",
not as a failure.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import scheduling
from ..exceptions import InvalidSchedule
from ..models import Job, Schedule
from .display import age, badge, status_badge

#: Ticks listed under "recent outcomes" on a schedule's page.
RECENT_OUTCOMES = 20
#: What code owns on a code-declared row (the sync would overwrite an edit).
_DECLARED_FIELDS = [
    "name",
    "task_name",
    "queue",
    "http_path",
    "payload",
    "key",
    "priority",
    "max_attempts",
    "cron",
    "schedule_info",
    "timezone",
    "missed",
    "catch_up_limit",
]


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": ["django_supaqueue/admin.css"]}

    list_display = ["name", "target", "expression", "enabled", "last_run", "next_run", "last_outcome"]
    list_filter = ["enabled", "origin"]
    search_fields = ["name", "task_name", "queue", "key"]
    actions = ["enable", "disable", "run_now"]
    readonly_fields = ["origin", "last_run_at", "next_run_at", "last_error", "recent_outcomes"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "origin"]}),
        (
            _("What it enqueues"),
            {"fields": ["task_name", "queue", "http_path", "payload", "key", "priority", "max_attempts"]},
        ),
        (_("When"), {"fields": ["cron", "schedule_info", "timezone", "missed", "catch_up_limit"]}),
        (_("Runs"), {"fields": ["last_run_at", "next_run_at", "last_error", "recent_outcomes"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        last_status = Job.objects.filter(pk=OuterRef("last_job_id")).values("status")[:1]
        return super().get_queryset(request).annotate(last_status=Subquery(last_status))

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None) -> list[str]:
        if obj is not None and obj.origin == Schedule.Origin.CODE:
            return [*self.readonly_fields, *_DECLARED_FIELDS]
        return list(self.readonly_fields)

    @admin.display(description=_("target"))
    def target(self, obj: Schedule) -> str:
        if obj.is_http:
            return f"HTTP {obj.queue}/{obj.http_path}".rstrip("/")
        return obj.task_name

    @admin.display(description=_("when"))
    def expression(self, obj: Schedule) -> SafeString:
        """The cron expression the schedule fires on (a schedule_info rule converted), and its bounds."""
        try:
            timing = obj.timing()
        except InvalidSchedule as exc:
            return format_html("{} {}", badge("failed", _("Invalid")), exc)
        bounds = "".join(
            f" {word} {moment.isoformat(timespec='minutes')}"
            for word, moment in (("from", timing.start), ("until", timing.end))
            if moment is not None
        )
        return format_html("<code>{}</code> {}{}", timing.expression, timing.zone.key, bounds)

    @admin.display(description=_("last run"), ordering="last_run_at")
    def last_run(self, obj: Schedule) -> str:
        return age(obj.last_run_at) + (" ago" if obj.last_run_at else "")

    @admin.display(description=_("next run"), ordering="next_run_at")
    def next_run(self, obj: Schedule) -> str:
        if not obj.enabled:
            return "–"
        return age(obj.next_run_at) if obj.next_run_at else str(_("ended"))

    @admin.display(description=_("last outcome"))
    def last_outcome(self, obj: Schedule) -> SafeString | str:
        if obj.last_error and not obj.already_scheduled:
            return badge("failed", _("Not enqueued"))
        status = getattr(obj, "last_status", None)
        if status:
            return format_html(
                '{}<a href="{}">{}</a>',
                _already_scheduled_badge(obj.already_scheduled),
                reverse("admin:supaqueue_job_change", args=[obj.last_job_id]),
                status_badge(status),
            )
        return "–"

    @admin.display(description=_("recent outcomes"))
    def recent_outcomes(self, obj: Schedule) -> SafeString | str:
        if obj.pk is None:
            return "–"
        ticks = scheduling.recent_ticks(obj, RECENT_OUTCOMES)
        if not ticks:
            return _("Not fired yet.")
        rows = (
            (t.tick_at.isoformat(timespec="seconds"), _("by hand") if t.manual else "", self._outcome(t))
            for t in ticks
        )
        return format_html(
            '<table class="sq-ticks"><thead><tr><th>{}</th><th></th><th>{}</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            _("tick"),
            _("outcome"),
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @staticmethod
    def _outcome(tick) -> SafeString:
        if tick.error and not tick.already_scheduled:
            return format_html("{} {}", badge("failed", _("Not enqueued")), tick.error)
        if tick.job is None:
            return format_html("{}", _("job deleted by retention"))
        return format_html(
            '{}<a href="{}">#{}</a> {}',
            _already_scheduled_badge(tick.already_scheduled),
            reverse("admin:supaqueue_job_change", args=[tick.job.pk]),
            tick.job.pk,
            status_badge(tick.job.status),
        )

    @admin.action(description=_("Enable"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = scheduling.set_enabled(queryset, True)
        self._report(request, changed, "Enabled %(n)d schedule.", "Enabled %(n)d schedules.")

    @admin.action(description=_("Disable"), permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = scheduling.set_enabled(queryset, False)
        self._report(request, changed, "Disabled %(n)d schedule.", "Disabled %(n)d schedules.")

    @admin.action(description=_("Run now (one job, cadence unchanged)"), permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for schedule in queryset:
            tick = scheduling.run_now(schedule)
            if tick.already_scheduled:
                self.message_user(request, f"{schedule.name}: {tick.error}.", messages.WARNING)
            elif tick.error:
                self.message_user(request, f"{schedule.name}: {tick.error}", messages.ERROR)
            else:
                self.message_user(request, f"{schedule.name}: enqueued job #{tick.job_id}.", messages.SUCCESS)

    def _report(self, request: HttpRequest, changed: list[str], one: str, many: str) -> None:
        self.message_user(
            request,
            ngettext(one, many, len(changed)) % {"n": len(changed)},
            messages.SUCCESS if changed else messages.WARNING,
        )


def _already_scheduled_badge(already: bool) -> SafeString | str:
    """Such a tick enqueued nothing but is no failure: it is shown with the job that held the key."""
    return format_html("{} ", badge("already-scheduled", _("Already scheduled"))) if already else ""
