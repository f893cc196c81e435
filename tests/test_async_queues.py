"""Async queues: ``async def`` tasks as coroutines on a worker's event loop, beyond its ``-c`` threads.

Real ``runworkers`` processes; each run of a body that records itself is an
Execution row (``started``, and ``ended`` written in ``finally``), so the rows
show how many bodies ran at once and that a cancelled one unwound.
"""

import pytest

from django_supaqueue import cancel
from django_supaqueue.models import Job, JobEvent, Queue
from tests.factories import QueueFactory
from tests.helpers import finished, runs, wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def aq():
    return QueueFactory(name="aq", execution_mode=Queue.ExecutionMode.ASYNC)


def most_at_once(executions: list[Execution]) -> int:
    edges = sorted([(e.started, 1) for e in executions] + [(e.ended, -1) for e in executions])
    at_once = most = 0
    for _, step in edges:
        at_once += step
        most = max(most, at_once)
    return most


def test_an_async_queue_runs_far_more_bodies_at_once_than_the_worker_has_threads(aq, worker_processes):
    worker_processes.start("-c", "2", "-a", "100")
    jobs = [tasks.async_naps.using(queue="aq").enqueue(n=n, seconds=0.5, label="overlap") for n in range(150)]
    for job in jobs:
        wait_for(lambda job=job: finished(job), 60)
    assert {job.status for job in jobs} == {Job.Status.SUCCESSFUL}
    assert all(job.result == "finished" for job in jobs)
    executions = runs("overlap")
    assert sorted(e.n for e in executions) == list(range(150))  # each body ran once
    assert most_at_once(executions) > 20  # coroutines, not the two threads


def test_a_timeout_and_a_cancel_stop_async_queue_bodies_at_their_await(aq, worker_processes):
    worker_processes.start("-c", "1", "-a", "10")
    worker_processes.wait_ready(1)
    timed_out = tasks.async_past_timeout.using(queue="aq").enqueue(n=1, seconds=10)  # timeout 0.5 s
    swallowing = tasks.async_swallows_cancellation.using(queue="aq").enqueue(n=2)
    napping = tasks.async_naps.using(queue="aq").enqueue(n=3, seconds=10)
    wait_for(lambda: runs("async_naps"), 20)
    assert cancel([napping]) == [napping.pk]
    for job in (timed_out, swallowing, napping):
        wait_for(lambda job=job: finished(job), 20)
    assert timed_out.status == Job.Status.FAILED and "JobTimeout" in timed_out.last_error
    (run,) = runs("async_timeout")
    assert run.ended is not None and run.ended - run.started < 3  # cancelled at its await, its finally ran
    assert swallowing.status == Job.Status.FAILED and swallowing.result is None  # caught it, failed anyway
    assert JobEvent.objects.get(job=swallowing, kind=JobEvent.Kind.FAILED).error_class == (
        "django_supaqueue.exceptions.JobTimeout"
    )
    assert napping.status == Job.Status.CANCELLED
    (nap,) = runs("async_naps")
    assert nap.ended is not None and nap.ended - nap.started < 5
    assert JobEvent.objects.get(job=napping, kind=JobEvent.Kind.STOPPED).error_class == (
        "django_supaqueue.exceptions.JobCancelled"
    )


def test_a_plain_function_on_an_async_queue_fails_for_good_saying_why(aq, worker_processes):
    worker_processes.start("-c", "1", "-a", "10")
    job = tasks.add.using(queue="aq", max_attempts=5).enqueue(1, 2)
    wait_for(lambda: finished(job), 20)
    assert job.status == Job.Status.FAILED and job.attempts == 1  # not retried: it would fail the same way
    failure = JobEvent.objects.get(job=job, kind=JobEvent.Kind.FAILED)
    assert failure.error_class == "django_supaqueue.exceptions.NotACoroutine"
    assert "not an async def function" in failure.error_message and "threads queue" in failure.error_message


