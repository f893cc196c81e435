"""An interrupted attempt (timeout, cancel, shutdown) keeps its job until its body has really stopped.

Real ``runworkers`` processes and real task bodies: each run of a body is an
Execution row written when it starts, with ``ended`` written in ``finally``
when it really stops, so overlapping runs of one job show in the table.
"""

import signal
import time

import pytest

from django_supaqueue import cancel
from django_supaqueue.models import CurrentJob, Job, JobEvent, Queue
from tests.factories import QueueFactory
from tests.helpers import finished, runs, wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

FAST_LEASES = {"SUPAQUEUE_LEASE_DURATION": "3", "SUPAQUEUE_HEARTBEAT_INTERVAL": "0.5"}


def test_a_timed_out_body_blocked_in_c_keeps_its_job_until_it_stops_then_is_retried(worker_processes):
    worker_processes.start("-c", "3")
    worker_processes.wait_ready(1)
    job = tasks.blocked_past_timeout.enqueue(n=1, seconds=4)  # timeout 1 s, two attempts
    wait_for(lambda: runs("blocked"), 20)
    time.sleep(2.0)  # timed out a second ago; the body sleeps on
    job.refresh_from_db()
    assert job.status == Job.Status.IN_PROGRESS and job.attempts == 1
    assert CurrentJob.objects.filter(job=job, attempt=1).exists()  # the lease is kept, and renewed
    assert len(runs("blocked")) == 1
    wait_for(lambda: finished(job), 30)
    first, second = runs("blocked")
    assert first.ended is not None and second.started >= first.ended  # never two bodies at once
    assert job.status == Job.Status.FAILED and job.attempts == 2
    retried = JobEvent.objects.get(job=job, kind=JobEvent.Kind.RETRIED)
    assert retried.error_class == "django_supaqueue.exceptions.JobTimeout"
    assert "timeout of 1s" in retried.error_message and "stopped 3." in retried.error_message
    assert retried.duration >= 3.9  # how long the body really ran


def test_a_task_that_catches_exception_cannot_swallow_its_timeout(worker_processes):
    worker_processes.start("-c", "1")
    job = tasks.swallows_everything.enqueue(n=1)  # timeout 0.5 s around a 3 s loop
    wait_for(lambda: finished(job), 20)
    assert job.status == Job.Status.FAILED and "JobTimeout" in job.last_error
    (run,) = runs("swallows")
    assert run.ended is not None and run.ended - run.started < 1.5  # stopped, not run to its end


def test_a_timeout_acts_on_the_attempt_by_its_own_mode_beside_a_processes_queue(worker_processes):
    QueueFactory(name="isolated", execution_mode=Queue.ExecutionMode.PROCESSES)
    QueueFactory(name="short", timeout=0.5, max_attempts=1)
    worker_processes.start("-q", "isolated", "-q", "short", "-c", "1")  # one slot serves both
    before = tasks.add.using(queue="isolated").enqueue(1, 1)
    wait_for(lambda: finished(before), 30)  # the slot now keeps a child process
    napping = tasks.nap.using(queue="short").enqueue(n=1, seconds=3)
    wait_for(lambda: finished(napping), 20)
    assert napping.status == Job.Status.FAILED and "JobTimeout" in napping.last_error
    (run,) = runs("nap")
    assert run.ended is not None and run.ended - run.started < 1.5  # its thread was interrupted
    after = tasks.add.using(queue="isolated").enqueue(2, 2)
    wait_for(lambda: finished(after), 30)
    assert after.status == Job.Status.SUCCESSFUL and after.result == 4  # the child was not killed


def test_a_processes_mode_timeout_counts_from_the_start_of_the_body_not_of_a_fresh_child(worker_processes):
    QueueFactory(name="isolated", execution_mode=Queue.ExecutionMode.PROCESSES, timeout=1.5, max_attempts=1)
    worker_processes.start("-q", "isolated", "-c", "1")
    job = tasks.nap.using(queue="isolated").enqueue(n=1, seconds=1.0)  # its slot's first child starts now
    wait_for(lambda: finished(job), 30)
    assert job.status == Job.Status.SUCCESSFUL, job.last_error
    assert job.result == "finished"


def test_a_cancelled_body_blocked_in_c_holds_its_lease_and_slot_until_it_stops(worker_processes):
    worker_processes.start("-c", "1")
    worker_processes.wait_ready(1)
    blocked = tasks.sleeps.enqueue(n=1, seconds=3)
    wait_for(lambda: runs("sleeps"), 20)
    assert cancel([blocked]) == [blocked.pk]
    follower = tasks.nap.enqueue(n=2, seconds=0, label="follower")
    time.sleep(1.0)
    blocked.refresh_from_db()
    assert blocked.status == Job.Status.CANCELLED
    assert CurrentJob.objects.filter(job=blocked).exists()  # held until its body stops
    assert not runs("follower")  # the only slot is still busy
    wait_for(lambda: finished(follower), 20)
    (body,), (after,) = runs("sleeps"), runs("follower")
    assert after.started >= body.ended
    assert not CurrentJob.objects.exists()
    blocked.refresh_from_db()
    assert blocked.status == Job.Status.CANCELLED  # the late end changed nothing
    stopped = JobEvent.objects.get(job=blocked, kind=JobEvent.Kind.STOPPED)
    assert stopped.error_class == "django_supaqueue.exceptions.JobCancelled"
    assert stopped.at > JobEvent.objects.get(job=blocked, kind=JobEvent.Kind.CANCELLED).at


