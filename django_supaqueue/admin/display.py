"""Small pieces of HTML the admin screens share: status badges, ages, pretty JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..models import Job

STATUS_LABELS = dict(Job.Status.choices)


def badge(kind: str, label: str) -> SafeString:
    """A coloured label whose text says what the colour says (colour is never the only cue)."""
    return format_html('<span class="sq-badge sq-{}">{}</span>', kind, label)


def status_badge(status: str) -> SafeString:
    return badge(status.replace("_", "-"), STATUS_LABELS.get(status, status))


def http_status_badge(status: int) -> SafeString:
    """An HTTP status code, coloured by its class (2xx success, 4xx/5xx error), named in its title."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    family = {2: "ok", 3: "redirect", 4: "error", 5: "error"}.get(status // 100, "other")
    return format_html('<span class="sq-badge sq-http-{}" title="{}">HTTP {}</span>', family, phrase, status)


def short_duration(seconds: float | None) -> str:
    """A duration as a person reads it: 850 ms, 12.3 s, 4 min 5 s, 3 h 20 min, 2 d 4 h."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was ("3 min 5 s"), or how far ahead ("in 2 h 0 min")."""
    if moment is None:
        return "–"
    delta: timedelta = (now or timezone.now()) - moment
    seconds = delta.total_seconds()
    if seconds < 0:
        return f"in {short_duration(-seconds)}"
    return short_duration(seconds)


def pretty_json(value: Any) -> SafeString:
    """JSON indented in a <pre>, escaped, in a focusable region so it scrolls with the keyboard."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="sq-json" tabindex="0">{}</pre>', text)


#: Most dependencies (or dependents) one job page lists.
DEPENDENCIES_SHOWN = 50


def job_links(ids: list[int], waiting_for: int = 0) -> SafeString | str:
    """Links to jobs with their status badges, for a job's dependencies and dependents."""
    if not ids:
        return "–"
    from django.urls import reverse
    from django.utils.html import format_html_join

    statuses = dict(Job.objects.filter(pk__in=ids).values_list("pk", "status"))
    links = format_html_join(
        ", ",
        '<a href="{}">#{}</a> {}',
        (
            (reverse("admin:supaqueue_job_change", args=[i]), i, status_badge(statuses.get(i, "")))
            for i in ids
        ),
    )
    if waiting_for:
        return format_html("{} ({} still to succeed)", links, waiting_for)
    return links
