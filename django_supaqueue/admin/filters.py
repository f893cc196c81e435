"""Job list filters whose choices cost nothing to list.

Django's default filters for a field list its distinct values, which for a
task name means reading every job. These take their choices from the task
registry and from fixed time ranges instead, or, for values with no fixed set
(owners, tenants), from a box the operator types into: the filter is then one
equality on an indexed column, and nothing is listed at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..tasks import registered_tasks
from .display import short_name


class TaskFilter(admin.SimpleListFilter):
    """Tasks registered in this process; a task no longer registered is still found by search.

    Each task once, by its last name (what the job list's task column shows), with
    its full name in the link's title; tasks whose last names collide are shown
    by their full names, so no two choices read the same.
    """

    title = _("task")
    parameter_name = "task"
    template = "django_supaqueue/admin/task_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = sorted(set(registered_tasks()))
        shorts = Counter(short_name(name) for name in names)
        labelled = [(name, short_name(name) if shorts[short_name(name)] == 1 else name) for name in names]
        return sorted(labelled, key=lambda choice: (choice[1].lower(), choice[0]))

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        """Django's choices ("All", then one per task), each with the full name for its title."""
        full_names = ["", *(name for name, _label in self.lookup_choices)]
        for choice, name in zip(super().choices(changelist), full_names, strict=False):
            yield {**choice, "full_name": name}

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


class InputFilter(admin.SimpleListFilter):
    """A filter whose value is typed rather than picked from a list of the column's values.

    Its sidebar entry is a small form; submitting it keeps the other filters
    and the search, and starts again from the first page.
    """

    template = "django_supaqueue/admin/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def typed(self) -> str:
        """The value as typed, without surrounding spaces ("" when the filter is off)."""
        return (self.value() or "").strip()

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        kept = [
            (name, value)
            for name, values in changelist.filter_params.items()
            if name != self.parameter_name
            for value in values
        ]
        yield {
            "parameter_name": self.parameter_name,
            "value": self.typed(),
            "placeholder": self.placeholder,
            "kept": kept,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


class OwnerFilter(InputFilter):
    """Jobs enqueued for one user, found by username: one lookup of the user, then the owner index."""

    title = _("owner")
    parameter_name = "owner"
    placeholder = _("username")

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        username = self.typed()
        if not username:
            return queryset
        users = get_user_model()
        owner = (
            users._default_manager.filter(**{users.USERNAME_FIELD: username})
            .values_list("pk", flat=True)
            .first()
        )
        return queryset.none() if owner is None else queryset.filter(owner_id=owner)


class TenantFilter(InputFilter):
    """Jobs of one tenant, by its exact id: an equality the tenant index answers."""

    title = _("tenant")
    parameter_name = "tenant"
    placeholder = _("tenant id")

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        tenant = self.typed()
        return queryset.filter(tenant_id=tenant) if tenant else queryset