def test_a_coroutine_that_blocks_the_loop_is_noted_with_the_blocking_call(aq, worker_processes):
    worker_processes.start("-c", "1", "-a", "10")
    worker_processes.wait_ready(1)
    blocking = tasks.async_blocks.using(queue="aq").enqueue(n=1, seconds=2)
    beside = tasks.async_double.using(queue="aq").enqueue(4)
    for job in (blocking, beside):
        wait_for(lambda job=job: finished(job), 20)
    assert blocking.status == Job.Status.SUCCESSFUL and blocking.result == 1  # noted, not stopped
    assert beside.status == Job.Status.SUCCESSFUL and beside.result == 8
    (note,) = JobEvent.objects.filter(job=blocking, kind=JobEvent.Kind.BLOCKED)
    assert note.attempt == 1 and note.worker_name and note.duration >= 0.5
    assert "blocked the worker's event loop" in note.error_message
    assert "time.sleep(seconds)" in note.traceback  # the stack shows the call that blocks
    assert not JobEvent.objects.filter(job=beside, kind=JobEvent.Kind.BLOCKED).exists()
    assert "blocked the worker's event loop" in worker_processes.log(worker_processes.procs[0])


def test_without_an_async_lane_an_async_queue_runs_on_the_threads(aq, supaqueue, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "ASYNC_CONCURRENCY": 0}
    job = tasks.async_double.using(queue="aq").enqueue(6)
    supaqueue.run_worker(queues=["aq"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.result == 12


@pytest.mark.django6
def test_a_django_async_task_runs_on_an_async_queue_with_djangos_signals(aq, supaqueue):
    from django.tasks.signals import task_finished, task_started

    from tests.testapp import django_tasks as dt

    seen = []

    def started(sender, task_result, **kwargs):
        seen.append(("started", task_result.status))

    def ended(sender, task_result, **kwargs):
        seen.append(("finished", task_result.status))

    task_started.connect(started)
    task_finished.connect(ended)
    try:
        result = dt.async_add.using(queue_name="aq").enqueue(2, 3)
        supaqueue.run_worker(queues=["aq"])
    finally:
        task_started.disconnect(started)
        task_finished.disconnect(ended)
    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 5
    assert seen == [("started", "RUNNING"), ("finished", "SUCCESSFUL")]


def test_supaqueue_queues_can_make_a_queue_async_when_it_is_created(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "QUEUES": {"feeds": {"execution_mode": "async"}}}
    tasks.async_double.using(queue="feeds").enqueue(1)
    tasks.add.using(queue="plain").enqueue(1, 2)
    assert Queue.objects.get(name="feeds").execution_mode == Queue.ExecutionMode.ASYNC
    assert Queue.objects.get(name="plain").execution_mode == Queue.ExecutionMode.THREADS


def test_caps_and_serial_order_hold_for_async_queues_across_worker_processes(worker_processes):
    QueueFactory(name="aq-capped", execution_mode=Queue.ExecutionMode.ASYNC, concurrency_limit=3)
    QueueFactory(name="aq-serial", execution_mode=Queue.ExecutionMode.ASYNC, serial=True)
    capped = [
        tasks.async_naps.using(queue="aq-capped").enqueue(n=n, seconds=0.2, label="capped") for n in range(24)
    ]
    in_order = tasks.async_naps.using(queue="aq-serial")
    serial = [in_order.enqueue(n=n, seconds=0.05, label="serial") for n in range(12)]
    for _ in range(2):
        worker_processes.start("-c", "1", "-a", "50")
    for job in [*capped, *serial]:
        wait_for(lambda job=job: finished(job), 60)
    assert {job.status for job in [*capped, *serial]} == {Job.Status.SUCCESSFUL}
    assert 1 < most_at_once(runs("capped")) <= 3
    assert most_at_once(runs("serial")) == 1
    assert [r.n for r in runs("serial")] == list(range(12))  # in order
