"""``manage.py supaqueue_status``: a live view of queues and workers; --once/--json for scripts."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand

from ... import stats


class Command(BaseCommand):
    help = "Show per-queue counts, throughput, waiting time and workers, refreshing until Ctrl-C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Print once and exit.")
        parser.add_argument("--json", action="store_true", help="Print JSON (implies --once).")
        parser.add_argument("--interval", type=float, default=2.0, help="Seconds between refreshes.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(stats.snapshot(), indent=2))
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stdout)
        if not console.is_terminal:
            console = Console(file=self.stdout, width=160)  # pipes and logs: don't squeeze the table
        if options["once"]:
            console.print(render(stats.snapshot()))
            return
        try:
            with Live(render(stats.snapshot()), console=console, refresh_per_second=4) as live:
                while True:
                    time.sleep(options["interval"])
                    live.update(render(stats.snapshot()))
        except KeyboardInterrupt:
            pass


def render(snap: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    queues = Table(title=f"Queues at {snap['at']}", expand=False)
    for column in (
        "queue",
        "pending",
        "in progress",
        "successful",
        "failed",
        "cancelled",
        "oldest runnable",
        "cap",
        "state",
    ):
        queues.add_column(column, justify="left" if column in ("queue", "state") else "right")
    for name, q in sorted(snap["queues"].items()):
        c = q["counts"]
        age = q.get("oldest_runnable_seconds")
        queues.add_row(
            name,
            *(f"{c.get(s, 0):,}" for s in ("pending", "in_progress", "successful", "failed", "cancelled")),
            "-" if age is None else f"{age:,.1f}s",
            str(q.get("concurrency_limit") or "-"),
            "paused" if q.get("paused") else "running",
        )
    done = snap["finished_last_minute"]
    summary = (
        f"Last minute: {done['successful']:,} succeeded, {done['failed']:,} failed, "
        f"{done['cancelled']:,} cancelled"
    )
    workers = Table(title="Workers")
    for column in ("name", "host", "pid", "slots", "heartbeat", "running"):
        workers.add_column(column)
    for w in snap["workers"]:
        workers.add_row(
            w["name"],
            w["host"],
            str(w["pid"]),
            f"{len(w['running'])}/{w['concurrency']}",
            f"{w['seconds_since_heartbeat']:.1f}s ago",
            ", ".join(w["running"][:5]) or "-",
        )
    return Group(queues, summary, workers)
