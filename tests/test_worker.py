"""An in-process worker running real jobs: results, retries, final failure, burst, timeouts."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from django_supaqueue.models import CurrentJob, Job, JobEvent
from tests.factories import JobFactory, QueueFactory
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def kinds(job):
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("kind", flat=True))


def test_results_are_stored_as_json(drain):
    add = tasks.add.enqueue(2, 3)
    email = tasks.send_email.enqueue(to="ada@example.com")
    nothing = tasks.noop.enqueue()
    drain()
    for job, result in ((add, 5), (email, "sent to ada@example.com"), (nothing, None)):
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCESSFUL and job.result == result
        assert job.attempts == 1 and job.started_at and job.finished_at
        assert kinds(job) == ["started", "succeeded"]
    assert not CurrentJob.objects.exists()


def test_a_failing_job_is_retried_until_it_succeeds(drain):
    job = tasks.flaky.enqueue(n=1, failures=2)
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 3 and job.result == {"runs": 3}
    assert kinds(job) == ["started", "retried", "started", "retried", "started", "succeeded"]
    retried = JobEvent.objects.filter(job=job, kind="retried").first()
    assert retried.error_class == "RuntimeError" and "flaky failure 1" in retried.traceback


def test_a_job_that_keeps_failing_fails_for_good_after_max_attempts(drain):
    job = tasks.always_fails.enqueue()
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 2
    assert job.last_error == "ValueError: this task always fails"
    assert kinds(job) == ["started", "retried", "started", "failed"]


def test_burst_leaves_jobs_waiting_for_backoff_or_run_at(drain, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "RETRY_BACKOFF": 60.0}
    retrying = tasks.flaky.enqueue(n=2, failures=1)
    later = tasks.noop.enqueue(run_at=timedelta(minutes=10))
    started = time.monotonic()
    drain()
    assert time.monotonic() - started < 5
    retrying.refresh_from_db()
    later.refresh_from_db()
    assert retrying.status == Job.Status.PENDING and retrying.run_at > timezone.now() + timedelta(seconds=20)
    assert later.status == Job.Status.PENDING and later.attempts == 0


def test_burst_serves_only_its_queues_and_skips_held_jobs_and_paused_queues(drain):
    QueueFactory(name="paused", paused=True)
    in_paused = tasks.noop.using(queue="paused").enqueue()
    other = tasks.noop.using(queue="other").enqueue()
    held = JobFactory(enabled=False)
    mine = tasks.noop.enqueue()
    drain(queues=["default", "paused"])
    statuses = dict(Job.objects.values_list("id", "status"))
    assert statuses[mine.id] == Job.Status.SUCCESSFUL
    assert statuses[in_paused.id] == statuses[other.id] == statuses[held.id] == Job.Status.PENDING


def test_a_result_that_is_not_json_fails_the_attempt_clearly(drain):
    job = tasks.returns_unserialisable.enqueue()
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "not JSON-serialisable" in job.last_error


def test_an_unknown_task_is_recorded_as_a_failure_not_a_crash(drain):
    job = JobFactory(task_name="tests.testapp.tasks.removed_since", max_attempts=1)
    ok = tasks.noop.enqueue()
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.last_error.startswith("django_supaqueue.exceptions.UnknownTask")
    assert Job.objects.get(pk=ok.pk).status == Job.Status.SUCCESSFUL


def test_a_payload_that_no_longer_fits_the_function_fails_clearly(drain):
    job = JobFactory(task_name="tests.testapp.tasks.add", payload={"a": 1, "z": 2}, max_attempts=1)
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.last_error.startswith("TypeError")


def test_every_job_runs_once_with_concurrent_threads(drain):
    tasks.record.enqueue_many([{"n": n} for n in range(300)])
    drain(concurrency=8)
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 300
    assert sorted(Execution.objects.values_list("n", flat=True)) == list(range(300))


def test_thread_mode_timeout_stops_a_busy_loop_and_frees_its_slot(drain):
    job = tasks.busy_loop.enqueue(n=1, seconds=3)  # timeout=0.5, max_attempts=1
    after = tasks.record.enqueue(n=2)
    started = time.monotonic()
    drain(concurrency=1)
    assert time.monotonic() - started < 2.5  # slot freed at the timeout, not after the loop
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.last_error.startswith("django_supaqueue.exceptions.JobTimeout")
    assert Job.objects.get(pk=after.pk).status == Job.Status.SUCCESSFUL
    time.sleep(max(0.0, 3.5 - (time.monotonic() - started)))
    assert not Execution.objects.filter(label="busy_loop").exists()  # the loop really stopped


def test_queue_timeout_applies_to_its_jobs(drain):
    QueueFactory(name="short", timeout=0.3, max_attempts=1)
    job = tasks.hold.using(queue="short").enqueue(n=1, seconds=0.05)
    slow = tasks.busy_loop.using(queue="short").enqueue(n=2, seconds=2)
    drain(queues=["short"])
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCESSFUL
    assert Job.objects.get(pk=slow.pk).status == Job.Status.FAILED


def test_a_task_module_that_raises_at_import_is_a_recorded_failure(drain):
    job = JobFactory(task_name="tests.testapp.broken_tasks.anything", max_attempts=1)
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.last_error == "RuntimeError: broken_tasks cannot be imported"


def test_cancelling_a_pending_job_means_it_never_runs(drain):
    from django_supaqueue import cancel

    job = tasks.record.enqueue(n=1)
    done = tasks.add.enqueue(1, 1)
    Job.objects.filter(pk=done.pk).update(status=Job.Status.SUCCESSFUL)
    assert cancel([job, done.pk], reason="not needed") == [job.pk]
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.finished_at
    assert not Execution.objects.exists()
    event = JobEvent.objects.get(job=job)
    assert event.kind == JobEvent.Kind.CANCELLED and event.error_message == "not needed"
    assert Job.objects.get(pk=done.pk).status == Job.Status.SUCCESSFUL


def test_a_capped_queue_refills_as_soon_as_a_job_finishes(transactional_db):
    import threading

    from django_supaqueue.worker.process import WorkerProcess
    from tests.helpers import wait_for

    QueueFactory(name="one-at-a-time", concurrency_limit=1)
    tasks.hold.using(queue="one-at-a-time").enqueue_many([{"n": i, "seconds": 0.2} for i in range(3)])
    worker = WorkerProcess(concurrency=3, poll_interval=30)  # no poll will come to the rescue
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 3, 5)
    finally:
        worker.stop()
        thread.join(10)


def test_a_cap_set_while_a_worker_runs_holds_from_its_next_claim(transactional_db):
    """A worker that served no capped queue claims without the cap lock; a new cap must still hold."""
    import threading

    from django_supaqueue.models import Queue
    from django_supaqueue.worker.process import WorkerProcess
    from tests.helpers import wait_for
    from tests.testapp.models import Execution

    QueueFactory(name="later-capped")
    worker = WorkerProcess(concurrency=3, poll_interval=30)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        tasks.noop.using(queue="later-capped").enqueue(i=0)
        wait_for(lambda: worker.processed == 1, 5)
        # every claim lane has claimed since, and leaves the lock out now
        wait_for(lambda: all(lane.capped is False for lane in worker.loops), 5)
        Queue.objects.filter(name="later-capped").update(concurrency_limit=1)
        tasks.hold.using(queue="later-capped").enqueue_many([{"n": i, "seconds": 0.15} for i in range(4)])
        wait_for(lambda: Execution.objects.count() == 4, 10)
    finally:
        worker.stop()
        thread.join(10)
    intervals = sorted(Execution.objects.values_list("started", "ended"))
    assert all(
        end <= next_start + 0.01 for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False)
    )
