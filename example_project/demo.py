"""Stage two of the run command, inside the virtual environment run.py prepared.

Sets up the database (embedded unless DATABASE_URL is set), migrates, makes
the demo admin login, enqueues the demo workload, then either runs the web
server and the workers side by side until Ctrl-C, or (``--once``) runs
workers in burst mode until the workload has finished.

The web server and the workers run as ``manage.py`` child processes in their
own sessions, so that Ctrl-C reaches this process alone: it then stops each
child exactly once, waits for it, and only then stops the database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from example_project.database import database_url

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "example_project.settings"
ADMIN_USERNAME = "admin"
DEFAULT_PORT = 8000
#: Seconds a stopped child may take to finish its running jobs before it is killed.
STOP_GRACE = 30.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 example_project/run.py",
        description="Set up and run the django-supaqueue example project.",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="run the demo workload to completion with burst workers, then exit (non-interactive)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help=f"web server port (default {DEFAULT_PORT}, or a free one)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="with --once: seconds to wait for the workload before giving up (default 300)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the demo; the exit status is 0 on success and on Ctrl-C while serving."""
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    try:
        with database_url() as url:
            try:
                return _run(args, url)
            finally:
                _ignore_interrupts()
                _close_connections()
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130


def _run(args: argparse.Namespace, url: str) -> int:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    import django

    django.setup()
    ensure_database()
    migrate()
    ensure_admin()
    from example_project.example_app.workload import enqueue_workload

    since = _now()
    keys = enqueue_workload()
    print(f"enqueued the demo workload ({len(keys)} jobs)", flush=True)
    if args.once:
        return run_once(keys, since, args.timeout)
    return serve(keys, since, args.port)


# -- setup ----------------------------------------------------------------


def ensure_database() -> None:
    """Create the settings' database if the server lacks it: a new embedded server has only "postgres"."""
    import psycopg
    from psycopg import sql

    from django_supaqueue.worker.connection import connection_params

    params = connection_params()
    try:
        psycopg.connect(**params, connect_timeout=10).close()
        return
    except psycopg.OperationalError as exc:
        missing = exc
    try:
        with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(params["dbname"])))
    except psycopg.Error as exc:
        name = params["dbname"]
        raise SystemExit(f"Cannot use database {name!r}: {missing}\nnor create it: {exc}") from None
    print(f"created database {params['dbname']}", flush=True)


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    print("database schema up to date", flush=True)


def ensure_admin() -> None:
    """Create the demo superuser once; its password is random and shown only when it is made."""
    from django.contrib.auth import get_user_model

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

    A burst worker exits when nothing is runnable *now*, which a retry
    waiting for its back-off or a delayed job does not count as, so bursts
    repeat until the workload has finished or the deadline passes.
    """
    from example_project.example_app.workload import is_finished, newest_jobs

    started = time.monotonic()
    deadline = started + timeout
    progress = _ProgressPrinter(since)
    while not is_finished(jobs := newest_jobs(keys)):
        if time.monotonic() > deadline:
            return _report_timeout(jobs, timeout)
        _wait_until_runnable(jobs, deadline, progress)
        status = _watch([_manage("runworkers", "--burst")], progress)
        if status:
            print(f"runworkers --burst exited with status {status}", flush=True)
            return 1
    progress.print_if_changed()
    return _report(newest_jobs(keys), time.monotonic() - started)


def _wait_until_runnable(jobs: list[Any], deadline: float, progress: _ProgressPrinter) -> None:
    from example_project.example_app.workload import next_run_at

    due = next_run_at(jobs)
    if due is None:
        return
    wait = min((due - _now()).total_seconds(), deadline - time.monotonic())
    while wait > 0:
        time.sleep(min(wait, 1.0))
        wait -= 1.0
        progress.print_if_changed()


def _report(jobs: list[Any], elapsed: float) -> int:
    failed = [job for job in jobs if job.status != "successful"]
    if failed:
        print(f"demo workload FAILED: {len(failed)} of {len(jobs)} jobs did not succeed:", flush=True)
        for job in failed:
            print(f"  {job.key}: {job.status} after {job.attempts} attempts: {job.last_error}", flush=True)
        return 1
    attempts = sum(job.attempts for job in jobs)
    per_queue: dict[str, int] = {}
    for job in jobs:
        per_queue[job.queue.name] = per_queue.get(job.queue.name, 0) + 1
    queues = ", ".join(f"{name} {n}" for name, n in sorted(per_queue.items()))
    print(
        f"demo workload complete: all {len(jobs)} jobs successful ({queues}), "
        f"{attempts} attempts, {elapsed:.1f}s",
        flush=True,
    )
    return 0


def _report_timeout(jobs: list[Any], timeout: float) -> int:
    from example_project.example_app.workload import FINISHED

    waiting = [f"{job.key} ({job.status})" for job in jobs if job.status not in FINISHED]
    print(f"demo workload NOT complete after {timeout:.0f}s; still open: {', '.join(waiting)}", flush=True)
    return 1


# -- interactive ----------------------------------------------------------


def serve(keys: list[str], since: datetime, port: int | None) -> int:
    """Run the web server and the workers, printing progress, until Ctrl-C or a child dies."""
    from example_project.example_app.workload import is_finished, newest_jobs

    port = port or _free_port(DEFAULT_PORT)
    children = [
        _manage("runserver", "--noreload", f"127.0.0.1:{port}"),
        _manage("runworkers"),
    ]
    print(
        f"\nadmin: http://127.0.0.1:{port}/admin/   enqueue more from another terminal with\n"
        f"  DATABASE_URL='{os.environ['DATABASE_URL']}' {_shown_python()} manage.py shell -c "
        '"from example_project.example_app.tasks import add; add.enqueue(1, 2)"\n'
        "Ctrl-C stops the web server, the workers and the database.\n",
        flush=True,
    )
    progress = _ProgressPrinter(since)
    announced = False

    def tick() -> None:
        nonlocal announced
        progress.print_if_changed()
        if not announced and is_finished(newest_jobs(keys)):
            announced = True
            print("demo workload complete; workers keep running (Ctrl-C to stop)", flush=True)

    try:
        status = _watch(children, progress, tick=tick, stop_when="any")
    except KeyboardInterrupt:
        print("stopped the web server and the workers", flush=True)
        return 0
    print(f"a child process exited with status {status}; stopping", flush=True)
    return 1


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there, otherwise any free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port")


# -- child processes ------------------------------------------------------


def _manage(*args: str) -> subprocess.Popen:
    """Start ``manage.py <args>`` in its own session, with the database this run uses."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "SUPAQUEUE_LOG_LEVEL": "WARNING",  # failed attempts show; the progress line counts the rest
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, start_new_session=True
    )


