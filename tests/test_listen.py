"""How an idle worker learns of new jobs: LISTEN on its claim connection, on a LISTEN_DATABASE, or polling."""

import threading
import time

import pytest
from django.db import connection

from django_supaqueue.models import Job
from django_supaqueue.worker.process import WorkerProcess
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def connections_named(name: str) -> int:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            [name],
        )
        return cur.fetchone()[0]


@pytest.fixture
def run_worker():
    """``run_worker(**options)`` starts a worker thread (30 s poll unless told) and stops it at teardown."""
    started = []

    def start(**options):
        options.setdefault("poll_interval", 30)
        worker = WorkerProcess(concurrency=1, **options)
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        started.append((worker, thread))
        wait_for(lambda: worker.worker_id is not None, 10)
        time.sleep(0.3)  # past its first claim: from now on it sleeps until woken
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(10)


def started_within(job, seconds):
    wait_for(lambda: Job.objects.filter(pk=job.pk, status=Job.Status.SUCCESSFUL).exists(), seconds)


def test_the_claim_connection_listens_itself_and_survives_losing_it(run_worker):
    wait_for(lambda: connections_named("supaqueue listener") == 0, 10)  # earlier tests' have hung up
    worker = run_worker(async_concurrency=0)  # one claim connection: an async lane would add its own
    assert connections_named("supaqueue listener") == 0  # no second connection: the claim one listens
    started_within(tasks.add.enqueue(1, 2), 5)  # the poll would take 30 s
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'supaqueue worker' AND datname = current_database()"
        )
        assert cur.fetchone()[0] == 1
    started_within(tasks.add.enqueue(3, 4), 5)  # reconnected, listening again
    job = tasks.started_at.enqueue()
    started_within(job, 5)
    assert worker.processed == 3


def test_a_listen_database_gets_a_listener_connection_of_its_own(run_worker, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "LISTEN_DATABASE": "listen"}
    wait_for(lambda: connections_named("supaqueue listener") == 0, 10)
    run_worker()
    assert connections_named("supaqueue listener") == 1
    started_within(tasks.add.enqueue(1, 2), 5)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'supaqueue listener' AND datname = current_database()"
        )
    wait_for(lambda: connections_named("supaqueue listener") == 1, 10)  # it reconnects
    started_within(tasks.add.enqueue(3, 4), 5)


def test_polling_only_mode_listens_to_nothing(run_worker, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "LISTEN": False}
    wait_for(lambda: connections_named("supaqueue listener") == 0, 10)
    idle = run_worker()
    job = tasks.add.enqueue(1, 2)
    time.sleep(1.0)
    assert Job.objects.get(pk=job.pk).status == Job.Status.PENDING  # nothing woke it: it polls every 30 s
    idle.stop()
    run_worker(poll_interval=0.2)
    started_within(job, 5)
    assert connections_named("supaqueue listener") == 0


def test_a_stopped_worker_thread_leaves_no_connection_open(run_worker, monkeypatch):
    """Its loop's and its job threads' Django connections are closed, even persistent ones."""
    from django.db import connections

    from tests.testapp.models import Execution

    def sessions():
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cur.fetchone()[0]

    wait_for(lambda: sessions() == 0, 10)  # earlier tests' connections are gone
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 600)
    worker = run_worker(poll_interval=0.2)
    tasks.record.enqueue_many([{"n": i} for i in range(6)])
    wait_for(lambda: Execution.objects.count() == 6, 10)
    assert sessions() >= 2  # the claim connection and at least one job thread's
    worker.stop()
    wait_for(lambda: sessions() == 0, 5)


def test_prepare_threshold_none_in_options_turns_the_workers_preparing_off(monkeypatch):
    """Behind a PgBouncer older than 1.21 in transaction mode, docs/howto/many-hosts.md says to set it."""
    from django_supaqueue.worker.connection import connect

    with connect() as conn:
        assert conn.prepare_threshold == 5  # psycopg's default: Django's own None is not a choice
    options = {**connection.settings_dict.get("OPTIONS", {}), "prepare_threshold": None}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    with connect() as conn:
        assert conn.prepare_threshold is None


@pytest.mark.parametrize("listen_database", [None, "listen"])
def test_a_delayed_job_enqueued_as_soon_as_the_worker_is_registered_is_not_missed(
    monkeypatch, settings, listen_database
):
    """The listening connection (the first lane's, or a LISTEN_DATABASE's) LISTENs before the Worker
    row exists, however slowly the lanes and the listener start."""
    from datetime import timedelta

    from django_supaqueue.models import Worker
    from django_supaqueue.worker.claim_loop import ClaimLoop
    from django_supaqueue.worker.listener import Listener

    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "LISTEN_DATABASE": listen_database}
    original, original_listen = ClaimLoop.run, Listener._listen

    def slow_start(loop):
        time.sleep(1.0)  # an import, a busy machine: the lanes start after the row is there
        original(loop)

    def slow_listen(listener):
        time.sleep(0.5)  # a slow connection: the listener is late too
        original_listen(listener)

    monkeypatch.setattr(ClaimLoop, "run", slow_start)
    monkeypatch.setattr(Listener, "_listen", slow_listen)
    worker = WorkerProcess(concurrency=1, poll_interval=30)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: Worker.objects.exists(), 10)
        job = tasks.started_at.using(run_at=timedelta(seconds=2)).enqueue()  # its first claim cannot see it
        started_within(job, 5)  # woken by its notification, not found by the 30 s poll
    finally:
        worker.stop()
        thread.join(10)
