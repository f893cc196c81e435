"""The demo itself, once Django is set up: database, admin login, workload, web server, workers, progress.

The web server comes first in both modes, since the demo's HTTP queue calls
the example project itself (``/demo/webhook/``): workers start only once it
answers. Interactive, the server and the workers then run side by side, printing
jobs done per queue until Ctrl-C, and the demo's cron schedule fires every
minute. With ``--once`` burst workers run until the workload (the schedule's
job, which the workload fires by hand, included) has finished, the run reports
whether every job succeeded, and the server is stopped.

What it prints is for someone running it the first time: the inventory sync's
failures on purpose are marked "expected failure (demonstrates retries)" (the
settings' log filter, ``example_app.logs``), a re-run says how to reset the admin
password it no longer shows, the schedule's next run is never a moment gone by
(after downtime), and the counts are of this run's jobs only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from psycopg import sql

from django_supaqueue.models import Job, Queue, Schedule
from django_supaqueue.worker.connection import connection_params
from example_project.example_app.workload import (
    FINISHED,
    FULFILMENT_ORDER,
    FULFILMENT_STEPS,
    WEBHOOK_PATH,
    WEBHOOK_QUEUE,
    enqueue_workload,
    fulfilment_keys,
    http_answers,
    is_finished,
    last_report_tick,
    next_run_at,
    queue_progress,
    report_schedule,
    run_started,
    workload_jobs,
)
from example_project.processes import (
    ROOT,
    ChildFailed,
    free_port,
    start_manage,
    stopped_at_exit,
    wait_until_answering,
    watch,
)

ADMIN_USERNAME = "admin"
#: The children's log level: failed attempts show, the progress lines count the rest.
CHILD_ENV = {"DJANGO_SETTINGS_MODULE": "example_project.settings", "SUPAQUEUE_LOG_LEVEL": "WARNING"}
#: Seconds runserver may take to answer its first request (it imports the project first).
WEB_SERVER_START_TIMEOUT = 60.0


def run(*, once: bool, timeout: float, port: int) -> int:
    """Prepare the database, enqueue the workload, start the web server, then serve (or, ``once``, drain)."""
    ensure_database()
    call_command("migrate", interactive=False, verbosity=0)
    print("database schema up to date", flush=True)
    ensure_admin()
    port = free_port(port)
    site = site_url(port)
    since = run_started()
    keys = enqueue_workload(site)
    print(describe_enqueued(keys, since), flush=True)
    print(describe_schedule(), flush=True)
    print_http_queue()
    try:
        with web_server(port) as server:
            if once:
                return run_once(keys, since, timeout, server)
            return serve(keys, since, port, server)
    except ChildFailed as exc:
        print(exc, flush=True)
        return 1


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
    """Create the demo superuser once; its password is random and shown only when it is made.

    A later run cannot show it again (only its hash is stored), so it says how to set a new one.
    """
    users = get_user_model().objects
    if users.filter(username=ADMIN_USERNAME).exists():
        print(
            f"admin login: {ADMIN_USERNAME!r}, made by an earlier run (which showed its password). "
            f"Forgot it? While the demo runs, set a new one from another terminal:\n"
            f"  {manage_command('changepassword', ADMIN_USERNAME)}",
            flush=True,
        )
        return
    password = secrets.token_urlsafe(12)
    users.create_superuser(ADMIN_USERNAME, f"{ADMIN_USERNAME}@example.com", password)
    print(f"created the demo admin login (shown only this once): {ADMIN_USERNAME} / {password}", flush=True)


def manage_command(*args: str) -> str:
    """A ``manage.py`` command line to paste in another terminal: this run's database and Python."""
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    return f"DATABASE_URL='{os.environ['DATABASE_URL']}' {shown} manage.py {' '.join(args)}"


def describe_enqueued(keys: list[str], since: datetime) -> str:
    """How many jobs this run enqueued: keys held by an earlier run's unfinished jobs are not counted."""
    created = len(workload_jobs(keys, since))
    text = f"enqueued the demo workload ({created} jobs, {len(FULFILMENT_STEPS)} of them a pipeline)"
    held = len(keys) + 1 - created  # + 1: the report schedule's job
    if held > 0:
        text += (
            f"; {held} more were already there (an earlier run's, unfinished, or orders confirmed "
            "before): the workers run them too, this run's counts leave them out"
        )
    return text


def print_http_queue() -> None:
    """Say where the HTTP queue's calls go and how fast: read from its row, which the admin may change."""
    queue = Queue.objects.get(name=WEBHOOK_QUEUE)
    rate = "no rate limit"
    if queue.rate_limit:
        rate = f"at most {queue.rate_limit} calls per {queue.rate_period:g}s"
    print(
        f"HTTP queue {queue.name!r}: {queue.http_method} {queue.http_url}{WEBHOOK_PATH} "
        f"(the example's own webhook), {rate}",
        flush=True,
    )


def site_url(port: int) -> str:
    """Where runserver serves the example: the admin's address, and the HTTP queue's host."""
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def web_server(port: int) -> Iterator[subprocess.Popen]:
    """``runserver`` on ``port``, answering before the block starts and stopped when it ends."""
    site = site_url(port)
    server = start_manage("runserver", "--noreload", f"127.0.0.1:{port}", env=CHILD_ENV)
    with stopped_at_exit(server):
        wait_until_answering(server, f"{site}/admin/login/", WEB_SERVER_START_TIMEOUT)
        print(f"web server answering on {site}/", flush=True)
        yield server


# -- --once ---------------------------------------------------------------