def test_a_cancelled_body_in_python_stops_at_once_and_frees_its_slot(worker_processes):
    worker_processes.start("-c", "1")
    worker_processes.wait_ready(1)
    napping = tasks.nap.enqueue(n=1, seconds=10)
    wait_for(lambda: runs("nap"), 20)
    started = time.monotonic()
    assert cancel([napping]) == [napping.pk]
    follower = tasks.record.enqueue(n=2)
    wait_for(lambda: finished(follower), 10)
    assert time.monotonic() - started < 2.0
    (run,) = runs("nap")
    assert run.ended is not None and run.ended - run.started < 3  # interrupted, not run for 10 s
    napping.refresh_from_db()
    assert napping.status == Job.Status.CANCELLED and napping.result is None
    assert JobEvent.objects.filter(job=napping, kind=JobEvent.Kind.STOPPED).count() == 1


def test_a_thread_that_will_not_stop_makes_its_process_exit_and_its_job_is_recovered(worker_processes):
    env = {**FAST_LEASES, "SUPAQUEUE_INTERRUPT_GRACE": "1"}
    stuck = worker_processes.start("-c", "2", env=env)
    job = tasks.blocked_past_timeout.enqueue(n=1, seconds=12)  # timeout 1 s, blocked for 12
    assert stuck.wait(20) == 1, worker_processes.log(stuck)  # timeout at 1 s + a grace of 1 s
    exited = time.time()
    assert "has not stopped" in worker_processes.log(stuck)
    job.refresh_from_db()
    assert job.status == Job.Status.IN_PROGRESS  # not released: its attempt counts
    rescuer = worker_processes.start("-c", "2", env=env)
    wait_for(lambda: len(runs("blocked")) == 2, 20)
    first, second = runs("blocked")
    assert second.started >= exited  # the second attempt began only once the first process was gone
    lost = JobEvent.objects.get(job=job, kind=JobEvent.Kind.RETRIED, attempt=1)
    assert lost.error_class == "django_supaqueue.exceptions.WorkerLost"
    rescuer.send_signal(signal.SIGTERM)
    rescuer.send_signal(signal.SIGTERM)
    rescuer.wait(20)


def test_the_grace_period_end_releases_a_body_that_stops_for_an_immediate_retry(worker_processes):
    proc = worker_processes.start("-c", "2", env={"SUPAQUEUE_SHUTDOWN_GRACE": "1"})
    worker_processes.wait_ready(1)
    slow = tasks.nap.enqueue(n=1, seconds=20)
    quick = tasks.nap.enqueue(n=2, seconds=0.3)
    wait_for(lambda: len(runs("nap")) == 2, 10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(6) == 0
    assert Job.objects.get(pk=quick.pk).status == Job.Status.SUCCESSFUL
    slow.refresh_from_db()
    assert slow.status == Job.Status.PENDING and slow.attempts == 0
    worker_processes.start("--burst", "-c", "1")
    wait_for(lambda: CurrentJob.objects.filter(job=slow).exists(), 10)  # runnable at once


def test_the_grace_period_end_leaves_a_body_blocked_in_c_behind_and_exits(worker_processes):
    proc = worker_processes.start("-c", "1", env={"SUPAQUEUE_SHUTDOWN_GRACE": "1"})
    blocked = tasks.sleeps.enqueue(n=1, seconds=20)
    wait_for(lambda: runs("sleeps"), 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(8) == 0  # the grace, a second for the thread, then the process exit ends it
    exited = time.time()
    blocked.refresh_from_db()
    assert blocked.status == Job.Status.PENDING and blocked.attempts == 0
    assert not CurrentJob.objects.exists()
    released = JobEvent.objects.get(job=blocked, kind=JobEvent.Kind.RELEASED)
    assert "would not stop" in released.error_message
    worker_processes.start("-c", "1")
    wait_for(lambda: len(runs("sleeps")) == 2, 20)
    assert runs("sleeps")[1].started >= exited  # not before the first body's process was gone


def test_a_worker_that_does_not_listen_stops_a_cancelled_body_at_its_next_heartbeat(worker_processes):
    """Without LISTEN the cancel's NOTIFY never arrives: the heartbeat finds the job cancelled."""
    worker_processes.start("-c", "1", env={"SUPAQUEUE_TEST_LISTEN": "0"})
    worker_processes.wait_ready(1)
    napping = tasks.nap.enqueue(n=1, seconds=20)
    wait_for(lambda: runs("nap"), 20)
    assert cancel([napping]) == [napping.pk]
    wait_for(lambda: runs("nap")[0].ended is not None, 10)  # heartbeats come every 1 s here
    (run,) = runs("nap")
    assert run.ended - run.started < 10
    wait_for(lambda: JobEvent.objects.filter(job=napping, kind=JobEvent.Kind.STOPPED).exists(), 10)
    napping.refresh_from_db()
    assert napping.status == Job.Status.CANCELLED and napping.result is None
