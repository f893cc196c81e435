"""``manage.py supaqueue_prune``: delete finished jobs past their retention, now."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ... import conf
from ... import queue as q

#: Seconds between progress lines at -v 1 (-v 2: a line per batch).
PROGRESS_EVERY = 2.0


class Command(BaseCommand):
    help = (
        "Delete finished jobs (and their events) older than their retention. Workers do this on their "
        "own every PRUNE_INTERVAL; use this after changing retention or for cron-driven deployments."
    )

    def add_arguments(self, parser: Any) -> None:
        for status in ("successful", "failed", "cancelled"):
            parser.add_argument(
                f"--{status}-hours",
                type=float,
                default=None,
                help=f"Keep {status} jobs this many hours (default: RETAIN_{status.upper()}_HOURS).",
            )
        parser.add_argument(
            "--batch", type=int, default=None, help="Jobs per statement (default PRUNE_BATCH)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = {
            status: options[f"{status}_hours"]
            if options[f"{status}_hours"] is not None
            else conf.get(f"RETAIN_{status.upper()}_HOURS")
            for status in ("successful", "failed", "cancelled")
        }
        if any(h is not None and h < 0 for h in hours.values()):
            raise CommandError("Retention hours must be >= 0.")
        batch = options["batch"] or int(conf.get("PRUNE_BATCH"))
        verbosity = options["verbosity"]
        total = 0
        connection = connections[conf.get("DATABASE")]
        connection.ensure_connection()
        started = last_said = time.monotonic()
        while True:
            deleted = q.prune(
                connection.connection,
                successful_hours=hours["successful"],
                failed_hours=hours["failed"],
                cancelled_hours=hours["cancelled"],
                batch=batch,
            )
            total += deleted
            if deleted < batch:
                break
            now = time.monotonic()
            if verbosity >= 2 or (verbosity == 1 and now - last_said >= PROGRESS_EVERY):
                # A prune after a retention change can take minutes: say it is moving, and how fast.
                rate = total / max(now - started, 1e-3)
                self.stdout.write(f"deleted {total} finished jobs so far ({rate:.0f}/s)")
                last_said = now
        if verbosity >= 1:
            self.stdout.write(f"deleted {total} finished jobs in {time.monotonic() - started:.1f}s")
