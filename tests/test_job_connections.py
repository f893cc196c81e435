"""Job threads keep their Django connections across attempts, under Django's default CONN_MAX_AGE = 0.

A new connection per attempt forks a server process per job (issue 22); a kept
one must still never carry a task's transaction or breakage into the next job.
Each task records pg_backend_pid(): the server process its queries ran on.
"""

import threading
import time

import pytest
from django.db import connection, connections

from django_supaqueue.models import Job, Queue
from django_supaqueue.worker.process import WorkerProcess
from tests.factories import QueueFactory
from tests.helpers import wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pids(label: str = "backend") -> list[int]:
    return list(Execution.objects.filter(label=label).order_by("n").values_list("pid", flat=True))


def alive(pids: set[int]) -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        return {row[0] for row in cur.fetchall()}


def finished(job: Job) -> bool:
    job.refresh_from_db()
    return job.status in (Job.Status.SUCCESSFUL, Job.Status.FAILED)


def done(job: Job) -> Job:
    assert finished(job), job.status
    return job


@pytest.fixture
def run_worker():
    """``run_worker()`` starts a one-slot worker on a thread of this process; stopped at teardown."""
    started = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(concurrency=1, poll_interval=0.2)
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        started.append((worker, thread))
        wait_for(lambda: worker.worker_id is not None, 10)
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(10)


def test_fifty_orm_jobs_on_two_slots_use_two_connections_closed_when_the_worker_stops(worker_processes):
    assert connection.settings_dict["CONN_MAX_AGE"] == 0  # Django's default, as most projects keep it
    QueueFactory(name="isolated", execution_mode=Queue.ExecutionMode.PROCESSES)
    worker_processes.start("-c", "2")
    for n in range(50):
        tasks.backend_pid.enqueue(n=n)
    for n in range(10):
        tasks.backend_pid.using(queue="isolated").enqueue(n=n, label="child")
    wait_for(lambda: len(backend_pids()) == 50 and len(backend_pids("child")) == 10, 60)
    threads, child = set(backend_pids()), set(backend_pids("child"))
    assert len(threads) <= 2, threads  # one per job thread, not one per job
    assert len(child) <= 2, child  # each slot's child process keeps its own just the same
    worker_processes.stop_all()
    wait_for(lambda: not alive(threads | child), 10)


@pytest.mark.parametrize("how", ["atomic", "autocommit", "begin"])
def test_a_transaction_left_open_is_ended_before_the_next_attempt(drain, how):
    tasks.leaves_transaction_open.enqueue(n=1, how=how)
    after = tasks.backend_pid.enqueue(n=2)
    drain(concurrency=1)
    assert done(after).status == Job.Status.SUCCESSFUL, after.last_error
    assert not Execution.objects.filter(label="uncommitted").exists()  # rolled back, never committed
    left_open = Job.objects.get(task_name__endswith="leaves_transaction_open")
    if how == "begin":  # Django was in autocommit: a rollback is enough, the connection stays
        assert after.result == left_open.result


@pytest.mark.parametrize("how", ["terminated", "atomic"])
def test_a_task_that_breaks_its_connection_leaves_the_next_attempt_a_working_one(drain, how):
    broken = tasks.breaks_its_connection.enqueue(n=1, how=how)
    after = tasks.backend_pid.enqueue(n=2)
    drain(concurrency=1)
    assert done(broken).status == Job.Status.FAILED
    assert done(after).status == Job.Status.SUCCESSFUL, after.last_error
    assert after.attempts == 1
    assert not Execution.objects.filter(label="rolled back").exists()


def test_job_conn_max_age_0_gives_each_attempt_its_own_connection(drain, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "JOB_CONN_MAX_AGE": 0}
    for n in range(5):
        tasks.backend_pid.enqueue(n=n)
    drain(concurrency=1)
    assert len(set(backend_pids())) == 5


def test_job_conn_max_age_in_seconds_reconnects_past_that_age(drain, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "JOB_CONN_MAX_AGE": 0.5}
    for n in range(4):
        tasks.backend_pid.enqueue(n=n, seconds=0.3)
    drain(concurrency=1)
    pids = backend_pids()
    assert len(pids) == 4 and 1 < len(set(pids)) < 4, pids


@pytest.mark.parametrize("checks", [True, False])
def test_health_checks_replace_a_connection_the_server_dropped_between_attempts(
    run_worker, monkeypatch, checks
):
    monkeypatch.setitem(connections.settings["default"], "CONN_HEALTH_CHECKS", checks)
    run_worker()
    first = tasks.backend_pid.enqueue(n=1)
    wait_for(lambda: finished(first), 20)
    assert first.status == Job.Status.SUCCESSFUL, first.last_error
    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s, 5000)", [first.result])
    time.sleep(0.1)
    second = tasks.backend_pid.enqueue(n=2)
    wait_for(lambda: finished(second) and second.status == Job.Status.SUCCESSFUL, 20)
    assert second.result != first.result
    # With health checks the dead connection is replaced before the task's first query;
    # without them that query fails, and only the retry gets a new one.
    assert second.attempts == (1 if checks else 2)


@pytest.mark.parametrize("value", [-1, "600", True])
def test_a_job_conn_max_age_that_is_not_none_or_seconds_is_reported(settings, value):
    from django_supaqueue.checks import check_settings

    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "JOB_CONN_MAX_AGE": value}
    assert [e.id for e in check_settings() if "JOB_CONN_MAX_AGE" in e.msg] == ["supaqueue.E004"]
