"""``async def`` tasks: run to their end on the job thread's event loop, stopped by cancellation.

Real ``runworkers`` processes run most of these; each run of a body that can
be interrupted is an Execution row whose ``ended`` is written in ``finally``,
so a body cancelled at its ``await`` shows that it unwound, and when.
"""

import time

import pytest
from asgiref.sync import async_to_sync

from django_supaqueue import cancel
from django_supaqueue.models import Job, JobEvent
from django_supaqueue.testing import run_pending
from tests.factories import QueueFactory
from tests.helpers import finished, runs, wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_pending_runs_an_async_task_and_stores_what_it_returns():
    job = tasks.async_double.enqueue(21)
    run_pending()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.result == 42
    assert [r.n for r in runs("async_double")] == [21]  # its ORM call through the async API ran


@pytest.mark.django_db(transaction=False)
def test_run_pending_runs_an_async_tasks_queries_in_the_tests_transaction():
    """Its sync_to_async calls run on the calling thread, so a TestCase sees them and rolls them back."""
    job = tasks.async_double.enqueue(5)
    run_pending()
    job.refresh_from_db()
    assert job.result == 10 and [r.n for r in runs("async_double")] == [5]


def test_a_calling_process_can_await_an_async_task_directly():
    assert async_to_sync(tasks.async_double)(4) == 8  # the decorator leaves the coroutine function alone


def test_workers_run_async_tasks_beside_plain_ones_and_retry_their_failures(worker_processes):
    worker_processes.start("-c", "4")
    doubled = [tasks.async_double.enqueue(n) for n in range(20)]
    plain = [tasks.add.enqueue(n, 1) for n in range(5)]
    failing = tasks.async_fails.enqueue(7)
    for job in [*doubled, *plain, failing]:
        wait_for(lambda job=job: finished(job), 30)
    assert [job.result for job in doubled] == [n * 2 for n in range(20)]
    assert [job.result for job in plain] == [n + 1 for n in range(5)]
    assert sorted(r.n for r in runs("async_double")) == list(range(20))  # each body ran once
    assert failing.status == Job.Status.FAILED and failing.attempts == 2
    retried = JobEvent.objects.get(job=failing, kind=JobEvent.Kind.RETRIED)
    assert retried.error_class == "ValueError" and retried.error_message == "async failure 7"
    assert "async_fails" in retried.traceback


def test_a_timeout_cancels_an_async_body_at_its_await_and_its_finally_runs(worker_processes):
    worker_processes.start("-c", "2")
    job = tasks.async_past_timeout.enqueue(n=1, seconds=10)  # timeout 0.5 s
    wait_for(lambda: finished(job), 20)
    assert job.status == Job.Status.FAILED and "JobTimeout" in job.last_error
    (run,) = runs("async_timeout")
    assert run.ended is not None and run.ended - run.started < 2  # cancelled, not slept for 10 s


def test_an_async_body_that_swallows_its_cancellation_still_ends_by_its_timeout(worker_processes):
    worker_processes.start("-c", "1")
    job = tasks.async_swallows_cancellation.enqueue(n=1)
    wait_for(lambda: finished(job), 20)
    assert job.status == Job.Status.FAILED and job.result is None
    failed = JobEvent.objects.get(job=job, kind=JobEvent.Kind.FAILED)
    assert failed.error_class == "django_supaqueue.exceptions.JobTimeout"


def test_cancel_stops_a_running_async_body_at_once_and_frees_its_slot(worker_processes):
    worker_processes.start("-c", "1")
    worker_processes.wait_ready(1)
    napping = tasks.async_naps.enqueue(n=1, seconds=10)
    wait_for(lambda: runs("async_naps"), 20)
    started = time.monotonic()
    assert cancel([napping]) == [napping.pk]
    follower = tasks.async_double.enqueue(2)
    wait_for(lambda: finished(follower), 10)
    assert time.monotonic() - started < 3.0
    (run,) = runs("async_naps")
    assert run.ended is not None and run.ended - run.started < 4  # unwound at its await
    napping.refresh_from_db()
    assert napping.status == Job.Status.CANCELLED and napping.result is None
    assert JobEvent.objects.get(job=napping, kind=JobEvent.Kind.STOPPED).error_class == (
        "django_supaqueue.exceptions.JobCancelled"
    )


def test_the_same_job_thread_runs_one_async_body_after_another(worker_processes):
    """The thread keeps its event loop; a body cancelled on it does not resume in the next attempt."""
    worker_processes.start("-c", "1")
    first = tasks.async_past_timeout.enqueue(n=1, seconds=10)
    wait_for(lambda: finished(first), 20)
    then = [tasks.async_naps.enqueue(n=n, seconds=0.05, label="after") for n in range(3)]
    for job in then:
        wait_for(lambda job=job: finished(job), 20)
        assert job.result == "finished"
    assert len(runs("async_timeout")) == 1 and len(runs("after")) == 3


@pytest.mark.django6
def test_a_queue_timeout_cancels_a_django_async_task(supaqueue):
    from tests.testapp import django_tasks as dt

    QueueFactory(name="slow-async", timeout=0.3, max_attempts=1)
    result = dt.async_sleep.using(queue_name="slow-async").enqueue(10)
    started = time.monotonic()
    supaqueue.run_worker(queues=["slow-async"])
    assert time.monotonic() - started < 5  # cancelled at its await, not run for 10 s
    result.refresh()
    assert result.status == "FAILED"
    assert [e.exception_class_path for e in result.errors] == ["django_supaqueue.exceptions.JobTimeout"]
