"""The dashboard's throughput chart as server-rendered SVG: no script library, no CDN, works offline.

Bars are attempts per minute (succeeded below, failed on top); the line is the
failure rate on its own 0-100 % axis. The SVG carries a title and a text
summary for screen readers, each minute has a tooltip, and the dashboard shows
the same figures as a table beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        at = peak.minute.strftime("%H:%M")
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
    rate_points = []
    for i, m in enumerate(minutes):
        x = LEFT + i * slot + (slot - bar_w) / 2
        ok_top, bad_top = y(m.succeeded), y(m.total)
        label = _("%(at)s: %(ok)d succeeded, %(bad)d failed") % {
            "at": m.minute.strftime("%H:%M"),
            "ok": m.succeeded,
            "bad": m.failed,
        }
        bars.append(
            (label, *_n(x, ok_top, bar_w, TOP + plot_h - ok_top), *_n(x, bad_top, bar_w, ok_top - bad_top))
        )
        if m.failure_rate is not None:
            rate_points.append(f"{x + bar_w / 2:.1f},{TOP + plot_h - plot_h * m.failure_rate:.1f}")
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
        first.strftime("%H:%M") if first else "",
        WIDTH - RIGHT,
        HEIGHT - 8,
        last.strftime("%H:%M") if last else "",
    )
    line = (
        format_html('<polyline class="sq-rate" points="{}"/>', " ".join(rate_points)) if rate_points else ""
    )
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
