"""Claim lanes: one worker process claims on several connections, each lane with a share of the slots."""

import threading
import time

import pytest
from django.db import connection

from django_supaqueue import cancel
from django_supaqueue.models import Job, JobEvent
from django_supaqueue.models import Worker as WorkerRow
from django_supaqueue.worker.lanes import lane_sizes
from django_supaqueue.worker.process import WorkerProcess
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def claim_connections() -> int:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'supaqueue worker' AND datname = current_database()"
        )
        return cur.fetchone()[0]


@pytest.fixture
def run_worker(settings):
    """``run_worker(concurrency, connections)``: a worker thread (30 s poll), stopped at teardown."""
    started = []

    def start(concurrency, connections, **options):
        # Thread lanes only: an async lane would be one more claim connection.
        settings.SUPAQUEUE = {**settings.SUPAQUEUE, "CLAIM_CONNECTIONS": connections, "ASYNC_CONCURRENCY": 0}
        options.setdefault("poll_interval", 30)
        wait_for(lambda: claim_connections() == 0, 10)  # earlier tests' workers have hung up
        worker = WorkerProcess(concurrency=concurrency, **options)
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        started.append((worker, thread))
        wait_for(lambda: claim_connections() == min(concurrency, connections), 10)
        time.sleep(0.3)  # past every lane's first claim: from now on they sleep until woken
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        worker.stop()
        thread.join(10)


def status(job):
    return Job.objects.get(pk=job.pk).status


@pytest.mark.parametrize(
    ("concurrency", "connections", "sizes"),
    [(10, 3, [4, 3, 3]), (7, 2, [4, 3]), (2, 3, [1, 1]), (1, 3, [1]), (10, 1, [10])],
)
def test_slots_are_split_evenly_and_no_lane_is_left_without_one(concurrency, connections, sizes):
    assert lane_sizes(concurrency, connections) == sizes


def test_every_lane_drains_a_backlog_and_each_job_runs_once(run_worker):
    """One notification reaches the listening lane; its full claims wake the others (no 30 s poll)."""
    worker = run_worker(6, 3)
    jobs = tasks.noop.enqueue_many([{"i": i} for i in range(600)])
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 600, 30)
    assert Job.objects.filter(attempts=1).count() == 600
    assert JobEvent.objects.filter(kind="succeeded").count() == 600
    assert JobEvent.objects.filter(job__in=jobs).exclude(kind__in=["started", "succeeded"]).count() == 0
    assert [m.slots for m in worker.loops] == [2, 2, 2]
    assert all(m.processed > 0 for m in worker.loops), [m.processed for m in worker.loops]
    assert worker.processed == 600


def test_a_job_goes_to_a_lane_with_a_free_slot_and_waits_for_none_that_is_full(run_worker):
    """Two lanes of one slot. With both busy, a new job goes to whichever lane frees a slot first."""
    run_worker(2, 2)
    long = tasks.hold.enqueue(n=1, seconds=3)
    wait_for(lambda: status(long) == Job.Status.IN_PROGRESS, 5)
    short = tasks.hold.enqueue(n=2, seconds=0.5)
    wait_for(lambda: status(short) == Job.Status.IN_PROGRESS, 2)  # the other lane took it
    last = tasks.hold.enqueue(n=3, seconds=0)  # both lanes full
    wait_for(lambda: status(last) == Job.Status.SUCCESSFUL, 10)
    wait_for(lambda: status(long) == Job.Status.SUCCESSFUL, 10)
    long, last = Job.objects.get(pk=long.pk), Job.objects.get(pk=last.pk)
    assert last.started_at < long.finished_at  # it did not wait behind the long job


def test_every_lane_renews_the_leases_of_its_own_jobs(run_worker, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "LEASE_DURATION": 1.5, "HEARTBEAT_INTERVAL": 0.3}
    run_worker(2, 2)
    jobs = [tasks.hold.enqueue(n=n, seconds=4) for n in range(2)]
    wait_for(lambda: Job.objects.filter(status=Job.Status.IN_PROGRESS).count() == 2, 5)
    wait_for(lambda: all(status(j) == Job.Status.SUCCESSFUL for j in jobs), 15)
    assert not JobEvent.objects.filter(kind="retried").exists()  # no lease ran out
    assert list(Job.objects.values_list("attempts", flat=True)) == [1, 1]


def test_a_cancel_reaches_the_lane_running_the_attempt(run_worker):
    worker = run_worker(2, 2)
    first = tasks.hold.enqueue(n=1, seconds=3)
    wait_for(lambda: status(first) == Job.Status.IN_PROGRESS, 5)
    second = tasks.nap.enqueue(n=2, seconds=5)
    wait_for(lambda: status(second) == Job.Status.IN_PROGRESS, 2)
    lane = next(m for m in worker.loops if (second.pk, 1) in m.running)
    assert lane is not worker.loops[0]  # the listening lane was full
    assert cancel([second]) == [second.pk]
    wait_for(lambda: not lane.running, 2)
    assert status(second) == Job.Status.CANCELLED


def test_a_stopping_worker_waits_for_every_lane_to_release_its_jobs_then_unregisters(run_worker, settings):
    """The listening lane runs nothing, so its loop ends first; the row must outlive the other lane."""
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "SHUTDOWN_GRACE": 0.5}
    worker = run_worker(2, 2)
    first = tasks.nap.enqueue(n=1, seconds=20)
    wait_for(lambda: status(first) == Job.Status.IN_PROGRESS, 5)
    second = tasks.nap.enqueue(n=2, seconds=20)
    wait_for(lambda: status(second) == Job.Status.IN_PROGRESS, 2)
    cancel([first])
    wait_for(lambda: not worker.loops[0].running, 2)
    worker.stop()
    wait_for(lambda: claim_connections() == 0, 10)
    assert status(second) == Job.Status.PENDING
    assert JobEvent.objects.filter(kind="released", job=second).count() == 1
    assert not WorkerRow.objects.exists()
