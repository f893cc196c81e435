"""The schedules screen: recurring jobs, when they fire next, how their last runs went.

Schedules are edited with a form whose errors come from ``Schedule.clean``
(a bad cron expression, rule, time zone or target is refused there). Rows
declared in code are synced from code at every ``runworkers`` start, so their
definition is read-only here; they can still be enabled or disabled until then.
The actions (enable, disable, run now) go through ``scheduling`` and need
``change_schedule``; "run now" is also a button on a schedule's page, through
the same action. A tick that found the schedule's key held by a job not
started yet enqueued nothing: it shows that job, marked "already scheduled",
not as a failure.

The list fits a 1366 px window: name and target share a column, the last run
and its outcome another, and cron expressions wrap with their meaning in words
(``cron-descriptor``). Moments are shown with ``display.local_time``; a next
run left in the past by downtime is shown as overdue with the next tick on the
cadence, never as a moment gone by.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from cron_descriptor import ExpressionDescriptor, Options
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import scheduling
from ..cron import Timing
from ..exceptions import InvalidSchedule
from ..models import Job, Schedule
from .display import age, badge, local_time, status_badge

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
    "tenant_id",
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

    change_form_template = "django_supaqueue/admin/schedule_change_form.html"
    list_display = ["schedule", "expression", "enabled", "last_run", "next_run"]
    list_display_links = ["schedule"]
    list_filter = ["enabled", "origin"]
    search_fields = ["name", "task_name", "queue", "key"]
    actions = ["enable", "disable", "run_now"]
    readonly_fields = [
        "origin",
        "cron_words",
        "last_run_time",
        "next_run_time",
        "last_error",
        "recent_outcomes",
    ]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "origin"]}),
        (
            _("What it enqueues"),
            {
                "fields": [
                    "task_name",
                    "queue",
                    "http_path",
                    "payload",
                    "key",
                    "tenant_id",
                    "priority",
                    "max_attempts",
                ]
            },
        ),
        (
            _("When"),
            {"fields": ["cron", "schedule_info", "timezone", "cron_words", "missed", "catch_up_limit"]},
        ),
        (_("Runs"), {"fields": ["last_run_time", "next_run_time", "last_error", "recent_outcomes"]}),
    ]

    def get_urls(self) -> list[URLPattern]:
        run_now = self.admin_site.admin_view(self.run_now_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_run_now"
        return [path("<path:object_id>/run-now/", run_now, name=name), *super().get_urls()]

    def run_now_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's "Run now" button: the list action on this one schedule, POST only."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        schedule = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, schedule):
            raise PermissionDenied
        self.run_now(request, self.get_queryset(request).filter(pk=schedule.pk))
        return HttpResponseRedirect(reverse("admin:supaqueue_schedule_change", args=[schedule.pk]))

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any):
        obj = kwargs.get("obj")
        if obj is not None and obj.pk is not None and self.has_change_permission(request, obj):
            context["run_now_url"] = reverse("admin:supaqueue_schedule_run_now", args=[obj.pk])
        return super().render_change_form(request, context, *args, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        last_status = Job.objects.filter(pk=OuterRef("last_job_id")).values("status")[:1]
        return super().get_queryset(request).annotate(last_status=Subquery(last_status))

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None) -> list[str]:
        if obj is not None and obj.origin == Schedule.Origin.CODE:
            return [*self.readonly_fields, *_DECLARED_FIELDS]
        return list(self.readonly_fields)

    @admin.display(description=_("schedule"), ordering="name")
    def schedule(self, obj: Schedule) -> SafeString:
        """The name, and what it enqueues beneath it: one column instead of two, to fit the width."""
        return format_html('{}<div class="sq-quiet">{}</div>', obj.name, self.target(obj))

    @staticmethod
    def target(obj: Schedule) -> str:
        if obj.is_http:
            return f"HTTP {obj.queue}/{obj.http_path}".rstrip("/")
        return obj.task_name

    @admin.display(description=_("when"))
    def expression(self, obj: Schedule) -> SafeString:
        """The cron expression (a schedule_info rule converted), in words, with its zone and bounds."""
        try:
            timing = obj.timing()
        except InvalidSchedule as exc:
            return format_html("{} {}", badge("failed", _("Invalid")), exc)
        bounds = "".join(
            f" {word} {moment.isoformat(timespec='minutes')}"
            for word, moment in (("from", timing.start), ("until", timing.end))
            if moment is not None
        )
        return format_html(
            '<code>{}</code> {}{}<div class="sq-quiet">{}</div>',
            timing.expression,
            timing.zone.key,
            bounds,
            in_words(timing),
        )

    @admin.display(description=_("in words"))
    def cron_words(self, obj: Schedule) -> str:
        """The saved timing in words on its page (an unsaved or invalid one has none yet)."""
        if obj.pk is None:
            return "–"
        try:
            timing = obj.timing()
        except InvalidSchedule:
            return "–"
        return f"{in_words(timing) or timing.expression} ({timing.zone.key})"

    @admin.display(description=_("last run"), ordering="last_run_at")
    def last_run(self, obj: Schedule) -> SafeString | str:
        """How long ago, and how that run went: the outcome shares the column to fit the width."""
        if obj.last_run_at is None and not obj.last_job_id and not obj.last_error:
            return "–"
        when = _("%(age)s ago") % {"age": age(obj.last_run_at)} if obj.last_run_at else ""
        return format_html("{} {}", when, self.last_outcome(obj))

    @admin.display(description=_("next run"), ordering="next_run_at")
    def next_run(self, obj: Schedule) -> SafeString | str:
        return _next_run(obj, timezone.now(), relative=True)

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

    @admin.display(description=_("last run"))
    def last_run_time(self, obj: Schedule) -> SafeString | str:
        return local_time(obj.last_run_at)

    @admin.display(description=_("next run"))
    def next_run_time(self, obj: Schedule) -> SafeString | str:
        return _next_run(obj, timezone.now(), relative=False)

    @admin.display(description=_("recent outcomes"))
    def recent_outcomes(self, obj: Schedule) -> SafeString | str:
        if obj.pk is None:
            return "–"
        ticks = scheduling.recent_ticks(obj, RECENT_OUTCOMES)
        if not ticks:
            return _("Not fired yet.")
        rows = ((local_time(t.tick_at), _("by hand") if t.manual else "", self._outcome(t)) for t in ticks)
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
        """One job per schedule, now; the list action and the change page's button both land here."""
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


