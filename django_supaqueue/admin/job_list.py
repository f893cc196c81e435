"""The job list's page query and its live refresh.

The list refreshes itself as the dashboard does: ``joblist.js`` asks the same
URL (filters, search and page included) for JSON every few seconds, and the
answer carries the results table and the pager rendered again by the same
templates, so the rows have one rendering path. A refresh costs what loading
the page costs: one page of rows, and the planner's estimate of the total.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from ..models import JobEvent
from .changelist import KeysetChangeList
from .display import local_time

#: How often the job list refreshes itself, in milliseconds.
REFRESH_MS = 5000

RESULTS_TEMPLATE = "django_supaqueue/admin/job_results.html"
PAGER_TEMPLATE = "django_supaqueue/admin/job_pager.html"


class JobChangeList(KeysetChangeList):
    """The keyset list, with each shown job's last attempt duration read alongside its row."""

    def page_queryset(self, queryset: QuerySet) -> QuerySet:
        """One index probe per shown row (events by job), in the page's own statement: no N+1.

        The duration is the one the worker measured and wrote on the attempt's
        outcome event, which a job waiting to retry still has (its ``finished_at``
        is cleared until it finishes for good).
        """
        last = (
            JobEvent.objects.filter(job=OuterRef("pk"), duration__isnull=False)
            .order_by("-id")
            .values("duration")[:1]
        )
        return queryset.annotate(last_attempt_duration=Subquery(last))


def wants_refresh(request: HttpRequest) -> bool:
    """Whether this is the list's script asking for fresh rows (JSON) rather than a person (HTML)."""
    return request.method == "GET" and "application/json" in request.headers.get("Accept", "")


def as_of(moment: datetime) -> SafeString:
    """The list's "Jobs as of ..." line: the same words as the page's, so one translation serves both."""
    return mark_safe(escape(gettext("Jobs as of %(at)s.")) % {"at": local_time(moment)})  # noqa: S308


def refreshed(context: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
    """The parts of the list that change, rendered again, for the script to swap in."""
    cl = context["cl"]
    return {
        "generated_at": context["generated_at"].isoformat(),
        "status": as_of(context["generated_at"]),
        "rows": len(cl.result_list),
        "selection_note": str(context.get("selection_note", "")),
        "results": render_to_string(RESULTS_TEMPLATE, context, request),
        "pager": render_to_string(PAGER_TEMPLATE, context, request),
    }
