"""Deployments driven by cron alone: the run endpoint called by pg_cron, or ``runworkers --burst``.

No ``runworkers`` process is alive while the cron-driven door works. Each test
runs its checks through both doors: POSTs to ``/queue/run`` (a worker inside the
request) and ``manage.py runworkers --burst`` processes, as cron would start
them. Between them they must do what a long-running worker does: recover the
job of a worker killed -9 mid-job, fire due schedules once per tick, prune
finished jobs, stop an attempt at its timeout, and renew the lease of a job
that runs longer than LEASE_DURATION.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from django_supaqueue.models import CurrentJob, Job, JobEvent, Schedule, ScheduleTick, Worker
from tests.factories import JobEventFactory, JobFactory, ScheduleFactory
from tests.helpers import WorkerProcesses, wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "cron-deployments-token"
LEASE = 2.0
HEARTBEAT = 0.3
#: The same short leases for the worker processes a test starts (tests/settings.py reads these).
FAST_LEASES = {"SUPAQUEUE_LEASE_DURATION": str(LEASE), "SUPAQUEUE_HEARTBEAT_INTERVAL": str(HEARTBEAT)}
WORKER_LOST = "django_supaqueue.exceptions.WorkerLost"


def post_run() -> None:
    """pg_cron's door: one POST to the run endpoint."""
    response = Client().post("/queue/run?queue=default&limit=10", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert response.status_code == 200, response.content


def burst_run(workers: WorkerProcesses) -> None:
    """cron's door: one ``runworkers --burst`` process, waited for."""
    proc = workers.start("--burst", "-c", "4", env=FAST_LEASES)
    assert proc.wait(60) == 0, workers.log(proc)


@pytest.fixture(params=["run endpoint", "runworkers --burst"])
def cron_run(request, worker_processes, settings) -> Callable[[], None]:
    """One run of the cron-driven door, as the timer would start it."""
    settings.SUPAQUEUE = {
        **settings.SUPAQUEUE,
        "API_TOKEN": TOKEN,
        "LEASE_DURATION": LEASE,
        "HEARTBEAT_INTERVAL": HEARTBEAT,
    }
    if request.param == "run endpoint":
        return post_run
    return functools.partial(burst_run, worker_processes)


def no_runworkers_alive(workers: WorkerProcesses) -> bool:
    return all(proc.poll() is not None for proc in workers.procs)


def run_until(cron_run: Callable[[], None], done: Callable[[], bool], timeout: float = 40.0) -> None:
    """Call the cron door again and again, as cron would, until ``done()``."""
    wait_for(lambda: cron_run() or done(), timeout=timeout, interval=0.2)


def in_background(call: Callable[[], None]) -> threading.Thread:
    """Run ``call`` on a thread that closes its database connections when it ends."""

    def target() -> None:
        try:
            call()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def make_due(schedule: Schedule, ago: timedelta) -> Schedule:
    """Owe the schedule the tick it would have fired ``ago`` (no worker was running then)."""
    Schedule.objects.filter(pk=schedule.pk).update(
        next_run_at=schedule.timing().next_after(timezone.now() - ago)
    )
    schedule.refresh_from_db()
    return schedule


def finished_hours_ago(hours: float) -> Job:
    """A successful job, with its event, finished ``hours`` ago."""
    job = JobFactory(status=Job.Status.SUCCESSFUL, finished_at=timezone.now() - timedelta(hours=hours))
    JobEventFactory(job=job, kind=JobEvent.Kind.SUCCEEDED)
    return job


# -- a worker killed mid-job ------------------------------------------------------------


def test_after_a_worker_is_killed_mid_job_cron_runs_alone_recover_it_fire_and_prune(
    cron_run, worker_processes
):
    job = tasks.hold.enqueue(n=1, seconds=1.5)
    victim = worker_processes.start("-c", "1", env=FAST_LEASES)
    wait_for(lambda: CurrentJob.objects.filter(job=job).exists(), 30)
    victim.kill()  # SIGKILL: nothing is released, the lease is left to expire
    victim.wait()
    assert no_runworkers_alive(worker_processes)
    # Made after the kill, so that only the cron runs can see them.
    schedule = make_due(ScheduleFactory(), timedelta(hours=1))
    old = finished_hours_ago(30)
    run_until(cron_run, lambda: Job.objects.get(pk=job.pk).status == Job.Status.SUCCESSFUL)
    job.refresh_from_db()
    assert job.attempts == 2
    lost = JobEvent.objects.get(job=job, kind=JobEvent.Kind.RETRIED)
    assert (lost.attempt, lost.error_class) == (1, WORKER_LOST)
    assert Execution.objects.filter(label="hold", n=1).count() == 1  # the killed attempt never finished
    assert ScheduleTick.objects.filter(schedule=schedule).count() == 1
    assert not Job.objects.filter(pk=old.pk).exists()
    run_until(cron_run, lambda: not Worker.objects.exists())  # the dead worker's row goes too
    assert ScheduleTick.objects.filter(schedule=schedule).count() == 1
    assert no_runworkers_alive(worker_processes)


# -- schedules -------------------------------------------------------------------------


def test_a_due_schedule_fires_once_and_its_job_runs(cron_run):
    schedule = make_due(
        ScheduleFactory(task_name="tests.testapp.tasks.record", payload={"n": 7, "label": "scheduled"}),
        timedelta(hours=1),
    )
    owed = schedule.next_run_at
    cron_run()
    cron_run()
    (tick,) = ScheduleTick.objects.filter(schedule=schedule)
    assert tick.tick_at >= owed and tick.job_id is not None
    assert Job.objects.get(pk=tick.job_id).status == Job.Status.SUCCESSFUL
    assert Execution.objects.filter(label="scheduled", n=7).count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now()


def test_racing_cron_runs_fire_each_tick_once(cron_run):
    schedules = [make_due(ScheduleFactory(), timedelta(hours=1)) for _ in range(5)]
    threads = [in_background(cron_run) for _ in range(3)]
    for thread in threads:
        thread.join(90)
    for schedule in schedules:
        assert ScheduleTick.objects.filter(schedule=schedule).count() == 1
    assert Job.objects.filter(task_name="tests.testapp.tasks.noop").count() == 5


def test_a_schedule_due_every_second_fires_each_tick_at_most_once(cron_run):
    """Every cron run fires what is due then, once: ticks never repeat and each has its job."""
    schedule = make_due(ScheduleFactory(cron="* * * * * *"), timedelta(seconds=5))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        cron_run()
    fired = list(ScheduleTick.objects.filter(schedule=schedule).values_list("tick_at", "job_id"))
    assert len(fired) >= 2
    assert len({at for at, _ in fired}) == len(fired) and len({job for _, job in fired}) == len(fired)
    assert Job.objects.filter(task_name="tests.testapp.tasks.noop").count() == len(fired)


# -- pruning, timeouts, leases ---------------------------------------------------------------


def test_finished_jobs_past_their_retention_are_pruned(cron_run):
    old = [finished_hours_ago(30) for _ in range(3)]
    recent = finished_hours_ago(1)
    cron_run()
    assert not Job.objects.filter(pk__in=[j.pk for j in old]).exists()
    assert not JobEvent.objects.filter(job_id__in=[j.pk for j in old]).exists()
    assert Job.objects.filter(pk=recent.pk).exists()


def test_an_attempt_is_stopped_at_its_task_timeout(cron_run):
    job = tasks.busy_loop.enqueue(n=1, seconds=4)  # timeout=0.5, max_attempts=1
    cron_run()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "JobTimeout" in job.last_error
    assert JobEvent.objects.get(job=job, kind=JobEvent.Kind.FAILED).duration < 1.5
    assert not Execution.objects.filter(label="busy_loop").exists()


def test_a_job_longer_than_its_lease_keeps_it_renewed_and_runs_once(cron_run):
    job = tasks.hold.enqueue(n=3, seconds=LEASE * 2.5)
    runner = in_background(cron_run)
    lease = wait_for(lambda: CurrentJob.objects.filter(job=job).first(), 30)
    first_expiry = lease.lease_expires_at
    time.sleep(LEASE + 0.5)  # the first lease has run out by now, had it not been renewed
    renewed = CurrentJob.objects.get(job=job)
    assert renewed.attempt == 1 and renewed.lease_expires_at > first_expiry
    cron_run()  # another cron run meanwhile, whose chores recover expired leases: this one is live
    runner.join(60)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.SUCCESSFUL, 1)
    assert not JobEvent.objects.filter(job=job, kind=JobEvent.Kind.RETRIED).exists()
    assert Execution.objects.filter(label="hold", n=3).count() == 1


# -- what only the run endpoint needs -------------------------------------------------------


@pytest.fixture
def run_endpoint(settings) -> Callable[[], None]:
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN}
    return post_run


def test_the_run_endpoint_syncs_the_schedules_declared_in_code_and_fires_them(run_endpoint, settings):
    """``runworkers`` syncs them at start-up; with pg_cron alone, the endpoint is the only worker."""
    declared = {"every-second": {"task": "tests.testapp.tasks.noop", "cron": "* * * * * *"}}
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "SCHEDULES": declared}
    run_until(run_endpoint, lambda: ScheduleTick.objects.filter(schedule__name="every-second").exists())
    assert Schedule.objects.get(name="every-second").origin == Schedule.Origin.CODE


def test_a_failed_jobs_call_with_nothing_to_retry_still_does_the_chores(run_endpoint):
    old = finished_hours_ago(30)
    response = Client().post("/queue/run?queue=default&status=failed&limit=5", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert response.status_code == 200 and response.json()["jobs"] == []
    assert not Job.objects.filter(pk=old.pk).exists()
