"""``manage.py supaqueue_schedules``: every schedule with its timing and its next and last runs."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from ...exceptions import InvalidSchedule
from ...models import Schedule


class Command(BaseCommand):
    help = "List the schedules: target, timing, enabled, next run and last run (--json for scripts)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = [describe(s) for s in Schedule.objects.order_by("next_run_at", "name")]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Schedules")
        for column in ("name", "target", "cron", "time zone", "enabled", "next run", "last run", "origin"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["name"],
                row["target"],
                row["cron"],
                row["timezone"],
                "yes" if row["enabled"] else "no",
                row["next_run_at"] or "–",
                row["last_run_at"] or "–",
                row["origin"],
            )
        Console(file=self.stdout, width=160).print(table)


def describe(schedule: Schedule) -> dict[str, Any]:
    """A schedule as plain values: a schedule_info rule is shown as the cron expression it fires on."""
    try:
        cron = schedule.timing().expression
    except InvalidSchedule as exc:
        cron = f"invalid: {exc}"
    return {
        "name": schedule.name,
        "target": f"http:{schedule.queue}/{schedule.http_path}" if schedule.is_http else schedule.task_name,
        "cron": cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "next_run_at": schedule.next_run_at.isoformat() if schedule.next_run_at else None,
        "last_run_at": schedule.last_run_at.isoformat() if schedule.last_run_at else None,
        "origin": schedule.origin,
    }
