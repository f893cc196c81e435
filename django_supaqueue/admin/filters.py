"""Job list filters whose choices cost nothing to list.

Django's default filters for a field list its distinct values, which for a
task name means reading every job. These take their choices from the task
registry and from fixed time ranges instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..tasks import registered_tasks


class TaskFilter(admin.SimpleListFilter):
    """Tasks registered in this process; a task no longer registered is still found by search."""

    title = _("task")
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name.rsplit(".", 1)[-1] + f" ({name})") for name in sorted(registered_tasks())]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(task_name=value) if value else queryset


class HeldFilter(admin.SimpleListFilter):
    title = _("hold")
    parameter_name = "held"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("Held")), ("no", _("Not held"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(enabled=False)
        if self.value() == "no":
            return queryset.filter(enabled=True)
        return queryset


class CreatedFilter(admin.SimpleListFilter):
    """When a job was enqueued: fixed ranges back from now."""

    title = _("enqueued")
    parameter_name = "created"
    RANGES = {
        "1h": (_("In the last hour"), timedelta(hours=1)),
        "24h": (_("In the last 24 hours"), timedelta(days=1)),
        "7d": (_("In the last 7 days"), timedelta(days=7)),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _span) in self.RANGES.items()] + [
            ("old", _("More than 7 days ago"))
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in self.RANGES:
            return queryset.filter(created_at__gte=timezone.now() - self.RANGES[value][1])
        if value == "old":
            return queryset.filter(created_at__lt=timezone.now() - timedelta(days=7))
        return queryset
