"""The dashboard's throughput chart as server-rendered SVG: no script library, no CDN, works offline.

Bars are attempts per minute (succeeded below, failed on top); the line is the
failure rate on its own 0-100 % axis. A minute without attempts has no rate, so
the line stops there and starts again after it (a rate standing alone is a dot):
joining across the gap would draw rates nobody measured. The SVG carries a title and a text
summary for screen readers, each minute has a tooltip, and the dashboard shows
the same figures as a table beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from ..stats import Minute

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 52, 14, 30


def _n(*values: float) -> tuple[str, ...]:
    """Coordinates as short strings (format_html escapes its arguments, so they arrive as text)."""
    return tuple(f"{v:.1f}" for v in values)


def nice_ceiling(value: int, minimum: int = 1) -> int:
    """The smallest of 1, 2, 5 × 10^n at or above ``value`` and ``minimum``, so ticks read well."""
    value = max(value, minimum)
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= value:
                return step * m
        step *= 10


def _hm(moment: datetime) -> str:
    """A minute as the user reads it: their time zone, like the table and ``display.local_time``."""
    return timezone.localtime(moment).strftime("%H:%M")


def rate_segments(minutes: Sequence[Minute], xs: Sequence[float], y: Callable[[float], float]) -> SafeString:
    """The failure-rate line, broken at minutes without attempts: a polyline per run, a dot alone."""
    runs: list[list[str]] = [[]]
    for x, m in zip(xs, minutes, strict=True):
        if m.failure_rate is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(f"{x:.1f},{y(m.failure_rate):.1f}")
    parts = []
    for run in filter(None, runs):
        if len(run) == 1:
            cx, cy = run[0].split(",")
            parts.append(format_html('<circle class="sq-rate-dot" cx="{}" cy="{}" r="2.5"/>', cx, cy))
        else:
            parts.append(format_html('<polyline class="sq-rate" points="{}"/>', " ".join(run)))
    return SafeString("".join(parts))


def summary(minutes: Sequence[Minute]) -> str:
    ok = sum(m.succeeded for m in minutes)
    bad = sum(m.failed for m in minutes)
    total = ok + bad
    text = _("Last %(n)d minutes: %(ok)d attempts succeeded, %(bad)d failed") % {
        "n": len(minutes),
        "ok": ok,
        "bad": bad,
    }
    if total:
        text += _(" (failure rate %(rate).1f %%)") % {"rate": 100 * bad / total}
        peak = max(minutes, key=lambda m: m.total)
        at = _hm(peak.minute)
        text += _("; busiest minute %(at)s with %(n)d.") % {"at": at, "n": peak.total}
    else:
        text += "."
    return text


def throughput_svg(minutes: Sequence[Minute], chart_id: str = "sq-chart") -> SafeString:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((m.total for m in minutes), default=0), minimum=2)
    slot = plot_w / max(len(minutes), 1)
    bar_w = max(slot - 2, 1)

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    bars = []
    centres = []
    for i, m in enumerate(minutes):
        x = LEFT + i * slot + (slot - bar_w) / 2
        ok_top, bad_top = y(m.succeeded), y(m.total)
        label = _("%(at)s: %(ok)d succeeded, %(bad)d failed") % {
            "at": _hm(m.minute),
            "ok": m.succeeded,
            "bad": m.failed,
        }
        bars.append(
            (label, *_n(x, ok_top, bar_w, TOP + plot_h - ok_top), *_n(x, bad_top, bar_w, ok_top - bad_top))
        )
        centres.append(x + bar_w / 2)
    bar_svg = format_html_join(
        "",
        '<g><title>{}</title><rect class="sq-ok" x="{}" y="{}" width="{}" height="{}"/>'
        '<rect class="sq-bad" x="{}" y="{}" width="{}" height="{}"/></g>',
        bars,
    )
    ticks = format_html_join(
        "",
        '<line class="sq-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<text class="sq-tick" x="{}" y="{}" text-anchor="end">{}</text>'
        '<text class="sq-tick" x="{}" y="{}">{} %</text>',
        (
            (
                LEFT,
                WIDTH - RIGHT,
                *_n(y(v), y(v)),
                LEFT - 6,
                *_n(y(v) + 4),
                v,
                WIDTH - RIGHT + 6,
                *_n(y(v) + 4),
                pct,
            )
            for v, pct in ((0, 0), (top // 2, 50), (top, 100))
        ),
    )
    first, last = (minutes[0].minute, minutes[-1].minute) if minutes else (None, None)
    x_labels = format_html(
        '<text class="sq-tick" x="{}" y="{}">{}</text>'
        '<text class="sq-tick" x="{}" y="{}" text-anchor="end">{}</text>',
        LEFT,
        HEIGHT - 8,
        _hm(first) if first else "",
        WIDTH - RIGHT,
        HEIGHT - 8,
        _hm(last) if last else "",
    )
    line = rate_segments(minutes, centres, lambda rate: TOP + plot_h - plot_h * rate)
    return format_html(
        '<svg class="sq-chart" viewBox="0 0 {} {}" role="img" '
        'aria-labelledby="{}-title" aria-describedby="{}-desc" preserveAspectRatio="xMidYMid meet">'
        '<title id="{}-title">{}</title><desc id="{}-desc">{}</desc>'
        "{}{}{}{}"
        '<text class="sq-axis" x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>'
        '<text class="sq-axis" x="{}" y="{}" text-anchor="middle" transform="rotate(90 {} {})">{}</text>'
        "</svg>",
        WIDTH,
        HEIGHT,
        chart_id,
        chart_id,
        chart_id,
        _("Attempts per minute and failure rate"),
        chart_id,
        summary(minutes),
        ticks,
        bar_svg,
        line,
        x_labels,
        12,
        TOP + plot_h / 2,
        12,
        TOP + plot_h / 2,
        _("attempts per minute"),
        WIDTH - 10,
        TOP + plot_h / 2,
        WIDTH - 10,
        TOP + plot_h / 2,
        _("failure rate"),
    )
