"""The demo itself, once Django is set up: database, admin login, workload, workers, progress.

Interactive, it runs the web server and the workers side by side and prints
jobs done per queue until Ctrl-C. With ``--once`` it runs burst workers until
the workload has finished and reports whether every job succeeded.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from psycopg import sql

from django_supaqueue.models import Job
from django_supaqueue.worker.connection import connection_params
from example_project.example_app.workload import (
    FINISHED,
    enqueue_workload,
    is_finished,
    newest_jobs,
    next_run_at,
    queue_progress,
)
from example_project.processes import ROOT, free_port, start_manage, watch

ADMIN_USERNAME = "admin"
#: The children's log level: failed attempts show, the progress lines count the rest.
CHILD_ENV = {"DJANGO_SETTINGS_MODULE": "example_project.settings", "SUPAQUEUE_LOG_LEVEL": "WARNING"}


def run(*, once: bool, timeout: float, port: int) -> int:
    """Prepare the database, enqueue the workload, then serve (or, ``once``, drain) it."""
    ensure_database()
    call_command("migrate", interactive=False, verbosity=0)
    print("database schema up to date", flush=True)
    ensure_admin()
    since = timezone.now()
    keys = enqueue_workload()
    print(f"enqueued the demo workload ({len(keys)} jobs)", flush=True)
    if once:
        return run_once(keys, since, timeout)
    return serve(keys, since, free_port(port))


# -- setup ----------------------------------------------------------------


def ensure_database() -> None:
    """Create the settings' database if the server lacks it: a new embedded server has only "postgres"."""
    params = connection_params()
    try:
        psycopg.connect(**params, connect_timeout=10).close()
        return
    except psycopg.OperationalError as exc:
        missing = exc
    name = params["dbname"]
    try:
        with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise SystemExit(f"Cannot use database {name!r}: {missing}\nnor create it: {exc}") from None
    print(f"created database {name}", flush=True)


def ensure_admin() -> None:
    """Create the demo superuser once; its password is random and shown only when it is made."""
    users = get_user_model().objects
    if users.filter(username=ADMIN_USERNAME).exists():
        print(f"admin login: {ADMIN_USERNAME!r}, made by an earlier run (it showed the password)", flush=True)
        return
    password = secrets.token_urlsafe(12)
    users.create_superuser(ADMIN_USERNAME, f"{ADMIN_USERNAME}@example.com", password)
    print(f"created the demo admin login (shown only this once): {ADMIN_USERNAME} / {password}", flush=True)


# -- --once ---------------------------------------------------------------


def run_once(keys: list[str], since: datetime, timeout: float) -> int:
    """Run burst workers until every demo job has finished, then report; 0 only if all succeeded.

    A burst worker exits when nothing is runnable *now*, and a retry waiting
    for its back-off or a delayed job is not, so bursts repeat (each after
    waiting for the next such job to come due) until the workload has
    finished or the deadline passes.
    """
    started = time.monotonic()
    deadline = started + timeout
    progress = ProgressPrinter(since)
    while not is_finished(jobs := newest_jobs(keys)):
        if time.monotonic() > deadline:
            return report_timeout(jobs, timeout)
        wait_until_due(next_run_at(jobs), deadline, progress)
        status = watch([start_manage("runworkers", "--burst", env=CHILD_ENV)], progress.print_if_changed)
        if status:
            print(f"runworkers --burst exited with status {status}", flush=True)
            return 1
    progress.print_if_changed()
    return report(jobs, time.monotonic() - started)


def wait_until_due(due: datetime | None, deadline: float, progress: ProgressPrinter) -> None:
    """Sleep until ``due`` (or the deadline), printing progress each second meanwhile."""
    if due is None:
        return
    wait = min((due - timezone.now()).total_seconds(), deadline - time.monotonic())
    while wait > 0:
        time.sleep(min(wait, 1.0))
        wait -= 1.0
        progress.print_if_changed()


def report(jobs: list[Job], elapsed: float) -> int:
    failed = [job for job in jobs if job.status != Job.Status.SUCCESSFUL]
    if failed:
        print(f"demo workload FAILED: {len(failed)} of {len(jobs)} jobs did not succeed:", flush=True)
        for job in failed:
            print(f"  {job.key}: {job.status} after {job.attempts} attempts: {job.last_error}", flush=True)
        return 1
    per_queue = Counter(job.queue.name for job in jobs)
    queues = ", ".join(f"{name} {n}" for name, n in sorted(per_queue.items()))
    attempts = sum(job.attempts for job in jobs)
    print(
        f"demo workload complete: all {len(jobs)} jobs successful ({queues}), "
        f"{attempts} attempts, {elapsed:.1f}s",
        flush=True,
    )
    return 0


def report_timeout(jobs: list[Job], timeout: float) -> int:
    still_open = [f"{job.key} ({job.status})" for job in jobs if job.status not in FINISHED]
    print(f"demo workload NOT complete after {timeout:.0f}s; still open: {', '.join(still_open)}", flush=True)
    return 1


# -- interactive ----------------------------------------------------------


def serve(keys: list[str], since: datetime, port: int) -> int:
    """Run the web server and the workers, printing progress, until Ctrl-C (0) or a child dies (1)."""
    children = [
        start_manage("runserver", "--noreload", f"127.0.0.1:{port}", env=CHILD_ENV),
        start_manage("runworkers", env=CHILD_ENV),
    ]
    print_instructions(port)
    progress = ProgressPrinter(since)
    announced = False

    def tick() -> None:
        nonlocal announced
        progress.print_if_changed()
        if not announced and is_finished(newest_jobs(keys)):
            announced = True
            print("demo workload complete; the workers keep running (Ctrl-C to stop)", flush=True)

    try:
        status = watch(children, tick, until_any=True)
    except KeyboardInterrupt:
        print("stopped the web server and the workers", flush=True)
        return 0
    print(f"a child process exited with status {status}; stopped the others", flush=True)
    return 1


def print_instructions(port: int) -> None:
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    print(
        f"\nadmin: http://127.0.0.1:{port}/admin/   enqueue more from another terminal with\n"
        f"  DATABASE_URL='{os.environ['DATABASE_URL']}' {shown} manage.py shell -c "
        '"from example_project.example_app.tasks import add; add.enqueue(1, 2)"\n'
        "Ctrl-C stops the web server, the workers and the database.\n",
        flush=True,
    )


# -- progress -------------------------------------------------------------


class ProgressPrinter:
    """Prints jobs done per queue, when the numbers changed since the last line."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.started = time.monotonic()
        self.last = ""

    def print_if_changed(self) -> None:
        line = format_progress(queue_progress(self.since))
        if line != self.last:
            self.last = line
            print(f"[{time.monotonic() - self.started:5.1f}s] {line}", flush=True)


def format_progress(progress: dict[str, Counter[str]]) -> str:
    """``default: 5 done, 1 waiting | emails: 2 done, 2 running, 3 waiting``."""
    parts = []
    for queue, counts in progress.items():
        text = f"{queue}: {counts[Job.Status.SUCCESSFUL]} done"
        for status, label in (
            (Job.Status.IN_PROGRESS, "running"),
            (Job.Status.PENDING, "waiting"),
            (Job.Status.FAILED, "failed"),
        ):
            if counts[status]:
                text += f", {counts[status]} {label}"
        parts.append(text)
    return " | ".join(parts) or "no jobs"
