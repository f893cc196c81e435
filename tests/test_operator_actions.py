"""The operator's actions (queue/actions.py): retry now, run now, hold, release, delete, pause, resume."""

from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from django_supaqueue import queue
from django_supaqueue.models import Job, JobEvent, Queue
from tests.factories import CurrentJobFactory, JobEventFactory, JobFactory, QueueFactory
from tests.helpers import database_url
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def kinds(job):
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("kind", flat=True))


def test_retry_now_makes_a_failed_job_pending_now_with_one_more_attempt():
    job = JobFactory(status="failed", attempts=5, max_attempts=5, run_at=timezone.now() - timedelta(days=1))
    assert queue.retry_now([job], reason="by ada in the admin") == [job.pk]
    job.refresh_from_db()
    assert job.status == "pending" and job.max_attempts == 6 and job.finished_at is None
    assert abs((job.run_at - timezone.now()).total_seconds()) < 5
    event = JobEvent.objects.get(job=job)
    assert (
        event.kind == "manual_retry" and event.error_message == "by ada in the admin" and event.attempt == 5
    )


def test_retry_now_keeps_max_attempts_when_attempts_are_left():
    job = JobFactory(status="cancelled", attempts=1, max_attempts=5)
    queue.retry_now([job.pk])
    job.refresh_from_db()
    assert job.status == "pending" and job.max_attempts == 5


def test_retry_now_cuts_a_retry_back_off_short():
    waiting = JobFactory(attempts=1, run_at=timezone.now() + timedelta(hours=1))
    assert queue.retry_now([waiting]) == [waiting.pk]
    waiting.refresh_from_db()
    assert waiting.run_at <= timezone.now() and kinds(waiting) == ["manual_retry"]


def test_retry_now_un_holds_the_job():
    job = JobFactory(status="cancelled", enabled=False, attempts=0)
    queue.retry_now([job])
    job.refresh_from_db()
    assert job.enabled and job.status == "pending"


def test_retry_now_leaves_successful_running_and_never_tried_jobs_alone():
    done = JobFactory(status="successful", attempts=1)
    running = CurrentJobFactory().job
    fresh = JobFactory(run_at=timezone.now() + timedelta(hours=1))
    assert queue.retry_now([done, running, fresh]) == []
    assert not JobEvent.objects.exists()


def test_a_retried_job_keeps_its_key_unless_a_pending_job_holds_it():
    keeps = JobFactory(status="failed", key="report:1")
    loses = JobFactory(status="failed", key="report:2")
    JobFactory(key="report:2")
    queue.retry_now([keeps, loses])
    keeps.refresh_from_db()
    loses.refresh_from_db()
    assert keeps.key == "report:1" and keeps.status == "pending"
    assert loses.key is None and loses.status == "pending"


def test_two_failed_jobs_with_one_key_retried_together_leave_the_key_to_one():
    older = JobFactory(status="failed", key="sync")
    newer = JobFactory(status="failed", key="sync")
    assert queue.retry_now([older, newer]) == sorted([older.pk, newer.pk])
    assert list(Job.objects.filter(key="sync").values_list("id", flat=True)) == [newer.pk]


def test_run_now_brings_a_future_job_forward_and_leaves_it_held_if_held():
    later = JobFactory(run_at=timezone.now() + timedelta(hours=1))
    held = JobFactory(run_at=timezone.now() + timedelta(hours=1), enabled=False)
    due = JobFactory(run_at=timezone.now() - timedelta(minutes=1))
    assert queue.run_now([later, held, due]) == sorted([later.pk, held.pk])
    later.refresh_from_db()
    held.refresh_from_db()
    assert later.run_at <= timezone.now() and not held.enabled
    assert kinds(later) == ["run_now"] and kinds(due) == []


def test_hold_and_release_toggle_enabled_on_pending_jobs_only():
    pending = JobFactory()
    failed = JobFactory(status="failed")
    assert queue.hold([pending, failed]) == [pending.pk]
    assert queue.hold([pending]) == []  # already held: no second event
    pending.refresh_from_db()
    assert not pending.enabled
    assert queue.release_hold([pending, failed]) == [pending.pk]
    pending.refresh_from_db()
    assert pending.enabled and kinds(pending) == ["held", "hold_released"]


def test_delete_removes_jobs_and_their_history_but_not_running_jobs():
    done = JobEventFactory(kind="succeeded", job=JobFactory(status="successful")).job
    running = CurrentJobFactory().job
    assert queue.delete([done, running]) == [done.pk]
    assert (
        not Job.objects.filter(pk=done.pk).exists() and not JobEvent.objects.filter(job_id=done.pk).exists()
    )
    assert Job.objects.filter(pk=running.pk).exists()


def test_pause_and_resume_report_the_queues_they_changed():
    QueueFactory(name="a")
    QueueFactory(name="b", paused=True)
    assert queue.pause_queues(["a", "b"]) == ["a"]
    assert queue.resume_queues(["a", "b"]) == ["a", "b"]
    assert not Queue.objects.filter(paused=True).exists()


@pytest.fixture
def listener(transactional_db):
    conn = psycopg.connect(database_url(), autocommit=True)
    conn.execute(f"LISTEN {queue.CHANNEL}")
    yield conn
    conn.close()


def notifications(conn, timeout=2.0):
    return {n.payload for n in conn.notifies(timeout=timeout, stop_after=1)}


@pytest.mark.parametrize(
    "operation, job_kwargs",
    [
        (queue.retry_now, {"status": "failed", "attempts": 1}),
        (queue.run_now, {"run_at": timezone.now() + timedelta(hours=1)}),
        (queue.release_hold, {"enabled": False}),
    ],
)
def test_actions_that_make_jobs_runnable_wake_their_queue(listener, operation, job_kwargs):
    job = JobFactory(queue=QueueFactory(name="woken"), **job_kwargs)
    list(listener.notifies(timeout=0.2))  # the insert trigger's own notification, if any
    assert operation([job]) == [job.pk]
    assert notifications(listener) == {"woken 0"}


def test_resuming_a_queue_wakes_its_workers(listener):
    QueueFactory(name="sleepy", paused=True)
    queue.resume_queues(["sleepy"])
    assert notifications(listener) == {"sleepy 0"}


def test_a_failed_job_retried_now_runs_again_and_succeeds(drain):
    job = tasks.flaky.using(max_attempts=2).enqueue(n=7, failures=2)
    drain()
    job.refresh_from_db()
    assert job.status == "failed" and job.attempts == 2
    queue.retry_now([job])
    drain()
    job.refresh_from_db()
    assert job.status == "successful" and job.attempts == 3 and job.result == {"runs": 3}
    assert kinds(job)[-3:] == ["manual_retry", "started", "succeeded"]
