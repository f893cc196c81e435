"""django_supaqueue.testing, as users' tests use it: the fixtures, run_pending, immediate, assertions."""

from datetime import timedelta

import pytest

from django_supaqueue import queue
from django_supaqueue.exceptions import InvalidPayload
from django_supaqueue.models import Job, JobEvent, Worker
from django_supaqueue.testing import assert_enqueued, assert_not_enqueued, immediate, run_pending
from tests.factories import ProductFactory
from tests.testapp import tasks
from tests.testapp.models import Execution, Product


def kinds(job):
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("kind", flat=True))


def test_run_pending_runs_jobs_the_test_has_not_committed(supaqueue):
    enqueued = tasks.add.enqueue(2, 3)
    (job,) = supaqueue.run_pending()
    assert job.pk == enqueued.pk and job.status == Job.Status.SUCCESSFUL and job.result == 5
    assert kinds(job) == ["started", "succeeded"]
    assert not Worker.objects.exists()


def test_run_pending_serves_only_the_queues_it_is_given(supaqueue):
    mine = tasks.noop.enqueue()
    other = tasks.send_email.enqueue(to="a@example.com")
    assert [j.pk for j in supaqueue.run_pending(["default"])] == [mine.pk]
    other.refresh_from_db()
    assert other.status == Job.Status.PENDING


def test_retries_run_in_the_same_call_when_the_backoff_is_zero(supaqueue):
    tasks.flaky.enqueue(n=1, failures=2)
    (job,) = supaqueue.run_pending()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 3 and job.result == {"runs": 3}
    assert kinds(job) == ["started", "retried", "started", "retried", "started", "succeeded"]


def test_a_job_with_a_future_run_at_stays_pending(supaqueue):
    tasks.noop.enqueue(run_at=timedelta(minutes=5))
    assert supaqueue.run_pending() == []
    supaqueue.assert_enqueued(tasks.noop, count=1)


def test_a_database_error_in_a_task_fails_the_job_and_the_test_goes_on(supaqueue):
    ProductFactory(sku="DUP")
    tasks.add_product.enqueue("DUP")
    jobs = {j.task_name: j for j in supaqueue.run_pending()}
    failed = jobs["tests.testapp.tasks.add_product"]
    assert failed.status == Job.Status.FAILED and "IntegrityError" in failed.last_error
    assert Product.objects.filter(sku="DUP").count() == 1


def test_immediate_mode_runs_each_job_as_it_is_enqueued(supaqueue_immediate):
    job = tasks.add.enqueue(1, 2)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.result == 3


def test_jobs_a_task_enqueues_run_after_it_in_the_same_call(supaqueue_immediate):
    tasks.countdown.enqueue(3)
    assert list(Execution.objects.order_by("id").values_list("n", flat=True)) == [3, 2, 1, 0]
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.SUCCESSFUL}


def test_immediate_mode_keeps_enqueue_validation(supaqueue_immediate):
    with pytest.raises(InvalidPayload):
        tasks.add.enqueue(1, 2, 3)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_the_immediate_context_manager_ends_with_its_block():
    with immediate():
        ran = tasks.noop.enqueue()
    waiting = tasks.noop.enqueue()
    assert queue.enqueue.after_enqueue is None
    assert dict(Job.objects.values_list("pk", "status")) == {
        ran.pk: Job.Status.SUCCESSFUL,
        waiting.pk: Job.Status.PENDING,
    }


@pytest.mark.django_db
def test_run_pending_stops_a_task_that_never_stops_enqueueing():
    tasks.countdown.enqueue(50)
    with pytest.raises(RuntimeError, match="ran 5 jobs and more keep coming"):
        run_pending(max_jobs=5)


@pytest.mark.django_db
def test_assert_enqueued_matches_payload_args_queue_and_count():
    tasks.add.enqueue(1, b=2)
    tasks.add.using(queue="maths").enqueue(1, b=2)
    assert len(assert_enqueued(tasks.add, {"b": 2}, args=[1])) == 2
    assert_enqueued("tests.testapp.tasks.add", {"b": 2}, queue="maths", count=1)
    assert_not_enqueued(tasks.add, {"b": 3})
    assert_not_enqueued(tasks.noop)


@pytest.mark.django_db
def test_a_failed_assertion_lists_the_jobs_of_that_task():
    tasks.add.enqueue(1, b=2)
    with pytest.raises(
        AssertionError, match=r"(?s)Expected a job of tests.testapp.tasks.add with payload.*b': 2"
    ):
        assert_enqueued(tasks.add, {"b": 99})
    with pytest.raises(AssertionError, match=r"Expected 2 job\(s\).*found 1"):
        assert_enqueued(tasks.add, count=2)
    with pytest.raises(AssertionError, match="Expected no job of tests.testapp.tasks.add, found 1"):
        assert_not_enqueued(tasks.add)


@pytest.mark.django_db(transaction=True)
def test_run_worker_runs_committed_jobs_with_the_real_runtime(supaqueue):
    tasks.busy_loop.enqueue(n=1, seconds=30)  # @task(timeout=0.5): only a real worker stops it
    tasks.add.enqueue(2, 2)
    supaqueue.run_worker()
    assert dict(Job.objects.values_list("task_name", "status")) == {
        "tests.testapp.tasks.busy_loop": Job.Status.FAILED,
        "tests.testapp.tasks.add": Job.Status.SUCCESSFUL,
    }
