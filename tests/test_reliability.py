"""Breaking things for real: kill -9, dropped connections, cancels, timeouts and shutdowns.

Every test runs real ``runworkers`` processes against PostgreSQL and checks
the promise: no job is lost, and none runs while another attempt holds a
live lease.
"""

import contextlib
import os
import random
import signal
import time

import pytest
from django.db import connection
from django.db.models import Count

from django_supaqueue.models import CurrentJob, Job, JobEvent, Queue, Worker
from tests.factories import QueueFactory
from tests.helpers import job_statuses, wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

FAST_LEASES = {"SUPAQUEUE_LEASE_DURATION": "3", "SUPAQUEUE_HEARTBEAT_INTERVAL": "0.5"}


def succeeded_once(n: int) -> None:
    per_job = JobEvent.objects.filter(kind=JobEvent.Kind.SUCCEEDED).values("job").annotate(c=Count("id"))
    assert per_job.count() == n and {r["c"] for r in per_job} == {1}


def test_eight_processes_drain_20000_jobs_with_one_success_each(worker_processes):
    n = 20_000
    tasks.noop.enqueue_many([{"i": i} for i in range(n)])
    proc = worker_processes.start("--burst", "-p", "8", "-c", "4")
    assert proc.wait(240) == 0, worker_processes.log(proc)
    assert job_statuses() == {Job.Status.SUCCESSFUL: n}
    succeeded_once(n)
    assert Job.objects.filter(attempts=1).count() == n


def test_kill_9_mid_job_loses_nothing_and_shows_the_lost_attempts(worker_processes):
    jobs = tasks.hold.enqueue_many([{"n": i, "seconds": 1.0} for i in range(4)])
    victim = worker_processes.start("-c", "4", env=FAST_LEASES)
    wait_for(lambda: CurrentJob.objects.count() == 4, 20)
    victim.kill()  # SIGKILL: no chance to release anything
    victim.wait()
    started = time.monotonic()
    worker_processes.start("-c", "4", env=FAST_LEASES)
    wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: 4}, 30)
    assert time.monotonic() - started < 15  # lease 3 s: recovered well within a minute
    lost = JobEvent.objects.filter(
        job__in=jobs, error_class="django_supaqueue.exceptions.WorkerLost", kind=JobEvent.Kind.RETRIED
    )
    assert lost.count() == 4
    assert {j.attempts for j in Job.objects.all()} == {2}
    succeeded_once(4)


def test_terminated_database_connections_mid_drain_lose_nothing_and_run_nothing_twice(worker_processes):
    n = 1500
    tasks.record.enqueue_many([{"n": i} for i in range(n)])
    for _ in range(2):
        worker_processes.start("-c", "4", env=FAST_LEASES)
    terminated = 0
    for _ in range(3):
        wait_for(lambda: Execution.objects.count() > 0, 20)
        time.sleep(0.3)
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            terminated += cur.fetchone()[0]
    assert terminated >= 6  # each worker has a claim connection (it listens too) and job connections
    wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: n}, 60)
    runs = Execution.objects.values("n").annotate(c=Count("id"))
    assert runs.count() == n and {r["c"] for r in runs} == {1}
    succeeded_once(n)
    assert all(p.poll() is None for p in worker_processes.procs)  # they carried on


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_repeated_kills_of_random_workers_still_complete_every_job(worker_processes):
    n = 600
    tasks.hold.enqueue_many([{"n": i, "seconds": 0.05} for i in range(n)])
    supervisor = worker_processes.start("-p", "3", "-c", "3", env=FAST_LEASES)
    worker_processes.wait_ready(3)
    kills = 0
    deadline = time.monotonic() + 20
    while kills < 5 and time.monotonic() < deadline:  # a kill a second, while the others work
        pids = [p for p in Worker.objects.values_list("pid", flat=True) if p != supervisor.pid and alive(p)]
        if pids:
            with contextlib.suppress(ProcessLookupError):  # it may have died since
                os.kill(random.choice(pids), signal.SIGKILL)
                kills += 1
        time.sleep(1)
    assert kills >= 3
    wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: n}, 90)
    succeeded_once(n)


def test_process_mode_timeout_kills_a_task_blocked_in_c(worker_processes):
    QueueFactory(name="isolated", execution_mode=Queue.ExecutionMode.PROCESSES, timeout=1.0, max_attempts=1)
    worker_processes.start("-q", "isolated", "-c", "1")
    worker_processes.wait_ready(1)
    stuck = tasks.sleep_then_record.using(queue="isolated").enqueue(n=1, seconds=60)
    wait_for(lambda: CurrentJob.objects.filter(job=stuck).exists(), 20)  # first job starts a child
    started = time.monotonic()
    follower = tasks.whoami.using(queue="isolated").enqueue()
    wait_for(lambda: Job.objects.filter(pk=follower.pk, status=Job.Status.SUCCESSFUL).exists(), 15)
    assert time.monotonic() - started < 1.0 + 2.0 + 1.0  # timeout + 2 s, plus a fresh child's start-up
    stuck.refresh_from_db()
    assert stuck.status == Job.Status.FAILED and "JobTimeout" in stuck.last_error
    follower.refresh_from_db()
    worker = Worker.objects.get()
    assert follower.result != worker.pid  # it ran in a child process, not in the worker
    assert not Execution.objects.filter(label="sleep_then_record").exists()


def test_process_mode_records_results_and_a_dying_child(worker_processes):
    QueueFactory(name="isolated", execution_mode=Queue.ExecutionMode.PROCESSES)
    add = tasks.add.using(queue="isolated").enqueue(2, 2)
    crash = tasks.exit_process.using(queue="isolated").enqueue()
    after = tasks.add.using(queue="isolated").enqueue(3, 3)
    worker_processes.start("-q", "isolated", "-c", "1")
    wait_for(lambda: Job.objects.filter(status__in=["successful", "failed"]).count() == 3, 30)
    assert Job.objects.get(pk=add.pk).result == 4
    assert Job.objects.get(pk=after.pk).result == 6
    crash.refresh_from_db()
    assert crash.status == Job.Status.FAILED and "exited with code 3" in crash.last_error


def test_second_sigterm_during_the_grace_period_releases_at_once(worker_processes):
    proc = worker_processes.start("-c", "2", env={"SUPAQUEUE_SHUTDOWN_GRACE": "30"})
    worker_processes.wait_ready(1)
    job = tasks.hold.enqueue(n=1, seconds=20)
    wait_for(lambda: CurrentJob.objects.filter(job=job).exists(), 10)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still waiting for its job, as the grace period allows
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert time.monotonic() - started < 3
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and job.attempts == 0 and not CurrentJob.objects.exists()
    assert JobEvent.objects.filter(job=job, kind=JobEvent.Kind.RELEASED).count() == 1
    assert not Worker.objects.exists()
