"""A change list for tables of millions of rows: pages by id, never counts them.

Django's change list counts the filtered rows (``SELECT count(*)``) to number
its pages, and jumps to page N with OFFSET: both read every row before the
page. This one asks for one row more than a page after (or before) the last id
shown, so every page costs the same whatever its depth, and shows the
planner's estimate of the total instead of a count. It orders by id only,
the one order the primary key index gives for any filter.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import stats

#: Query string parameters of the cursor: the page after / before this id.
AFTER = "after"
BEFORE = "before"


def _cursor(request: HttpRequest) -> tuple[str, int] | None:
    for name in (AFTER, BEFORE):
        value = request.GET.get(name, "")
        if value.isdigit() and len(value) <= 19:
            return name, int(value)
    return None


class KeysetChangeList(ChangeList):
    """Next/previous pages by id, an exact count only when everything fits on one page."""

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        self.cursor = _cursor(request)
        super().__init__(request, *args, **kwargs)
        # Filter and sort links start again from the first page.
        for name in (AFTER, BEFORE):
            self.params.pop(name, None)
            self.filter_params.pop(name, None)

    def get_filters_params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        lookup = super().get_filters_params(params)
        for name in (AFTER, BEFORE):
            lookup.pop(name, None)
        return lookup

    def get_ordering(self, request: HttpRequest, queryset: Any) -> list[Any]:
        """Only an order by id pages by id: any other asked-for order falls back to newest first."""
        ordering = super().get_ordering(request, queryset)
        by_id = [o for o in ordering if isinstance(o, str) and o.lstrip("-") in ("id", "pk")]
        return by_id[:1] or ["-pk"]

    def descending(self) -> bool:
        """Whether the list runs from the highest id down (the admin sorts by id only)."""
        ordering = self.queryset.query.order_by
        first = str(ordering[0]) if ordering else "-pk"
        return first.startswith("-")

    def page_queryset(self, queryset: QuerySet) -> QuerySet:
        """The query of the shown page only: where a subclass adds per-row annotations.

        Kept off ``self.queryset``, which the estimate and "select all" actions also read.
        """
        return queryset

    def get_results(self, request: HttpRequest) -> None:
        descending = self.descending()
        queryset = self.page_queryset(self.queryset)
        backwards = False
        if self.cursor is not None:
            name, value = self.cursor
            later = name == AFTER
            # "after" continues in the list's own order; "before" walks back from the cursor.
            queryset = queryset.filter(pk__lt=value) if later == descending else queryset.filter(pk__gt=value)
            if not later:
                queryset = queryset.reverse()
                backwards = True
        rows = list(queryset[: self.list_per_page + 1])
        more = len(rows) > self.list_per_page
        rows = rows[: self.list_per_page]
        if backwards:
            rows.reverse()
        self.has_previous = more if backwards else self.cursor is not None
        self.has_next = True if backwards else more
        if self.cursor is None and not more:
            self.count = stats.Count(len(rows), True)
        else:
            self.count = stats.Count(max(stats.estimate(self.queryset), len(rows)), False)
        self.previous_url = (
            self.get_query_string({BEFORE: rows[0].pk}, [AFTER]) if rows and self.has_previous else ""
        )
        self.next_url = (
            self.get_query_string({AFTER: rows[-1].pk}, [BEFORE]) if rows and self.has_next else ""
        )
        self.result_count = self.count.value
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.result_list = rows
        self.can_show_all = False
        self.multi_page = self.has_previous or self.has_next
        self.paginator = None