def run_once(keys: list[str], since: datetime, timeout: float, server: subprocess.Popen) -> int:
    """Run burst workers until every demo job has finished, then report; 0 only if all succeeded.

    A burst worker exits when nothing is runnable *now*, and a retry waiting
    for its back-off, a delayed job or a call held back by its queue's rate
    limit is not, so bursts repeat (each after waiting for the next such job to
    come due) until the workload has finished or the deadline passes. The web
    server (``server``) answers the HTTP queue's calls meanwhile.
    """
    started = time.monotonic()
    deadline = started + timeout
    progress = ProgressPrinter(since)
    while not is_finished(jobs := workload_jobs(keys, since)):
        if time.monotonic() > deadline:
            return report_timeout(jobs, timeout)
        if server.poll() is not None:
            print(f"the web server exited with status {server.returncode}", flush=True)
            return 1
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
    answers = ", ".join(f"{n} x HTTP {status}" for status, n in sorted(http_answers(jobs).items()))
    print(f"HTTP calls answered: {answers or 'none'}", flush=True)
    print(describe_pipeline(jobs), flush=True)
    print(describe_schedule(), flush=True)
    return 0


def describe_pipeline(jobs: list[Job]) -> str:
    """The fulfilment pipeline's shape and what its last step returned."""
    mail = {job.key: job for job in jobs}.get(fulfilment_keys(FULFILMENT_ORDER)["mail"])
    outcome = f"the last step returned {mail.result!r}" if mail else "not enqueued"
    return (
        f"pipeline for order {FULFILMENT_ORDER}: reserve stock + charge payment -> ship -> "
        f"book the carrier (HTTP) -> shipping mail; {outcome}"
    )


def describe_schedule() -> str:
    """``schedule 'orders-report' (* * * * *, UTC): last run 12:00:03 by hand, job 31 successful; next
    run 12:01:00``: the latest firing, on the cadence or by hand, and the next tick."""
    schedule = report_schedule()
    zone = ZoneInfo(schedule.timezone)
    tick = last_report_tick()
    last = "not run yet"
    if tick is not None:
        how = "by hand" if tick.manual else "on its cron tick"
        if tick.job is not None:
            outcome = f"job {tick.job.pk} {tick.job.status}"
        else:
            outcome = tick.error or "its job was deleted since"
        last = f"last run {tick.fired_at.astimezone(zone):%H:%M:%S} {how}, {outcome}"
    return f"schedule {schedule.name!r} ({schedule.cron}, {schedule.timezone}): {last}; {next_run(schedule)}"


def next_run(schedule: Schedule, now: datetime | None = None) -> str:
    """``next run 12:01:00``, never a moment gone by: after downtime the row's next run is in the past
    until a worker fires that tick, so it is "due now", followed by the next tick on the cadence."""
    if schedule.next_run_at is None:
        return "no next run (disabled)"
    now = now or timezone.now()
    zone = ZoneInfo(schedule.timezone)
    if schedule.next_run_at > now:
        return f"next run {schedule.next_run_at.astimezone(zone):%H:%M:%S}"
    then = schedule.timing().next_after(now)
    after = f", then {then.astimezone(zone):%H:%M:%S}" if then is not None else ""
    return f"next run due now (missed while no worker ran: the workers fire it){after}"


def report_timeout(jobs: list[Job], timeout: float) -> int:
    still_open = [f"{job.key} ({job.status})" for job in jobs if job.status not in FINISHED]
    print(f"demo workload NOT complete after {timeout:.0f}s; still open: {', '.join(still_open)}", flush=True)
    return 1


# -- interactive ----------------------------------------------------------


def serve(keys: list[str], since: datetime, port: int, server: subprocess.Popen) -> int:
    """Run the workers beside the web server, printing progress, until Ctrl-C (0) or a child dies (1)."""
    children = [server, start_manage("runworkers", env=CHILD_ENV)]
    print_instructions(port)
    progress = ProgressPrinter(since)
    announced = False

    def tick() -> None:
        nonlocal announced
        progress.print_if_changed()
        if not announced and is_finished(workload_jobs(keys, since)):
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
    shell = manage_command(
        "shell", "-c", '"from example_project.example_app.tasks import add; add.enqueue(1, 2)"'
    )
    print(
        f"\nadmin: http://127.0.0.1:{port}/admin/   (schedules, with their runs and Run now: "
        f"/admin/supaqueue/schedule/)\nenqueue more from another terminal with\n  {shell}\n"
        "Ctrl-C stops the web server, the workers and the database.\n",
        flush=True,
    )


# -- progress -------------------------------------------------------------


class ProgressPrinter:
    """Prints jobs done per queue, and the schedule's last and next run, each when it changed."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.started = time.monotonic()
        self.last: dict[str, str] = {}

    def print_if_changed(self) -> None:
        for topic, line in (
            ("queues", format_progress(queue_progress(self.since))),
            ("schedule", describe_schedule()),
        ):
            if line != self.last.get(topic):
                self.last[topic] = line
                print(f"[{time.monotonic() - self.started:5.1f}s] {line}", flush=True)


def format_progress(progress: dict[str, Counter[str]]) -> str:
    """``default: 5 done, 1 waiting | emails: 2 done, 2 running, 3 waiting``."""
    parts = []
    for queue, counts in progress.items():
        text = f"{queue}: {counts[Job.Status.SUCCESSFUL]} done"
        for status, label in (
            (Job.Status.IN_PROGRESS, "running"),
            (Job.Status.PENDING, "waiting"),
            (Job.Status.WAITING, "waiting for dependencies"),
            (Job.Status.FAILED, "failed"),
        ):
            if counts[status]:
                text += f", {counts[status]} {label}"
        parts.append(text)
    return " | ".join(parts) or "no jobs"
