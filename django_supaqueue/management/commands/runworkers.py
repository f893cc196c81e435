"""``manage.py runworkers``: run the queue's workers, and say so.

It speaks by default, as Celery's and Procrastinate's workers do: a start
banner, each worker's ready and stop lines, failures with what comes next,
and at ``-v 2`` a line per finished attempt (see worker/console.py for how a
project's own LOGGING takes precedence).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from ... import __version__, conf
from ...exceptions import InvalidSchedule
from ...worker.console import Console
from ...worker.supervisor import run_workers

logger = logging.getLogger("django_supaqueue.worker")

#: How the banner and the lines after it name what the schedule sync did.
SYNC_LABELS = {
    "created": "created",
    "updated": "updated",
    "disabled": "no longer in code, disabled",
    "admin_owned": "declared in code but created in the admin, left alone",
}


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
            "-a",
            "--async-concurrency",
            type=int,
            default=None,
            help="Calls to HTTP queues in flight at once per process, on its event loop; 0: on the "
            "job threads (default: SUPAQUEUE['ASYNC_CONCURRENCY']).",
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
        parser.add_argument(
            "--log-format",
            choices=["text", "json"],
            default="text",
            help="The console's lines: text, or one JSON object per line with the job's fields "
            "(used when LOGGING does not route django_supaqueue's logs already).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        concurrency = options["concurrency"] or int(conf.get("CONCURRENCY"))
        processes = options["processes"] or int(conf.get("PROCESSES"))
        if concurrency < 1 or processes < 1:
            raise CommandError("--concurrency and --processes must be at least 1.")
        async_concurrency = options["async_concurrency"]
        if async_concurrency is None:
            async_concurrency = int(conf.get("ASYNC_CONCURRENCY"))
        if async_concurrency < 0:
            raise CommandError("--async-concurrency must be at least 0.")
        if options["metrics_port"] is not None:
            from ...metrics import available

            if not available():
                raise CommandError(
                    "--metrics-port needs prometheus-client: pip install django-supaqueue[metrics]"
                )
        if options["name"] and processes > 1:
            raise CommandError("--name names one process; leave it out with --processes > 1.")
        console = Console(options["verbosity"], options["log_format"])
        attached = console.install()
        if not attached and console.format != "text":
            self.stderr.write(
                f"--log-format {console.format} has no effect: LOGGING routes django_supaqueue's logs already"
            )
        synced = self.sync_schedules()
        self.announce(options["queues"], concurrency, processes, synced, async_concurrency)
        status = run_workers(
            processes=processes,
            console=console if attached else None,
            queues=options["queues"],
            concurrency=concurrency,
            async_concurrency=async_concurrency,
            burst=options["burst"],
            poll_interval=options["poll_interval"],
            name=options["name"],
            metrics_port=options["metrics_port"],
        )
        if status:
            raise SystemExit(status)

    def sync_schedules(self) -> dict[str, list[str]]:
        """Bring the schedules declared in code into the database before any worker fires one."""
        from ...scheduling import sync_declared

        try:
            return sync_declared()
        except InvalidSchedule as exc:
            raise CommandError(str(exc)) from None

    def announce(
        self,
        queues: list[str] | None,
        concurrency: int,
        processes: int,
        synced: dict[str, list[str]],
        async_concurrency: int = 0,
    ) -> None:
        """The start banner: what will run, where, how wide; then which schedules the sync changed."""
        alias = conf.get("DATABASE")
        db = connections[alias].settings_dict
        where = f"{db['HOST'] or 'local socket'}:{db['PORT'] or 5432}/{db['NAME']}"
        changed = ", ".join(f"{len(names)} {SYNC_LABELS[what]}" for what, names in synced.items() if names)
        logger.info(
            "django-supaqueue %s starting: database %s (%s), queues %s, concurrency %s, "
            "async concurrency %s, processes %s, schedules synced (%s)",
            __version__,
            alias,
            where,
            ",".join(sorted(set(queues))) if queues else "* (every queue)",
            concurrency,
            async_concurrency or "off (HTTP calls on the threads)",
            processes,
            changed or "no changes",
            extra={
                "version": __version__,
                "database": f"{alias} ({where})",
                "queues": sorted(set(queues)) if queues else None,
                "concurrency": concurrency,
                "async_concurrency": async_concurrency,
                "processes": processes,
                "schedules": {what: len(names) for what, names in synced.items()},
            },
        )
        for what, names in synced.items():
            if names and what != "admin_owned":  # scheduling.py has warned about those
                logger.info("schedules %s: %s", SYNC_LABELS[what], ", ".join(names))
