"""``manage.py runworkers``: run the queue's workers."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ... import conf
from ...exceptions import InvalidSchedule
from ...worker.supervisor import run_workers


class Command(BaseCommand):
    help = "Run django-supaqueue workers until SIGTERM/SIGINT (or, with --burst, until idle)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "-q",
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="Serve this queue (repeatable; default: every queue).",
        )
        parser.add_argument(
            "-c",
            "--concurrency",
            type=int,
            default=None,
            help="Jobs run at once per process (default: SUPAQUEUE['CONCURRENCY']).",
        )
        parser.add_argument(
            "-p",
            "--processes",
            type=int,
            default=None,
            help="Worker processes (default: SUPAQUEUE['PROCESSES']).",
        )
        parser.add_argument(
            "--burst", action="store_true", help="Exit 0 once no job of the served queues is runnable now."
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="Seconds between fallback polls (default: SUPAQUEUE['POLL_INTERVAL']).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="Serve Prometheus metrics on this port (with -p N, on port, port+1, ...).",
        )
        parser.add_argument("--name", default=None, help="Worker name (default: host:pid:random).")

    def handle(self, *args: Any, **options: Any) -> None:
        concurrency = options["concurrency"] or int(conf.get("CONCURRENCY"))
        processes = options["processes"] or int(conf.get("PROCESSES"))
        if concurrency < 1 or processes < 1:
            raise CommandError("--concurrency and --processes must be at least 1.")
        if options["metrics_port"] is not None:
            from ...metrics import available

            if not available():
                raise CommandError(
                    "--metrics-port needs prometheus-client: pip install django-supaqueue[metrics]"
                )
        if options["name"] and processes > 1:
            raise CommandError("--name names one process; leave it out with --processes > 1.")
        self.sync_schedules(options["verbosity"])
        status = run_workers(
            processes=processes,
            queues=options["queues"],
            concurrency=concurrency,
            burst=options["burst"],
            poll_interval=options["poll_interval"],
            name=options["name"],
            metrics_port=options["metrics_port"],
        )
        if status:
            raise SystemExit(status)

    def sync_schedules(self, verbosity: int) -> None:
        """Bring the schedules declared in code into the database before any worker fires one."""
        from ...scheduling import sync_declared

        try:
            report = sync_declared()
        except InvalidSchedule as exc:
            raise CommandError(str(exc)) from None
        labels = {
            "created": "schedules created",
            "updated": "schedules updated",
            "disabled": "schedules no longer in code, disabled",
            "admin_owned": "schedules declared in code but created in the admin, left alone",
        }
        for what, names in report.items():
            if names and verbosity >= 1:
                self.stdout.write(f"{labels[what]}: {', '.join(names)}")
