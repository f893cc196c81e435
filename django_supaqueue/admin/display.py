"""Small pieces of HTML the admin screens share: status badges, times and ages, errors, pretty JSON."""

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


#: The one format every admin screen shows a moment in, server-rendered or refreshed live.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(moment: datetime | None) -> SafeString | str:
    """A moment in the user's time zone, to the second, in a <time> element.

    One format everywhere (lists, detail pages, the dashboard after a live refresh) so an
    operator can compare moments across screens; the ISO value lets scripts re-render it.
    """
    if moment is None:
        return "–"
    local = timezone.localtime(moment)
    return format_html('<time datetime="{}">{}</time>', local.isoformat(), local.strftime(TIME_FORMAT))


def short_name(dotted: str) -> str:
    """The last part of a dotted name: ``send_email`` for ``app.tasks.send_email``."""
    return dotted.rsplit(".", 1)[-1]


def delay_note(job: Job, now: datetime | None = None) -> SafeString | str:
    """For a pending job due later, when it runs: "· in 59 min" ("· retry in 5 s" after a failure).

    Without it a delayed job and one about to run read the same ("Pending").
    """
    now = now or timezone.now()
    if job.status != Job.Status.PENDING or job.run_at is None or job.run_at <= now:
        return ""
    text = age(job.run_at, now)
    if job.attempts > 0:
        text = f"retry {text}"
    local = timezone.localtime(job.run_at).strftime(TIME_FORMAT)
    return format_html('<span class="sq-due" title="{}">· {}</span>', local, text)


#: Characters of a job's last error message the job list shows; the cell's title has it all.
ERROR_SHOWN = 80
#: Most characters of an error kept in a title attribute, so a page of long errors stays small.
ERROR_TITLE_MAX = 1000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def error_summary(text: str, limit: int = ERROR_SHOWN) -> SafeString | str:
    """A job's ``last_error`` ("module.ErrorClass: message") as one short line of a list.

    The class by its last name (the module path rarely fits a column), the
    message cut to ``limit``, and the full text in the title.
    """
    if not text:
        return "–"
    error_class, sep, message = text.partition(": ")
    if not sep or not error_class or " " in error_class:
        error_class, message = "", text  # not "Class: message": show it as it is
    message = " ".join(message.split())
    return format_html(
        '<span class="sq-error" title="{}"><strong>{}</strong>{}{}</span>',
        _cut(text, ERROR_TITLE_MAX),
        short_name(error_class),
        ": " if error_class and message else "",
        _cut(message, limit),
    )


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