def _watch(
    children: list[subprocess.Popen],
    progress: _ProgressPrinter,
    *,
    tick: Callable[[], None] | None = None,
    stop_when: str = "all",
) -> int:
    """Print progress every second until all (or any) children exited; returns the worst status.

    If anything interrupts the wait, the children still running are stopped
    before the exception goes on, so none outlives this process.
    """
    try:
        while True:
            codes = [child.poll() for child in children]
            ended = [c for c in codes if c is not None]
            if (stop_when == "any" and ended) or len(ended) == len(children):
                _stop(children)
                return max(abs(c) for c in (child.returncode for child in children))
            (tick or progress.print_if_changed)()
            time.sleep(1.0)
    except BaseException:
        _ignore_interrupts()
        print("\nstopping (running jobs finish first)", flush=True)
        _stop(children)
        raise


def _stop(children: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each running child (workers finish their jobs first), then kill any that lags.

    Not SIGINT: a child started from a shell that ignores SIGINT (a background
    job) inherits that, and runserver would never stop.
    """
    running = [child for child in children if child.poll() is None]
    for child in running:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in running:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_group(child: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


# -- progress -------------------------------------------------------------


class _ProgressPrinter:
    """Prints jobs done per queue, when the numbers changed since the last line."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.started = time.monotonic()
        self.last = ""

    def print_if_changed(self) -> None:
        from example_project.example_app.workload import queue_progress

        line = _format_progress(queue_progress(self.since))
        if line != self.last:
            self.last = line
            print(f"[{time.monotonic() - self.started:5.1f}s] {line}", flush=True)


def _format_progress(progress: dict[str, Any]) -> str:
    parts = []
    for queue, counts in progress.items():
        text = f"{queue}: {counts['successful']} done"
        for status, label in (("in_progress", "running"), ("pending", "waiting"), ("failed", "failed")):
            if counts[status]:
                text += f", {counts[status]} {label}"
        parts.append(text)
    return " | ".join(parts) or "no jobs"


# -- small helpers ----------------------------------------------------------


def _now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def _shown_python() -> str:
    """This interpreter as a user would type it from the repository root."""
    python = Path(sys.executable)
    return str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else str(python)


def _raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP stop the run the way Ctrl-C does; SIGINT too, even if inherited as ignored."""
    raise KeyboardInterrupt


def _ignore_interrupts() -> None:
    """While shutting down, a second Ctrl-C must not abandon a child or the database."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _close_connections() -> None:
    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
