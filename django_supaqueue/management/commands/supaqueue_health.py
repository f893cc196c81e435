"""``manage.py supaqueue_health``: exit 0 when healthy, 1 otherwise (container probes)."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models.functions import Now

from ... import conf, stats
from ...models import Worker


class Command(BaseCommand):
    help = (
        "Check that the database answers, migrations are applied, this host's workers beat, "
        "and (with --max-pending-age) that no queue waits too long. Exit 0 if all pass, else 1."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-workers",
            action="store_true",
            help="Do not require a live worker on this host (e.g. in a web container).",
        )
        parser.add_argument("--host", default=None, help="Host whose workers to check (default: this one).")
        parser.add_argument(
            "--max-pending-age",
            type=float,
            default=None,
            help="Fail if a queue's oldest runnable job has waited longer (seconds).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        checks = [("database", self.database)]
        checks.append(("migrations", self.migrations))
        if not options["no_workers"]:
            checks.append(("workers", lambda: self.workers(options["host"] or socket.gethostname())))
        if options["max_pending_age"] is not None:
            checks.append(("waiting", lambda: self.waiting(options["max_pending_age"])))
        failed = False
        for name, check in checks:
            try:
                problem = check()
            except Exception as exc:  # noqa: BLE001  a probe reports every failure, it never crashes
                problem = f"{type(exc).__name__}: {exc}"
            self.stdout.write(f"{'ok' if not problem else 'FAIL'} {name}{': ' + problem if problem else ''}")
            failed = failed or bool(problem)
            if problem and name == "database":
                break  # nothing else can be checked
        if failed:
            raise SystemExit(1)

    def database(self) -> str:
        with connections[conf.get("DATABASE")].cursor() as cur:
            cur.execute("SELECT 1")
        return ""

    def migrations(self) -> str:
        connection = connections[conf.get("DATABASE")]
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        return f"{len(plan)} unapplied migration(s), e.g. {plan[0][0]}" if plan else ""

    def workers(self, host: str) -> str:
        # By the database's clock, which wrote the heartbeats: this host's may be minutes off.
        fresh = Now() - timedelta(seconds=float(conf.get("LEASE_DURATION")))
        if Worker.objects.filter(host=host, last_heartbeat_at__gte=fresh).exists():
            return ""
        return f"no worker on host {host!r} has sent a heartbeat in the last {conf.get('LEASE_DURATION')}s"

    def waiting(self, max_age: float) -> str:
        late = {
            name: q["oldest_runnable_seconds"]
            for name, q in stats.snapshot()["queues"].items()
            if (q.get("oldest_runnable_seconds") or 0) > max_age
        }
        return ", ".join(f"{n} waits {a:.0f}s" for n, a in sorted(late.items()))
