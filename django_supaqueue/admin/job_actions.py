"""The operator actions on jobs: the list's actions and the buttons on a job's page.

Each is one of the queue's own operations (``queue.retry_now``, ``run_now``,
``reschedule``, ``cancel``, ``hold``, ``release_hold``, ``delete``), which respect
leases; all but ``reschedule`` (a change of plan, not of state) write an event.
An action works on the ticked jobs, or on every job matching the filter
("select all"), in batches of ``BATCH_SIZE`` ids, each its own short transaction.
Moving a job through its life cycle asks for ``change_job`` (the "manage"
permission), deleting for ``delete_job``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import api, queue, stats
from ..models import PRIORITY_MAX, PRIORITY_MIN, Job
from ..queue.storable import INT_MAX

#: Jobs per statement when an action works through a selection.
BATCH_SIZE = 1000


def in_batches(queryset: QuerySet, size: int | None = None) -> Iterator[list[int]]:
    """The ids of every row of ``queryset``, in ascending batches read through the primary key."""
    size = size or BATCH_SIZE
    ids = queryset.order_by("pk").values_list("pk", flat=True)
    last = None
    while True:
        batch = list((ids if last is None else ids.filter(pk__gt=last))[:size])
        if not batch:
            return
        yield batch
        last = batch[-1]


def _reason(request: HttpRequest) -> str:
    return f"by {request.user.get_username()} in the admin"


def _apply(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    operation: Callable[..., list[int]],
    done: str,
    applies_to: str,
) -> None:
    """Run a queue operation over the selection, batch by batch, and say what it did."""
    seen = changed = 0
    for ids in in_batches(queryset):
        seen += len(ids)
        changed += len(operation(ids, reason=_reason(request)))
    _report(modeladmin, request, seen, changed, done, applies_to)


def _report(
    modeladmin: admin.ModelAdmin, request: HttpRequest, seen: int, changed: int, done: str, applies_to: str
) -> None:
    """Say how many of the jobs an action went through it changed, and why it left the others alone."""
    text = ngettext("%(verb)s %(n)d job.", "%(verb)s %(n)d jobs.", changed) % {"verb": done, "n": changed}
    if seen > changed:
        text += " " + ngettext(
            "%(n)d other was left alone: %(rule)s.", "%(n)d others were left alone: %(rule)s.", seen - changed
        ) % {"n": seen - changed, "rule": applies_to}
    modeladmin.message_user(request, text, messages.SUCCESS if changed else messages.WARNING)


def _job_action(
    name: str, description: Any, act: str | Callable[..., list[int]], done: Any, rule: Any
) -> Any:
    """An admin action applying ``act`` to the selected jobs: a function over ids, or the name of
    one in the queue package (looked up at each call, so the queue's functions stay the one source)."""

    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        func = getattr(queue, act) if isinstance(act, str) else act
        _apply(modeladmin, request, queryset, func, done, rule)

    action.__name__ = action.__qualname__ = name
    return admin.action(description=description, permissions=["manage"])(action)


def _cancel(ids: list[int], reason: str) -> list[int]:
    return api.cancel(ids, reason=reason)  # through api, so job_cancelled is sent


retry_now = _job_action(
    "retry_now",
    _("Retry now"),
    "retry_now",
    _("Retried"),
    _("only failed or cancelled jobs, and jobs waiting to retry, can be retried"),
)
run_now = _job_action(
    "run_now",
    _("Run now"),
    "run_now",
    _("Made runnable now"),
    _("only pending jobs due later can be run now"),
)
cancel = _job_action(
    "cancel", _("Cancel"), _cancel, _("Cancelled"), _("only pending and running jobs can be cancelled")
)
hold = _job_action(
    "hold",
    _("Hold (keep from running)"),
    "hold",
    _("Held"),
    _("only pending jobs not already held can be held"),
)
release_hold = _job_action(
    "release_hold",
    _("Release from hold"),
    "release_hold",
    _("Released"),
    _("only held pending jobs can be released"),
)


class RescheduleForm(forms.Form):
    """What Reschedule changes; a blank field leaves that value as each job has it."""

    run_at = forms.DateTimeField(
        label=_("Run at"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"),
    )
    priority = forms.IntegerField(
        label=_("Priority"), required=False, min_value=PRIORITY_MIN, max_value=PRIORITY_MAX
    )
    max_attempts = forms.IntegerField(label=_("Max attempts"), required=False, min_value=1, max_value=INT_MAX)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors and all(data.get(name) is None for name in self.fields):
            raise forms.ValidationError(_("Give a run time, a priority or max attempts to change."))
        return data


@admin.action(description=_("Reschedule"), permissions=["manage"])
def reschedule(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    """Ask for the new run time, priority or max attempts, then apply them in batches.

    The form comes back with its errors until it is valid. The work is
    ``api.reschedule``, the SQL function ``supaqueue_reschedule_jobs``, which
    changes only jobs not started yet.
    """
    form = RescheduleForm(request.POST if request.POST.get("post") == "yes" else None)
    if not form.is_valid():
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": _("Reschedule jobs"),
            "opts": modeladmin.model._meta,
            "form": form,
            "count": stats.count(queryset),
            "select_across": request.POST.get("select_across") == "1",
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action": "reschedule",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = modeladmin.admin_site.name
        return TemplateResponse(request, "django_supaqueue/admin/job_reschedule.html", context)
    seen = changed = 0
    for ids in in_batches(queryset):
        seen += len(ids)
        changed += api.reschedule(ids, **form.cleaned_data)
    rule = _("only jobs not started yet (waiting or pending) can be rescheduled")
    _report(modeladmin, request, seen, changed, _("Rescheduled"), rule)
    return None


@admin.action(description=_("Delete"), permissions=["delete"])
def delete_selected(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    """Ask first (showing how many jobs), then delete in batches; running jobs are kept.

    Named like Django's site-wide action so that it replaces it: that one
    collects every related row of every selected job before asking.
    """
    if request.POST.get("post") != "yes":
        select_across = request.POST.get("select_across") == "1"
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": _("Delete jobs?"),
            "opts": modeladmin.model._meta,
            "count": stats.count(queryset),
            "select_across": select_across,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action": "delete_selected",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = modeladmin.admin_site.name
        return TemplateResponse(request, "django_supaqueue/admin/job_delete_confirmation.html", context)
    seen = deleted = 0
    for ids in in_batches(queryset):
        seen += len(ids)
        doomed = list(Job.objects.filter(pk__in=ids).only("id", "task_name", "queue_id", "status"))
        gone = set(queue.delete(ids))
        deleted += len(gone)
        if gone:
            modeladmin.log_deletions(request, [job for job in doomed if job.pk in gone])
    text = ngettext("Deleted %(n)d job.", "Deleted %(n)d jobs.", deleted) % {"n": deleted}
    if seen > deleted:
        text += " " + ngettext(
            "%(n)d running job was kept: cancel it first.",
            "%(n)d running jobs were kept: cancel them first.",
            seen - deleted,
        ) % {"n": seen - deleted}
    modeladmin.message_user(request, text, messages.SUCCESS if deleted else messages.WARNING)
    return None


#: The actions a job's own page offers, by name.
JOB_ACTIONS = {
    f.__name__: f for f in (retry_now, run_now, reschedule, cancel, hold, release_hold, delete_selected)
}