#: cron-descriptor's wording: English like the rest of the screens, 24-hour like ``local_time``.
_WORDS = Options(locale_code="en_US", use_24hour_time_format=True)


@lru_cache(maxsize=512)
def _describe(expression: str) -> str:
    try:
        return ExpressionDescriptor(expression, _WORDS).get_description()
    except Exception:  # noqa: BLE001 - a wording it cannot make is no reason to break the page
        return ""


def in_words(timing: Timing) -> str:
    """What the expression means, e.g. "At 02:00, Monday through Friday" (or "" when it has no words).

    cron-descriptor reads the expression as cron does (day-of-week 0 = Sunday, six fields
    with seconds first), the same reading as cronsim's; the year filter of a rule is noted
    beside the expression by ``Timing.expression`` and left out here.
    """
    return _describe(timing.expression.split(" (", 1)[0])


def _next_run(obj: Schedule, now: datetime, *, relative: bool) -> SafeString | str:
    """When the schedule fires next, never a moment gone by.

    After downtime ``next_run_at`` is in the past until a worker fires the missed tick:
    that is shown as "overdue" with the next tick on the cadence after now.
    """
    if not obj.enabled:
        return "–"
    moment, overdue = obj.next_run_at, False
    if moment is not None and moment <= now:
        overdue = True
        try:
            moment = obj.timing().next_after(now)
        except InvalidSchedule:
            moment = None
    if moment is None:
        shown: SafeString | str = str(_("ended"))
    elif relative:
        shown = format_html('{}<div class="sq-quiet">{}</div>', age(moment, now), local_time(moment))
    else:
        shown = format_html("{} ({})", local_time(moment), age(moment, now))
    if not overdue:
        return shown
    note = format_html(
        '<span class="sq-badge sq-overdue" title="{}">{}</span>',
        _("A tick was missed while no worker ran: the next worker fires it (the Missed setting says how)."),
        _("Overdue"),
    )
    return format_html("{} {}", note, shown)
